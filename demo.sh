#!/bin/sh
# The one-command demo, no GPU needed (as root, on Debian 12 with Rust):
#   sudo ./demo.sh
# Builds nvbox, simulates an 8-GPU host, and starts a real busybox container with runc through
# nvbox's runtime shim (jit-cdi mode, the default), showing what appeared inside: the device
# nodes, the driver libraries with their soname links, nvidia-smi, and the loader cache.
set -eu
cd "$(dirname "$0")"

say() { printf '\n== %s\n' "$*"; }
need() { command -v "$1" >/dev/null 2>&1; }

[ "$(id -u)" -eq 0 ] || { echo "demo.sh: run as root (runc, device nodes)" >&2; exit 1; }
missing=""
need runc || missing="$missing runc"
[ -x /bin/busybox ] || missing="$missing busybox-static"
if [ -n "$missing" ]; then
    say "installing:$missing"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi

say "building nvbox"
cargo build --release --quiet
bin=$(pwd)/target/x86_64-unknown-linux-gnu/release/nvbox

work=$(mktemp -d /tmp/nvbox-demo.XXXXXX)
trap 'runc --root "$work/state" delete --force demo >/dev/null 2>&1 || true; rm -rf "$work"' EXIT

say "simulating an 8-GPU host in $work/host"
"$bin" mock "$work/host" >"$work/config.toml"
export NVIDIA_CTK_CONFIG_FILE_PATH="$work/config.toml"
"$bin" nvidia-container-cli info | head -n 12

say "a busybox bundle asking for GPUs 0 and 3"
mkdir -p "$work/bundle/rootfs/bin" "$work/bundle/rootfs/etc" "$work/bin"
cp /bin/busybox "$work/bundle/rootfs/bin/busybox"
chroot "$work/bundle/rootfs" /bin/busybox --install -s /bin
echo 12.0 >"$work/bundle/rootfs/etc/debian_version"
runc spec --bundle "$work/bundle"
sed -i -e 's/"terminal": true/"terminal": false/' \
    -e 's|^\(\t*\)"sh"$|\1"sh", "-c", "ls -l /dev/nvidia*; ls -l /usr/lib/x86_64-linux-gnu/libcuda* /usr/lib/x86_64-linux-gnu/libnvidia-ml*; ls -l /usr/bin/nvidia-smi"|' \
    -e 's/"TERM=xterm"/"TERM=xterm", "NVIDIA_VISIBLE_DEVICES=0,3"/' "$work/bundle/config.json"
sh symlinks.sh --binary "$bin" "$work/bin" >/dev/null

say "runc through nvidia-container-runtime (create edits the spec, start runs it): inside"
# Like the engines, create then start; the container writes to the pipe both hand it.
export PATH="$work/bin:$PATH"
{ nvidia-container-runtime --root "$work/state" create --bundle "$work/bundle" demo &&
    nvidia-container-runtime --root "$work/state" start demo; } | cat

say "the container's /etc/ld.so.cache (read from the host)"
ldconfig -p -C "$work/bundle/rootfs/etc/ld.so.cache" | grep -E 'libcuda|libnvidia-ml'
