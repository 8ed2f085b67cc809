#!/bin/sh
# The one command that runs every test on a fresh Debian 12 machine:
#   tests/run.sh
# It installs what the suite needs when missing (as root), then runs formatting and lint checks,
# every cargo test, and the static-binary checks. Without root, installs are skipped and the
# tests that need them print SKIP (under CI=true they fail instead).
set -eu
cd "$(dirname "$0")/.."

say() { printf '== %s\n' "$*"; }

# runc, docker.io and containerd: the end-to-end tests (tests/e2e_runc.rs, tests/e2e_docker.rs)
# start real containers; they run inside the plain `cargo test` below.
# strace: tests/budgets.rs counts the bytes nvbox reads and the writes it makes per start.
packages="busybox-static dpkg rpm runc containerd docker.io podman uidmap rootlesskit strace"
missing=""
for p in $packages; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    if [ "$(id -u)" -eq 0 ]; then
        say "installing:$missing"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
    else
        say "not root: cannot install$missing"
    fi
fi

# NVIDIA's driver packages, as Debian ships them in non-free, for the real-driver-root test.
# Only downloaded (never installed): the test unpacks them into a scratch root.
debs="$(pwd)/target/nvidia-debs"
driver_pkgs="libcuda1 libnvidia-ml1 nvidia-smi libnvidia-ptxjitcompiler1 libnvidia-cfg1
libcudadebugger1 libnvidia-allocator1 libnvidia-nvvm4 libnvidia-encode1 libnvcuvid1
libnvidia-opticalflow1 libnvidia-eglcore libnvidia-glcore libglx-nvidia0 libegl-nvidia0
libgles-nvidia1 libgles-nvidia2 libnvidia-glvkspirv firmware-nvidia-gsp nvidia-cuda-mps
libnvidia-pkcs11-openssl3 nvidia-opencl-icd libnvidia-fbc1 libnvidia-rtcore libnvoptix1
libnvidia-ngx1 nvidia-vdpau-driver"
if [ ! -f "$debs/.complete" ] && [ "$(id -u)" -eq 0 ]; then
    if ! apt-cache policy libcuda1 2>/dev/null | grep -q 'Candidate: [0-9]'; then
        say "enabling Debian's non-free component (driver packages are downloaded, not installed)"
        cat > /etc/apt/sources.list.d/nvbox-nonfree.sources <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: non-free non-free-firmware
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
        apt-get update -qq
    fi
    say "downloading NVIDIA driver packages into $debs"
    mkdir -p "$debs"
    # shellcheck disable=SC2086
    (cd "$debs" && apt-get download -qq $driver_pkgs) && touch "$debs/.complete"
fi
if [ -f "$debs/.complete" ]; then
    export NVBOX_DRIVER_DEBS="$debs"
fi

say "cargo fmt --check"
cargo fmt --all -- --check
say "cargo clippy -D warnings"
cargo clippy --all-targets --quiet -- -D warnings
# The toolkit image and package tests (tests/image.rs, tests/packages.rs) use the static release
# binary and the two Cargo packagers, so both come before `cargo test`.
say "static binary"
sh tests/static.sh
for tool in cargo-deb cargo-generate-rpm; do
    if ! command -v "$tool" >/dev/null 2>&1 && [ ! -x "${CARGO_HOME:-$HOME/.cargo}/bin/$tool" ]; then
        if [ "$(id -u)" -eq 0 ] || [ "${CI:-}" = true ]; then
            say "installing $tool (crates.io)"
            cargo install --locked --quiet "$tool"
        fi
    fi
done
say "cargo test"
cargo test --quiet
say "fuzz targets, short mode (fuzz/run.sh --short: 10 s per target)"
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ] || [ "${CI:-}" = true ]; then
        cargo +nightly --version >/dev/null 2>&1 || rustup toolchain install nightly --profile minimal
        cargo install cargo-fuzz --locked
    fi
fi
# Skips without nightly or cargo-fuzz, except under CI=true, where it fails.
fuzz/run.sh --short
bin="target/$(rustc -vV | sed -n 's/^host: //p')/release/nvbox"
say "benchmark suite, short mode (benches/suite.sh --short; fails only when a benchmark is broken)"
if [ "$(id -u)" -eq 0 ]; then
    benches/suite.sh --short --json target/bench-short.json "$bin" >target/bench-short.log 2>&1 ||
        { cat target/bench-short.log; exit 1; }
    sed -n '/^row /,$p' target/bench-short.log
elif [ "${CI:-}" = true ]; then
    echo "benches/suite.sh needs root" >&2; exit 1
else
    echo "SKIP benches/suite.sh --short: needs root"
fi
say "README's demo (./demo.sh)"
if [ "$(id -u)" -eq 0 ]; then
    ./demo.sh >target/demo.log 2>&1 || { cat target/demo.log; exit 1; }
    grep -q '195,   3 .* /dev/nvidia3$' target/demo.log &&
        grep -q 'libcuda.so.1 (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libcuda.so.1' target/demo.log ||
        { cat target/demo.log; echo "demo.sh: the container did not get GPU 3 and libcuda" >&2; exit 1; }
    echo "ok   demo: GPU 3, libcuda and its cache entry inside a runc container"
elif [ "${CI:-}" = true ]; then
    echo "demo.sh needs root" >&2; exit 1
else
    echo "SKIP demo.sh: needs root"
fi
