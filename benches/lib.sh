# Shell code shared by the benchmark scripts (sourced, not run): bundles, mock hosts, timing
# statistics and a private dockerd. Callers set -e; every helper fails loudly.

# A pristine OCI bundle in DIR: a busybox rootfs whose process is `true`, no terminal. KIND gpu
# adds the variables a CUDA image sets (all GPUs, compute+utility).
bench_make_bundle() {
    local dir=$1 kind=$2 d
    mkdir -p "$dir/rootfs"
    for d in bin sbin usr/bin usr/sbin etc proc sys dev tmp; do mkdir -p "$dir/rootfs/$d"; done
    cp /bin/busybox "$dir/rootfs/bin/busybox"
    chroot "$dir/rootfs" /bin/busybox --install -s
    echo 12.0 >"$dir/rootfs/etc/debian_version"
    runc spec --bundle "$dir"
    sed -i -e 's/"terminal": true/"terminal": false/' -e 's/^\(\t*\)"sh"$/\1"true"/' "$dir/config.json"
    if [ "$kind" = gpu ]; then
        sed -i 's/"TERM=xterm"/"NVIDIA_VISIBLE_DEVICES=all", "NVIDIA_DRIVER_CAPABILITIES=compute,utility"/' \
            "$dir/config.json"
    fi
}

# A simulated host in DIR (`nvbox mock DIR ARGS…`) with its config.toml at DIR.toml, plus one
# config per runtime mode at DIR.<mode>.toml.
bench_make_host() {
    local bin=$1 dir=$2 mode
    shift 2
    "$bin" mock "$dir" "$@" >"$dir.toml"
    for mode in auto jit-cdi legacy; do
        { cat "$dir.toml"; printf '\n[nvidia-container-runtime]\nmode = "%s"\n' "$mode"; } >"$dir.$mode.toml"
    done
}

# A host whose driver files are NVIDIA's real ones: the .deb files of DEBS (Debian's non-free
# 535 packages, as tests/run.sh downloads them) unpacked into DIR, the ld.so.conf and alternatives
# link their maintainer scripts would add, a cache by glibc's ldconfig, and the kernel side from
# `nvbox mock --no-driver-files` (8 GPUs); then the same mode configs as bench_make_host.
bench_make_deb_host() {
    local bin=$1 dir=$2 debs=$3 deb version mode
    mkdir -p "$dir/etc/ld.so.conf.d" "$dir/usr/bin"
    for deb in "$debs"/*.deb; do dpkg-deb -x "$deb" "$dir"; done
    echo 'include /etc/ld.so.conf.d/*.conf' >"$dir/etc/ld.so.conf"
    printf '/usr/lib/x86_64-linux-gnu\n/usr/lib/x86_64-linux-gnu/nvidia/current\n' \
        >"$dir/etc/ld.so.conf.d/x86_64-linux-gnu.conf"
    ln -sf /usr/lib/nvidia/current/nvidia-smi "$dir/usr/bin/nvidia-smi"
    ldconfig -r "$dir"
    version=$(ls "$dir"/usr/lib/x86_64-linux-gnu/nvidia/current/libcuda.so.*.*.* | sed 's/.*libcuda\.so\.//')
    "$bin" mock "$dir" --no-driver-files --gpus 8 --driver-version "$version" >"$dir.toml"
    for mode in auto jit-cdi legacy; do
        { cat "$dir.toml"; printf '\n[nvidia-container-runtime]\nmode = "%s"\n' "$mode"; } >"$dir.$mode.toml"
    done
}

# "N MEDIAN MIN MAX MEAN" in ms of a file of microsecond samples, one a line.
bench_stats() {
    sort -n "$1" | awk '{ t[NR] = $1; s += $1 } END {
        if (NR == 0) exit 1
        m = (NR % 2) ? t[(NR + 1) / 2] : (t[NR / 2] + t[NR / 2 + 1]) / 2
        printf "%d %.3f %.3f %.3f %.3f\n", NR, m / 1000, t[1] / 1000, t[NR] / 1000, s / NR / 1000 }'
}

# A private dockerd under WORK (vfs storage, no networking, its own data root and socket) whose
# daemon.json registers WORK/bin/nvidia-container-runtime as runtime `nvidia` and whose PATH has
# nvbox's applets (so `--gpus` finds the hook), configured by CONFIG; then imports a busybox
# image `nvbox-bench`. Defines `docker` for the caller; bench_dockerd_stop ends it.
bench_dockerd_start() {
    local work=$1 config=$2 _
    bench_docker_sock=unix://$work/docker.sock
    docker() { /usr/bin/docker -H "$bench_docker_sock" "$@"; }
    printf '{"runtimes": {"nvidia": {"path": "%s/bin/nvidia-container-runtime"}}}\n' "$work" >"$work/daemon.json"
    env -i PATH="$work/bin:/usr/sbin:/usr/bin:/sbin:/bin" NVIDIA_CTK_CONFIG_FILE_PATH="$config" \
        /usr/sbin/dockerd --iptables=false --ip6tables=false --bridge=none --storage-driver=vfs \
        -H "$bench_docker_sock" --config-file "$work/daemon.json" --data-root "$work/data" \
        --exec-root "$work/exec" --pidfile "$work/dockerd.pid" >"$work/dockerd.log" 2>&1 &
    for _ in $(seq 1 100); do docker version >/dev/null 2>&1 && break; sleep 0.2; done
    docker version >/dev/null || { cat "$work/dockerd.log" >&2; return 1; }
    mkdir -p "$work/image/bin" "$work/image/etc"
    cp /bin/busybox "$work/image/bin/busybox"
    chroot "$work/image" /bin/busybox --install -s /bin
    echo 12.0 >"$work/image/etc/debian_version"
    tar -C "$work/image" -c . | docker import - nvbox-bench >/dev/null
}

bench_dockerd_stop() {
    local pid
    [ -f "$1/dockerd.pid" ] || return 0
    pid=$(cat "$1/dockerd.pid")
    kill "$pid" 2>/dev/null || return 0
    # dockerd unmounts and removes its state on the way out; the data root goes only after.
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
}

# The docker arguments of one variant: plain, gpus (docker's prestart hook: nvbox's legacy
# hook) or runtime (nvbox's shim).
bench_docker_args() {
    case $1 in
    plain) bench_args=() ;;
    gpus) bench_args=(--gpus all) ;;
    runtime) bench_args=(--runtime=nvidia -e NVIDIA_VISIBLE_DEVICES=all) ;;
    esac
}
