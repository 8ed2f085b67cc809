//! Malformed inputs through every entry point that reads them: each is refused with ONE line on
//! stderr that starts with the applet's name, exit status 1, no panic, and nothing half-done (the
//! bundle, the rootfs, the config files are byte-identical afterwards; no mount appears). Where
//! upstream documents the input as valid or ignored, the case asserts that documented result
//! instead, citing the reference. The cases are tables in the modules below.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::container::snapshot;
use common::*;

#[path = "malformed/cdi.rs"]
mod cdi;
#[path = "malformed/config_toml.rs"]
mod config_toml;
#[path = "malformed/env.rs"]
mod env;
#[path = "malformed/host_files.rs"]
mod host_files;
#[path = "malformed/image_cache.rs"]
mod image_cache;
#[path = "malformed/state.rs"]
mod state;

/// A pid no process can have (above the kernel's largest pid_max): a case that got past its
/// validation by mistake fails on /proc/<pid> instead of touching this process's namespace.
const NO_PID: i32 = 999_999_999;

/// The applet failed the way the one-line rule says: exit 1, one line `<applet>: …` that
/// contains `want`, no panic.
#[track_caller]
fn assert_refused(applet: &str, out: &Output, want: &str, case: &str) {
    let err = stderr(out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{case}: exit status; stderr {err}"
    );
    assert_one_line(applet, &err, case);
    assert!(err.contains(want), "{case}: want {want:?} in {err}");
}

#[track_caller]
fn assert_one_line(applet: &str, err: &str, case: &str) {
    assert_no_panic(err, case);
    let prefix = format!("{applet}: ");
    assert!(err.starts_with(&prefix), "{case}: not from {applet}: {err}");
    assert!(err.ends_with('\n'), "{case}: unterminated: {err}");
    // Errors cut what they quote: a hostile 1 MB value is not a 1 MB log line.
    assert!(err.len() <= 4200, "{case}: a {}-byte line", err.len());
    assert_eq!(
        err.matches('\n').count(),
        1,
        "{case}: more than one line: {err}"
    );
}

#[track_caller]
fn assert_no_panic(err: &str, case: &str) {
    for bad in ["panicked", "stack backtrace", "RUST_BACKTRACE"] {
        assert!(!err.contains(bad), "{case}: {bad}: {err}");
    }
}

/// Every file under a directory with its bytes (links as their target): a tree is compared
/// before and after with this and with `snapshot`.
fn contents(root: &Path) -> BTreeMap<String, Vec<u8>> {
    snapshot(root)
        .into_iter()
        .filter(|(rel, _)| {
            // Device nodes of the mock host are not read (no driver behind them).
            std::fs::symlink_metadata(root.join(rel)).is_ok_and(|m| m.is_file())
        })
        .map(|(rel, _)| {
            let bytes = std::fs::read(root.join(&rel)).unwrap();
            (rel, bytes)
        })
        .collect()
}

/// What a tree looks like: its shape and its bytes.
#[derive(Debug, PartialEq)]
struct Tree {
    shape: BTreeMap<String, String>,
    bytes: BTreeMap<String, Vec<u8>>,
}

fn tree(root: &Path) -> Tree {
    Tree {
        shape: snapshot(root),
        bytes: contents(root),
    }
}

/// Mount points of this process's namespace below `dir` (the malformed inputs must add none).
fn mounts_under(dir: &Path) -> Vec<String> {
    let at = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&at))
        .map(str::to_owned)
        .collect()
}

/// A mock host (2 GPUs) and its config.toml, with room beside it for bundles and outputs.
struct Host {
    dir: TempDir,
    config: PathBuf,
}

impl Host {
    fn new(tag: &str) -> Host {
        let dir = TempDir::new(tag);
        let text = mock(&dir.path().join("host"), &["--gpus", "2"]);
        let config = dir.path().join("config.toml");
        std::fs::write(&config, text).unwrap();
        Host { dir, config }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("host")
    }

    fn file(&self, host_path: &str) -> PathBuf {
        self.root().join(host_path.trim_start_matches('/'))
    }

    /// The mock's config.toml followed by `extra`, as a file of its own.
    fn config_with(&self, name: &str, extra: &str) -> PathBuf {
        let base = std::fs::read_to_string(&self.config).unwrap();
        let path = self.dir.path().join(name);
        std::fs::write(&path, format!("{base}\n{extra}")).unwrap();
        path
    }

    /// `nvbox APPLET ARGS…` with the mock's config.toml.
    fn run(&self, applet: &str, args: &[&str]) -> Output {
        run_with(&self.config, applet, args, None)
    }
}

/// `nvbox APPLET ARGS…` under config `config`, stdin fed from `input` (closed when None).
fn run_with(config: &Path, applet: &str, args: &[&str], input: Option<&[u8]>) -> Output {
    let mut child = command(nvbox())
        .env("NVIDIA_CTK_CONFIG_FILE_PATH", config)
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .arg(applet)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.map(<[u8]>::to_vec);
    // A writer thread: a 10 MB state must not deadlock against a full stderr pipe.
    let writer = std::thread::spawn(move || {
        if let Some(bytes) = input {
            let _ = stdin.write_all(&bytes);
        }
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

/// A bundle: config.json (written verbatim) and a small rootfs with an ld.so.cache, beside a
/// host; `state` names it.
struct Bundle {
    dir: PathBuf,
}

impl Bundle {
    fn new(host: &Host, name: &str, config_json: &[u8]) -> Bundle {
        let dir = host.dir.path().join(name);
        let rootfs = dir.join("rootfs");
        for d in ["etc", "usr/lib64", "proc", "dev"] {
            std::fs::create_dir_all(rootfs.join(d)).unwrap();
        }
        std::fs::write(rootfs.join("etc/ld.so.cache"), b"image cache").unwrap();
        std::fs::write(dir.join("config.json"), config_json).unwrap();
        Bundle { dir }
    }

    /// A bundle whose config.json asks for `env` (a privileged container when `privileged`).
    fn with_env(host: &Host, name: &str, env: &[&str], privileged: bool) -> Bundle {
        let caps: &[&str] = if privileged { &["CAP_SYS_ADMIN"] } else { &[] };
        let spec = serde_json::json!({
            "ociVersion": "1.0.2",
            "process": {"env": env, "capabilities": {"bounding": caps}},
            "root": {"path": "rootfs"},
        });
        Bundle::new(host, name, spec.to_string().as_bytes())
    }

    fn state(&self, pid: i32) -> Vec<u8> {
        serde_json::json!({"ociVersion": "1.0.2", "id": "m", "pid": pid, "bundle": self.dir})
            .to_string()
            .into_bytes()
    }

    fn tree(&self) -> Tree {
        tree(&self.dir)
    }
}

/// The runtime shim's config: the mock host, `mode`, and a fake low-level runtime that only
/// records that it ran (the malformed cases must never reach it).
struct Shim {
    config: PathBuf,
    marker: PathBuf,
}

impl Shim {
    fn new(host: &Host, mode: &str, extra: &str) -> Shim {
        let fake = host.dir.path().join("fake-runc");
        let marker = host.dir.path().join("fake-runc.ran");
        std::fs::write(
            &fake,
            format!("#!/bin/sh\necho \"$@\" > {}\n", marker.display()),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let config = host.config_with(
            &format!("shim-{mode}.toml"),
            &format!(
                "[nvidia-container-runtime]\nmode = \"{mode}\"\nruntimes = [\"{}\"]\n{extra}",
                fake.display()
            ),
        );
        Shim { config, marker }
    }

    /// `nvidia-container-runtime create --bundle B ID`.
    fn create(&self, bundle: &Bundle) -> Output {
        let _ = std::fs::remove_file(&self.marker);
        let b = bundle.dir.to_str().unwrap();
        run_with(
            &self.config,
            "nvidia-container-runtime",
            &["create", "--bundle", b, "malformed"],
            None,
        )
    }

    fn ran(&self) -> bool {
        self.marker.exists()
    }
}

/// A refused create: one line, the fake runc never ran, the bundle untouched.
#[track_caller]
fn assert_create_refused(shim: &Shim, bundle: &Bundle, want: &str, case: &str) {
    let before = bundle.tree();
    let out = shim.create(bundle);
    assert_refused("nvidia-container-runtime", &out, want, case);
    assert!(!shim.ran(), "{case}: the low-level runtime ran");
    assert_eq!(bundle.tree(), before, "{case}: bundle changed");
}

fn sh(script: &str) -> Output {
    Command::new("sh").args(["-c", script]).output().unwrap()
}
