//! A driver root built from NVIDIA's real driver packages (Debian's non-free 535 series: real
//! libraries with their own sonames and ELF notes, laid out by dpkg, cached by glibc's ldconfig),
//! with only the kernel side (procfs, sysfs, /dev) simulated. `list` must print what upstream's
//! rules select there. The test command downloads the packages and sets NVBOX_DRIVER_DEBS.

mod common;

use common::*;
use std::os::unix::fs::symlink;
use std::process::Command;

const VERSION: &str = "535.261.03";

/// Upstream's selection on this tree: table order; the exact-version rule; Debian's split
/// between /usr/lib/x86_64-linux-gnu and its nvidia/current alternatives directory; nvidia-smi
/// through the alternatives link; the MPS server in /usr/sbin.
const EXPECTED: &str = "/dev/nvidiactl
/dev/nvidia-uvm
/dev/nvidia-uvm-tools
/dev/nvidia-modeset
/dev/nvidia0
/usr/lib/nvidia/current/nvidia-smi
/usr/bin/nvidia-cuda-mps-control
/usr/sbin/nvidia-cuda-mps-server
/usr/lib/x86_64-linux-gnu/nvidia/current/libnvidia-ml.so.535.261.03
/usr/lib/x86_64-linux-gnu/nvidia/current/libnvidia-cfg.so.535.261.03
/usr/lib/x86_64-linux-gnu/nvidia/current/libcuda.so.535.261.03
/usr/lib/x86_64-linux-gnu/nvidia/current/libcudadebugger.so.535.261.03
/usr/lib/x86_64-linux-gnu/nvidia/current/libnvidia-opencl.so.535.261.03
/usr/lib/x86_64-linux-gnu/nvidia/current/libnvidia-ptxjitcompiler.so.535.261.03
/usr/lib/x86_64-linux-gnu/nvidia/current/libnvidia-allocator.so.535.261.03
/usr/lib/x86_64-linux-gnu/libnvidia-pkcs11-openssl3.so.535.261.03
/usr/lib/x86_64-linux-gnu/nvidia/current/libnvidia-nvvm.so.535.261.03
/usr/lib/x86_64-linux-gnu/nvidia/current/libnvidia-ngx.so.535.261.03
/usr/lib/x86_64-linux-gnu/nvidia/current/libvdpau_nvidia.so.535.261.03
/usr/lib/x86_64-linux-gnu/nvidia/current/libnvidia-encode.so.535.261.03
/usr/lib/x86_64-linux-gnu/nvidia/current/libnvidia-opticalflow.so.535.261.03
/usr/lib/x86_64-linux-gnu/nvidia/current/libnvcuvid.so.535.261.03
/usr/lib/x86_64-linux-gnu/libnvidia-eglcore.so.535.261.03
/usr/lib/x86_64-linux-gnu/libnvidia-glcore.so.535.261.03
/usr/lib/x86_64-linux-gnu/libnvidia-tls.so.535.261.03
/usr/lib/x86_64-linux-gnu/libnvidia-glsi.so.535.261.03
/usr/lib/x86_64-linux-gnu/nvidia/current/libnvidia-fbc.so.535.261.03
/usr/lib/x86_64-linux-gnu/libnvidia-rtcore.so.535.261.03
/usr/lib/x86_64-linux-gnu/nvidia/current/libnvoptix.so.535.261.03
/usr/lib/x86_64-linux-gnu/nvidia/current/libGLX_nvidia.so.535.261.03
/usr/lib/x86_64-linux-gnu/nvidia/current/libEGL_nvidia.so.535.261.03
/usr/lib/x86_64-linux-gnu/nvidia/current/libGLESv2_nvidia.so.535.261.03
/usr/lib/x86_64-linux-gnu/nvidia/current/libGLESv1_CM_nvidia.so.535.261.03
/usr/lib/x86_64-linux-gnu/libnvidia-glvkspirv.so.535.261.03
/lib/firmware/nvidia/535.261.03/gsp_ga10x.bin
/lib/firmware/nvidia/535.261.03/gsp_tu10x.bin
";

#[test]
fn list_on_a_root_built_from_real_driver_packages() {
    let Some(debs) = std::env::var_os("NVBOX_DRIVER_DEBS") else {
        return skip_or_fail("NVBOX_DRIVER_DEBS not set (tests/run.sh downloads the packages)");
    };
    let mut packages: Vec<_> = std::fs::read_dir(&debs)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    packages.sort();
    if packages.is_empty() {
        return skip_or_fail("no .deb files in NVBOX_DRIVER_DEBS");
    }
    let root = TempDir::new("realdriver");
    let r = root.path();
    for deb in &packages {
        let o = Command::new("dpkg-deb")
            .arg("-x")
            .arg(deb)
            .arg(r)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "dpkg-deb -x {}: {}",
            deb.display(),
            stderr(&o)
        );
    }
    // What the packages' maintainer scripts and update-alternatives would add.
    std::fs::create_dir_all(r.join("etc/ld.so.conf.d")).unwrap();
    std::fs::write(
        r.join("etc/ld.so.conf"),
        "include /etc/ld.so.conf.d/*.conf\n",
    )
    .unwrap();
    std::fs::write(
        r.join("etc/ld.so.conf.d/x86_64-linux-gnu.conf"),
        "/usr/lib/x86_64-linux-gnu\n/usr/lib/x86_64-linux-gnu/nvidia/current\n",
    )
    .unwrap();
    symlink(
        "/usr/lib/nvidia/current/nvidia-smi",
        r.join("usr/bin/nvidia-smi"),
    )
    .unwrap();
    let o = Command::new("ldconfig").arg("-r").arg(r).output().unwrap();
    assert!(o.status.success(), "ldconfig -r: {}", stderr(&o));
    mock(
        r,
        &[
            "--no-driver-files",
            "--gpus",
            "1",
            "--driver-version",
            VERSION,
        ],
    );

    let o = command(nvbox())
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .args(["nvidia-container-cli", "--root"])
        .arg(r)
        .arg("--proc-root")
        .arg(r)
        .arg("--sys-root")
        .arg(r)
        .arg("list")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), EXPECTED);

    // The same tree as another driver version: nothing of 535.261.03 qualifies.
    let nv = r.join("proc/driver/nvidia/version");
    let text = std::fs::read_to_string(&nv)
        .unwrap()
        .replace(VERSION, "535.261.04");
    std::fs::write(&nv, text).unwrap();
    let o = command(nvbox())
        .args(["nvidia-container-cli", "--root"])
        .arg(r)
        .arg("--proc-root")
        .arg(r)
        .args(["list", "--libraries"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "");
}
