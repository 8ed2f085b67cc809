#!/bin/bash
# Container start latency with the real runc: plain runc against runc + nvbox's prestart hook.
#
#   sudo benches/runc.sh [NVBOX_BINARY] [ITERATIONS]
#
# NVBOX_BINARY defaults to target/x86_64-unknown-linux-gnu/release/nvbox (built with `cargo build --release` when
# missing); ITERATIONS defaults to 50. Needs root, runc and busybox-static (tests/run.sh
# installs them). Each iteration times `runc create` + `runc start` + waiting for the
# container's `true` to exit + `runc delete`, once plain and once with the hook
# (NVIDIA_VISIBLE_DEVICES=all, NVIDIA_DRIVER_CAPABILITIES=compute,utility) on a simulated
# 8-GPU host. The two are interleaved, alternating which goes first, so drift on the machine
# hits both alike. Prints mean and median in ms for each and the hook/plain ratio of medians.
# Goal: ratio <= 1.05.
set -eu
cd "$(dirname "$0")/.."
. benches/lib.sh

bin=${1:-target/x86_64-unknown-linux-gnu/release/nvbox}
iterations=${2:-50}
warmup=3
if [ $# -lt 1 ] && [ ! -x "$bin" ]; then
    cargo build --release --quiet
fi
[ -x "$bin" ] || { echo "runc.sh: $bin is not executable" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || { echo "runc.sh: needs root (runc, device nodes)" >&2; exit 1; }
command -v runc >/dev/null || { echo "runc.sh: runc is not installed" >&2; exit 1; }
[ -x /bin/busybox ] || { echo "runc.sh: /bin/busybox (busybox-static) is missing" >&2; exit 1; }
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")

work=$(mktemp -d /tmp/nvbox-bench-runc.XXXXXX)
state=$work/runc-state
cleanup() {
    for id in plain noop hook; do runc --root "$state" delete --force "bench-$$-$id" >/dev/null 2>&1 || true; done
    rm -rf "$work"
}
trap cleanup EXIT

"$bin" mock "$work/host" >"$work/host.toml"
sh symlinks.sh --binary "$bin" "$work/bin" >/dev/null
[ -x "$work/bin/nvidia-container-runtime-hook" ] || {
    echo "runc.sh: $bin has no nvidia-container-runtime-hook applet" >&2
    exit 1
}

# A busybox bundle whose process is `true`; the hook variant adds the prestart hook and the
# variables a CUDA image sets.
make_bundle() {
    dir=$work/$1
    if [ "$1" = plain ]; then
        bench_make_bundle "$dir" cpu
        return
    fi
    bench_make_bundle "$dir" gpu
    path=$work/bin/nvidia-container-runtime-hook
    [ "$1" = noop ] && path=/bin/true
    hook="\"hooks\": {\"prestart\": [{\"path\": \"$path\",\
 \"args\": [\"nvidia-container-runtime-hook\", \"prestart\"],\
 \"env\": [\"NVIDIA_CTK_CONFIG_FILE_PATH=$work/host.toml\", \"PATH=/usr/sbin:/usr/bin:/sbin:/bin\"]}]},"
    sed -i -e "s|^\t\"process\": {|\t$hook\n\t\"process\": {|" "$dir/config.json"
}
make_bundle plain
make_bundle noop
make_bundle hook

# One container start, in microseconds. runc hands the pipe to the container, so `cat` sees
# end-of-file only once create, start and the container's process have all closed it.
start_once() {
    id=bench-$$-$1
    t0=${EPOCHREALTIME/./}
    { runc --root "$state" create --bundle "$work/$1" "$id" && runc --root "$state" start "$id"; } | cat >/dev/null
    # The process may still be exiting when its pipe closes: --force waits for it.
    runc --root "$state" delete --force "$id"
    t1=${EPOCHREALTIME/./}
    echo $((t1 - t0)) >>"$work/$1.times"
}

for i in $(seq 1 $((warmup + iterations))); do
    case $((i % 3)) in
    0) order="plain noop hook" ;;
    1) order="hook plain noop" ;;
    *) order="noop hook plain" ;;
    esac
    for v in $order; do start_once "$v"; done
    if [ "$i" -eq "$warmup" ]; then rm -f "$work"/*.times; fi
done

# mean and median in ms of one variant's times
stats() { read -r _ med _ _ mean <<<"$(bench_stats "$work/$1.times")" && echo "$mean $med"; }
read -r plain_mean plain_median <<<"$(stats plain)"
read -r noop_mean noop_median <<<"$(stats noop)"
read -r hook_mean hook_median <<<"$(stats hook)"
printf 'runc create+start+delete, %d iterations, 8 simulated GPUs\n' "$iterations"
printf '  plain runc             mean %8s ms   median %8s ms\n' "$plain_mean" "$plain_median"
printf '  runc + /bin/true hook  mean %8s ms   median %8s ms\n' "$noop_mean" "$noop_median"
printf '  runc + nvbox hook      mean %8s ms   median %8s ms\n' "$hook_mean" "$hook_median"
awk -v h="$hook_median" -v n="$noop_median" -v p="$plain_median" 'BEGIN {
    printf "  ratio nvbox hook/plain (median) %.3f  (goal <= 1.05)\n", h / p
    printf "  ratio /bin/true hook/plain (median) %.3f  (what runc charges for any hook)\n", n / p
    printf "  nvbox beyond a no-op hook: %.3f ms (%.1f%% of plain)\n", h - n, (h - n) / p * 100 }'
