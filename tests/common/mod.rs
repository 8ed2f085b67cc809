//! Helpers shared by the integration tests: the built binary, temp dirs, simulated hosts.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

pub mod container;
pub mod engines;
pub mod podman_cdi;
pub mod sandbox;
pub fn nvbox() -> &'static str {
    env!("CARGO_BIN_EXE_nvbox")
}

/// A fresh directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "nvbox-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Copies a driver library into an image as `cp --sparse=always` does: the mock's libraries
/// have their real sizes as holes, and `std::fs::copy` would write every byte of them.
pub fn copy_library(from: &Path, to: &Path) {
    let out = std::process::Command::new("cp")
        .arg("--sparse=always")
        .arg(from)
        .arg(to)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cp {} {}: {}",
        from.display(),
        to.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `nvbox mock DIR ARGS…`, which must succeed.
pub fn mock(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(nvbox())
        .arg("mock")
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "nvbox mock failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A command isolated from the machine's own config.toml.
pub fn command(program: &str) -> Command {
    let mut c = Command::new(program);
    c.env(
        "NVIDIA_CTK_CONFIG_FILE_PATH",
        "/nonexistent/nvbox-test/config.toml",
    );
    c.env_remove("XDG_CONFIG_HOME");
    c.env_remove("CUDA_MPS_PIPE_DIRECTORY");
    c
}

/// `nvbox nvidia-container-cli --root H --proc-root H --sys-root H ARGS…` on a mock host.
pub fn cli(host: &Path, args: &[&str]) -> Output {
    let h = host.to_str().unwrap();
    command(nvbox())
        .args([
            "nvidia-container-cli",
            "--root",
            h,
            "--proc-root",
            h,
            "--sys-root",
            h,
        ])
        .args(args)
        .output()
        .unwrap()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn is_root() -> bool {
    nix_is_root()
}

fn nix_is_root() -> bool {
    // SAFETY-free: reading our own euid through procfs keeps tests free of unsafe.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// Root, or else fail in CI (skip elsewhere) saying `why` root is needed.
pub fn require_root(why: &str) -> bool {
    if !is_root() {
        skip_or_fail(why);
        return false;
    }
    true
}

/// What a probe printed after `key` on its line, trimmed; a panic naming `key` if none.
pub fn printed<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(key).map(str::trim))
        .unwrap_or_else(|| panic!("{key} not printed:\n{out}"))
}

/// `nvbox doctor --config CONFIG`: the line of the check named `check`, which must be `ok`,
/// in a report that asks for no `modprobe nvidia`.
pub fn doctor_ok_line(config: &Path, check: &str) -> String {
    let out = command(nvbox())
        .args(["doctor", "--config"])
        .arg(config)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = report
        .lines()
        .find(|l| l.contains(check))
        .unwrap_or_else(|| panic!("{report}"));
    assert!(line.starts_with("ok "), "{line}");
    assert!(!report.contains("modprobe nvidia"), "{report}");
    line.to_owned()
}

/// A prerequisite is missing: fail in CI, skip (loudly) elsewhere.
pub fn skip_or_fail(reason: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("prerequisite missing in CI: {reason}");
    }
    eprintln!("SKIP {reason}");
}
