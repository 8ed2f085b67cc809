#!/bin/bash
# Container start latency through the runtime shim, against plain runc, in one run.
#
#   sudo benches/runtime.sh [NVBOX_BINARY] [ITERATIONS]
#
# NVBOX_BINARY defaults to target/x86_64-unknown-linux-gnu/release/nvbox (built with `cargo build --release` when
# missing); ITERATIONS defaults to 30. Needs root, runc and busybox-static (tests/run.sh
# installs them). Each iteration times create + start + waiting for the container's `true` to
# exit + delete, for five variants on a simulated 8-GPU host:
#   cpu-runc     plain runc, a CPU container
#   cpu-shim     nvidia-container-runtime (mode auto), the same CPU container
#   gpu-runc     plain runc, NVIDIA_VISIBLE_DEVICES=all but nothing to act on it (the floor)
#   gpu-jit      the shim in jit-cdi mode, NVIDIA_VISIBLE_DEVICES=all (runc makes the nodes,
#                mounts and cgroup rules; createContainer hooks make links and ld.so.cache)
#   gpu-legacy   the shim in legacy mode, NVIDIA_VISIBLE_DEVICES=all (our prestart hook)
# Every create gets a fresh copy of its bundle (the shim rewrites config.json, the hooks write
# into the rootfs); copying is outside the timed part. The variants are interleaved, rotating
# which goes first, so drift on the machine hits all alike. Prints mean and median in ms and
# the ratios of medians. Goal: cpu-shim/cpu-runc <= 1.05.
set -eu -o pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh

bin=${1:-target/x86_64-unknown-linux-gnu/release/nvbox}
iterations=${2:-30}
warmup=3
if [ $# -lt 1 ] && [ ! -x "$bin" ]; then
    cargo build --release --quiet
fi
[ -x "$bin" ] || { echo "runtime.sh: $bin is not executable" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || { echo "runtime.sh: needs root (runc, device nodes)" >&2; exit 1; }
runc=$(command -v runc) || { echo "runtime.sh: runc is not installed" >&2; exit 1; }
[ -x /bin/busybox ] || { echo "runtime.sh: /bin/busybox (busybox-static) is missing" >&2; exit 1; }
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")

work=$(mktemp -d /tmp/nvbox-bench-runtime.XXXXXX)
state=$work/runc-state
variants="cpu-runc cpu-shim gpu-runc gpu-jit gpu-legacy"
cleanup() {
    for v in $variants; do "$runc" --root "$state" delete --force "bench-$$-$v" >/dev/null 2>&1 || true; done
    rm -rf "$work"
}
trap cleanup EXIT

bench_make_host "$bin" "$work/host"
sh symlinks.sh --binary "$bin" "$work/bin" >/dev/null
shim=$work/bin/nvidia-container-runtime
[ -x "$shim" ] || { echo "runtime.sh: $bin has no nvidia-container-runtime applet" >&2; exit 1; }

# Pristine bundles: a busybox rootfs whose process is `true`, with or without the GPU request.
bench_make_bundle "$work/template-cpu" cpu
bench_make_bundle "$work/template-gpu" gpu

# One container start, in microseconds. runc hands the pipe to the container, so `cat` sees
# end-of-file only once create, start and the container's process have all closed it.
start_once() {
    v=$1
    id=bench-$$-$v
    rm -rf "$work/bundle"
    cp -a "$work/template-${v%%-*}" "$work/bundle"
    case $v in
    *-runc) create=("$runc") ;;
    cpu-shim) create=(env "NVIDIA_CTK_CONFIG_FILE_PATH=$work/host.auto.toml" "$shim") ;;
    gpu-jit) create=(env "NVIDIA_CTK_CONFIG_FILE_PATH=$work/host.jit-cdi.toml" "$shim") ;;
    gpu-legacy) create=(env "NVIDIA_CTK_CONFIG_FILE_PATH=$work/host.legacy.toml" "$shim") ;;
    esac
    t0=${EPOCHREALTIME/./}
    {
        PATH=$work/bin:$PATH "${create[@]}" --root "$state" create --bundle "$work/bundle" "$id" &&
            "$runc" --root "$state" start "$id"
    } | cat >/dev/null
    # The process may still be exiting when its pipe closes: --force waits for it.
    "$runc" --root "$state" delete --force "$id"
    t1=${EPOCHREALTIME/./}
    echo $((t1 - t0)) >>"$work/$v.times"
}

set -- $variants
n=$#
for i in $(seq 1 $((warmup + iterations))); do
    # Rotate the order by one each iteration.
    k=$((i % n))
    order="${*:k+1} ${*:1:k}"
    for v in $order; do start_once "$v"; done
    if [ "$i" -eq "$warmup" ]; then rm -f "$work"/*.times; fi
done

declare -A median
printf 'create+start+delete, %d iterations, 8 simulated GPUs\n' "$iterations"
for v in $variants; do
    read -r _ med _ _ mean <<<"$(bench_stats "$work/$v.times")"
    median[$v]=$med
    printf '  %-11s mean %8s ms   median %8s ms\n' "$v" "$mean" "$med"
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }
printf '  ratio cpu-shim/cpu-runc (median)     %s  (goal <= 1.05)\n' "$(ratio "${median[cpu-shim]}" "${median[cpu-runc]}")"
printf '  ratio gpu-jit/gpu-runc (median)      %s\n' "$(ratio "${median[gpu-jit]}" "${median[gpu-runc]}")"
printf '  ratio gpu-legacy/gpu-runc (median)   %s\n' "$(ratio "${median[gpu-legacy]}" "${median[gpu-runc]}")"
printf '  ratio gpu-jit/gpu-legacy (median)    %s\n' "$(ratio "${median[gpu-jit]}" "${median[gpu-legacy]}")"
