#!/usr/bin/env bash
# The gateway's main job on its embedded defaults, on one machine with no network: start a registry on
# loopback, put an image in it with umoci and skopeo, pull it with stowage into a reproducible
# oci-archive, and check the archive with sha256sum and skopeo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null

work=$(mktemp -d)
out_dir="${STOWAGE_DEMO_DIR:-$PWD/demo}"
mkdir -p "$out_dir"
reg_pid=""
cleanup() {
  [ -n "$reg_pid" ] && kill "$reg_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

port=$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
cat >"$work/registry.yml" <<YML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $work/registry}}
http: {addr: 127.0.0.1:$port, secret: demo-only}
YML
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
reg_pid=$!
for _ in $(seq 100); do
  curl -fsS "http://127.0.0.1:$port/v2/" >/dev/null 2>&1 && break
  sleep 0.1
done

# A small image built by umoci (not by stowage), pushed by skopeo.
mkdir -p "$work/rootfs/etc"
echo "hello from stowage" >"$work/rootfs/etc/motd"
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$work/rootfs" -cf "$work/layer.tar" .
umoci init --layout "$work/layout"
umoci new --image "$work/layout:hello"
umoci raw add-layer --image "$work/layout:hello" "$work/layer.tar"
umoci config --image "$work/layout:hello" --config.cmd /bin/cat --config.cmd /etc/motd
skopeo copy --quiet --dest-tls-verify=false "oci:$work/layout:hello" "docker://127.0.0.1:$port/demo/hello:1.0"

# stowage reads registries.conf like podman does; this one marks the loopback registry as plain HTTP.
printf '[[registry]]\nlocation = "127.0.0.1:%s"\ninsecure = true\n' "$port" >"$work/registries.conf"

echo "== stowage tags"
node bin/stowage.js tags --registries-conf "$work/registries.conf" "127.0.0.1:$port/demo/hello"
echo "== stowage pull"
node bin/stowage.js pull --registries-conf "$work/registries.conf" "127.0.0.1:$port/demo/hello:1.0" -o "$out_dir/hello.tar"
echo "== sha256sum -c"
(cd "$out_dir" && sha256sum -c hello.tar.sha256)
echo "== skopeo reads the archive"
skopeo inspect "oci-archive:$out_dir/hello.tar" | head -5
echo "demo: archive at $out_dir/hello.tar"
