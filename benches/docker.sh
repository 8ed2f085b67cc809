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
. benches/lib.sh

bin=${1:-target/x86_64-unknown-linux-gnu/release/nvbox}
iterations=${2:-20}
[ -x "$bin" ] || cargo build --release --quiet
[ "$(id -u)" -eq 0 ] || { echo "docker.sh: needs root" >&2; exit 1; }
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")

work=$(mktemp -d /tmp/nvbox-bench-docker.XXXXXX)
cleanup() {
    bench_dockerd_stop "$work"
    rm -rf "$work" 2>/dev/null || true
}
trap cleanup EXIT

"$bin" mock "$work/host" >"$work/config.toml"
sh symlinks.sh --binary "$bin" "$work/bin" >/dev/null
bench_dockerd_start "$work" "$work/config.toml"

run_once() {
    bench_docker_args "$1"
    t0=${EPOCHREALTIME/./}
    docker run --rm --network none "${bench_args[@]}" nvbox-bench true
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
