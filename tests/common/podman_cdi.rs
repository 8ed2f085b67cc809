//! Podman reading CDI specs from a test's own directory, for specs `nvidia-ctk cdi generate`
//! writes.

use super::TempDir;
use super::container::{make_rootfs, text};
use super::engines::probed_env;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output, Stdio};

pub const PODMAN: &str = "/usr/bin/podman";

/// Podman with private storage, reading CDI specs from `spec_dir`. Podman 4.3 has neither
/// `--cdi-spec-dir` nor `cdi_spec_dirs`, so the spec directory is bind-mounted over
/// `/var/run/cdi` (and an empty tmpfs over `/etc/cdi`, if the host has one) in a private mount
/// namespace: the host's CDI directories never see the test spec.
pub struct CdiPodman {
    dir: TempDir,
}

impl CdiPodman {
    pub fn new() -> CdiPodman {
        CdiPodman {
            dir: TempDir::new("podman"),
        }
    }

    fn base(&self) -> String {
        let d = self.dir.path().display();
        format!(
            "{PODMAN} --cgroup-manager=cgroupfs --storage-driver=vfs --root {d}/root \
             --runroot {d}/runroot --events-backend=file"
        )
    }

    pub fn import(&self, rootfs: &Path, name: &str) {
        let script = format!(
            "tar -C {} -c . | {} import - {name}",
            rootfs.display(),
            self.base()
        );
        let out = Command::new("sh").arg("-c").arg(script).output().unwrap();
        assert!(out.status.success(), "podman import: {}", text(&out.stderr));
    }

    /// `spec` alone in a CDI directory, a Debian-like busybox image `nvbox-TAG`, and for each
    /// of `devices` a container running `probe`, then counting libcuda.so.1 in its loader cache:
    /// `check` sees the output of each, which must also say NVIDIA_VISIBLE_DEVICES=void (as
    /// `NVENV=`) and a cache that names libcuda.so.1.
    pub fn run_spec(
        &self,
        spec: &Value,
        tag: &str,
        devices: &[&str],
        probe: &str,
        check: impl Fn(&str),
    ) {
        let spec_dir = TempDir::new(&format!("{tag}-cdi"));
        std::fs::write(
            spec_dir.path().join("nvidia.json"),
            serde_json::to_vec(spec).unwrap(),
        )
        .unwrap();
        let rootfs = TempDir::new(&format!("{tag}-rootfs"));
        make_rootfs(rootfs.path(), true);
        let image = format!("nvbox-{tag}");
        self.import(rootfs.path(), &image);
        let script = format!("{probe}; grep -c libcuda.so.1 /etc/ld.so.cache");
        for device in devices {
            let out = self.run(spec_dir.path(), device, &image, &script);
            assert!(
                out.status.success(),
                "podman run {device}: {}",
                text(&out.stderr)
            );
            let stdout = text(&out.stdout);
            check(&stdout);
            assert_eq!(probed_env(&stdout, "NVENV"), "void");
            assert_ne!(
                stdout.lines().last(),
                Some("0"),
                "no libcuda.so.1 in the cache: {stdout}"
            );
        }
    }

    /// `podman run --device DEVICE IMAGE sh -c SCRIPT` in the private namespace.
    pub fn run(&self, spec_dir: &Path, device: &str, image: &str, script: &str) -> Output {
        self.run_with(spec_dir, &["--device", device], image, script)
    }

    /// `podman run ARGS… IMAGE sh -c SCRIPT` in the private namespace (ARGS are plain words).
    pub fn run_with(&self, spec_dir: &Path, args: &[&str], image: &str, script: &str) -> Output {
        // One at a time: removing the host's empty /run/cdi detaches another run's bind mount.
        static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
        let mut hide_etc = String::new();
        if Path::new("/etc/cdi").is_dir() {
            hide_etc = "mount -t tmpfs none /etc/cdi && ".to_owned();
        }
        let inner = format!(
            "mkdir -p /run/cdi && mount --bind {} /run/cdi && {hide_etc}{} run --rm \
             --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 --network none \
             {} {image} sh -c \"$0\"",
            spec_dir.display(),
            self.base(),
            args.join(" ")
        );
        let out = Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", &inner, script])
            .env("NVBOX_LEAK_MARKER", "host-only")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        // The empty mount point stays on the host: removing it would detach the bind mount of
        // a run going on at the same time (rmdir of a mount point in another namespace detaches
        // it there), and that run's podman would find no spec.
        out
    }
}
