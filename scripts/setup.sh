#!/usr/bin/env bash
# Sets up a fresh Debian machine for stowage: the peers the tests and the demo start (from Debian's
# packages, Chromium for the web console's browser tests among them), the npm dependencies, and the build. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for cmd in docker-registry skopeo umoci podman htpasswd openssl curl python3 keyctl dbus-run-session gnome-keyring-daemon ss \
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
    docker-registry skopeo umoci podman apache2-utils openssl ca-certificates curl python3 \
    keyutils dbus-daemon gnome-keyring iproute2 \
    ceph-mon ceph-osd radosgw ceph-common postgresql chromium fonts-dejavu-core systemd >/dev/null
fi

echo "setup: npm ci"
npm ci --no-audit --no-fund --loglevel=error
echo "setup: build"
npm run --silent build
