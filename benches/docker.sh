#!/bin/bash
# `docker run` latency with nvbox, against plain `docker run`, in one run:
#
#   sudo benches/docker.sh [NVBOX_BINARY] [ITERATIONS]
#
# Starts a private dockerd (vfs storage, no networking, its own data root and socket) whose
# daemon.json registers nvbox's shim as runtime `nvidia` and whose PATH has nvbox's applets (so
# `--gpus` finds the hook), on a simulated 8-GPU host, then times `docker run --rm IMG true`:
#   plain     no GPU
#   gpus      --gpus all                 (docker's prestart hook: nvbox's legacy hook)
#   runtime   --runtime=nvidia -e NVIDIA_VISIBLE_DEVICES=all   (the shim, jit-cdi)
# interleaved, rotating which goes first. Prints medians and the ratios (goals: <= 1.03).
set -eu
cd "$(dirname "$0")/.."

bin=${1:-target/release/nvbox}
iterations=${2:-20}
[ -x "$bin" ] || cargo build --release --quiet
[ "$(id -u)" -eq 0 ] || { echo "docker.sh: needs root" >&2; exit 1; }
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")

work=$(mktemp -d /tmp/nvbox-bench-docker.XXXXXX)
sock=unix://$work/docker.sock
docker() { /usr/bin/docker -H "$sock" "$@"; }
cleanup() {
    [ -f "$work/pid" ] && kill "$(cat "$work/pid")" 2>/dev/null && sleep 2
    rm -rf "$work" 2>/dev/null || true
}
trap cleanup EXIT

"$bin" mock "$work/host" >"$work/config.toml"
sh symlinks.sh --binary "$bin" "$work/bin" >/dev/null
printf '{"runtimes": {"nvidia": {"path": "%s/bin/nvidia-container-runtime"}}}\n' "$work" >"$work/daemon.json"
env -i PATH="$work/bin:/usr/sbin:/usr/bin:/sbin:/bin" NVIDIA_CTK_CONFIG_FILE_PATH="$work/config.toml" \
    /usr/sbin/dockerd --iptables=false --ip6tables=false --bridge=none --storage-driver=vfs \
    -H "$sock" --config-file "$work/daemon.json" --data-root "$work/data" --exec-root "$work/exec" \
    --pidfile "$work/pid" >"$work/dockerd.log" 2>&1 &
for _ in $(seq 1 100); do docker version >/dev/null 2>&1 && break; sleep 0.2; done

mkdir -p "$work/rootfs/bin" "$work/rootfs/etc"
cp /bin/busybox "$work/rootfs/bin/busybox"
chroot "$work/rootfs" /bin/busybox --install -s /bin
echo 12.0 >"$work/rootfs/etc/debian_version"
tar -C "$work/rootfs" -c . | docker import - nvbox-bench >/dev/null

run_once() {
    case $1 in
    plain) set -- ;;
    gpus) set -- --gpus all ;;
    runtime) set -- --runtime=nvidia -e NVIDIA_VISIBLE_DEVICES=all ;;
    esac
    t0=${EPOCHREALTIME/./}
    docker run --rm --network none "$@" nvbox-bench true
    t1=${EPOCHREALTIME/./}
    echo $((t1 - t0))
}
for v in plain gpus runtime; do run_once "$v" >/dev/null; done
for i in $(seq 1 "$iterations"); do
    case $((i % 3)) in
    0) order="plain gpus runtime" ;;
    1) order="gpus runtime plain" ;;
    *) order="runtime plain gpus" ;;
    esac
    for v in $order; do run_once "$v" >>"$work/$v.times"; done
done
median() { sort -n "$work/$1.times" | awk '{ t[NR] = $1 } END { m = (NR % 2) ? t[(NR + 1) / 2] : (t[NR / 2] + t[NR / 2 + 1]) / 2; printf "%.1f", m / 1000 }'; }
p=$(median plain)
g=$(median gpus)
r=$(median runtime)
printf 'docker run --rm, %d iterations, 8 simulated GPUs (medians)\n' "$iterations"
printf '  plain                 %8s ms\n' "$p"
printf '  --gpus all            %8s ms\n' "$g"
printf '  --runtime=nvidia      %8s ms\n' "$r"
awk -v p="$p" -v g="$g" -v r="$r" 'BEGIN {
    printf "  ratio --gpus all / plain        %.3f  (goal <= 1.03; upstream 1.26)\n", g / p
    printf "  ratio --runtime=nvidia / plain  %.3f  (goal <= 1.03; upstream 1.30)\n", r / p }'
