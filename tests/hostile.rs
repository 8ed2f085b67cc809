//! The hostile-rootfs suite: a table of layouts (tests/hostile/layouts.rs), each a trap aimed at
//! host canaries, applied through every path that writes into a rootfs — standalone
//! `nvidia-container-cli configure`, each `nvidia-cdi-hook`, the legacy prestart hook under real
//! runc, and the jit-cdi runtime under real runc — and a race that swaps rootfs directories for
//! links to the host while those run. For every (layout, path): the canaries, the host's
//! sensitive directories and its mount table are unchanged, no special file in the rootfs was
//! opened, and the outcome is either the correct result inside the rootfs or one line naming the
//! failed step with nothing left mounted (for configure: nothing left at all). Each test prints
//! its matrix.

mod common;

#[path = "hostile/canary.rs"]
mod canary;
#[path = "hostile/direct.rs"]
mod direct;
#[path = "hostile/expect.rs"]
mod expect;
#[path = "hostile/layouts.rs"]
mod layouts;
#[path = "hostile/race.rs"]
mod race;
#[path = "hostile/runc.rs"]
mod runc;
#[path = "hostile/sandbox.rs"]
mod sandbox;

use std::path::{Path, PathBuf};

use canary::Canaries;
use common::{TempDir, copy_library};
use layouts::Layout;

/// One (layout, path) case: a scratch directory holding the rootfs, the canaries and a bundle.
pub struct Case {
    pub dir: TempDir,
    pub root: PathBuf,
    pub host: Canaries,
}

/// The mock host's 64-bit libcuda (host file), shared by every case.
pub fn mock_libcuda() -> PathBuf {
    let host = common::container::shared_host(&["--gpus", "2"]);
    host.file("/usr/lib/x86_64-linux-gnu/libcuda.so.535.104.05")
}

/// What a plain image ships beyond a bare tree: a Debian marker, a library in the library
/// directory, a CUDA compat library, a GPU node, its own driver params file.
pub fn plant_base(root: &Path) {
    let lib = mock_libcuda();
    for d in [
        "usr/lib/x86_64-linux-gnu",
        "usr/bin",
        "usr/local/cuda/compat",
        "etc",
        "dev",
        "proc/driver/nvidia",
        "run",
        "tmp",
    ] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(root.join("etc/debian_version"), "12.0\n").unwrap();
    // The image's own copy differs from the host's (a trailing byte), so a check that finds
    // the host's library finds the injected one.
    let own = root.join("usr/lib/x86_64-linux-gnu/libcuda.so.535.104.05");
    copy_library(&lib, &own);
    std::io::Write::write_all(
        &mut std::fs::OpenOptions::new().append(true).open(&own).unwrap(),
        &[0],
    )
    .unwrap();
    copy_library(
        &lib,
        &root.join("usr/local/cuda/compat/libcuda.so.535.104.05"),
    );
    std::fs::write(
        root.join("proc/driver/nvidia/params"),
        "ModifyDeviceFiles: 1\n",
    )
    .unwrap();
    if !root.join("dev/nvidia0").exists() {
        let st = std::process::Command::new("mknod")
            .arg(root.join("dev/nvidia0"))
            .args(["c", "195", "0"])
            .status()
            .unwrap();
        assert!(st.success());
    }
}

impl Case {
    /// A fresh rootfs (base contents, then the layout's trap) beside fresh canaries.
    pub fn new(layout: &Layout, tag: &str) -> Case {
        let dir = TempDir::new(tag);
        let root = dir.path().join("rootfs");
        plant_base(&root);
        let host = Canaries::new(&dir.path().join("host"));
        (layout.plant)(&root, &host);
        Case { dir, root, host }
    }

    /// A bundle whose config.json names the rootfs, and the OCI state for a hook.
    pub fn state(&self, pid: u32) -> String {
        let bundle = self.dir.path().join("bundle");
        std::fs::create_dir_all(&bundle).unwrap();
        let spec = serde_json::json!({"ociVersion": "1.0.2", "process": {"env": []},
            "root": {"path": self.root}});
        std::fs::write(bundle.join("config.json"), spec.to_string()).unwrap();
        serde_json::json!({"ociVersion": "1.0.2", "id": "hostile", "status": "creating",
            "pid": pid, "bundle": bundle})
        .to_string()
    }
}

/// Cell of the matrix: what happened, and what was wrong with it.
#[derive(Default)]
pub struct Outcome {
    pub ok: bool,
    pub problems: Vec<String>,
    /// The error a failed run reported.
    pub error: String,
}

impl Outcome {
    pub fn cell(&self) -> &'static str {
        match (self.problems.is_empty(), self.ok) {
            (false, _) => "FAIL",
            (true, true) => "ok",
            (true, false) => "err",
        }
    }
}

/// Print `rows` (layout × path cells) and panic with every problem found.
pub fn report(title: &str, columns: &[&str], rows: &[(String, Vec<Outcome>)]) {
    let width = rows.iter().map(|(n, _)| n.len()).max().unwrap_or(0).max(6);
    let mut text = format!("\n{title}\n{:width$}", "layout");
    for c in columns {
        text.push_str(&format!(" | {c}"));
    }
    text.push('\n');
    let mut problems = Vec::new();
    let mut errors = String::new();
    let (mut ok, mut err) = (0, 0);
    for (name, cells) in rows {
        text.push_str(&format!("{name:width$}"));
        for (c, o) in columns.iter().zip(cells) {
            text.push_str(&format!(" | {:<w$}", o.cell(), w = c.len()));
            if o.ok {
                ok += 1;
            } else {
                err += 1;
            }
            if !o.error.is_empty() {
                errors.push_str(&format!("  [{name} × {c}] {}\n", o.error));
            }
            for p in &o.problems {
                problems.push(format!("[{name} × {c}] {p}"));
            }
        }
        text.push('\n');
    }
    text.push_str(&format!(
        "{} rows × {} columns: {ok} ok, {err} clean errors, {} problems\n",
        rows.len(),
        columns.len(),
        problems.len()
    ));
    println!("{text}\nclean errors, as reported:\n{errors}");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The failed command's stderr must be one line naming the step: `prefix` then the step.
pub fn check_error_line(stderr: &str, prefix: &str, o: &mut Outcome) {
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.contains("warning:") && !l.trim().is_empty())
        .collect();
    match lines[..] {
        [line] if line.starts_with(prefix) => {}
        _ => o.problems.push(format!(
            "error is not one line starting with {prefix:?}: {stderr:?}"
        )),
    }
}

fn prerequisites() -> bool {
    common::container::have_prerequisites(&[common::container::RUNC, common::container::BUSYBOX])
}

#[test]
fn configure_and_each_cdi_hook_against_every_layout() {
    if !prerequisites() {
        return;
    }
    let (columns, rows) = direct::matrix();
    report(
        "hostile rootfs × configure and nvidia-cdi-hook",
        &columns,
        &rows,
    );
}

#[test]
fn legacy_hook_and_jit_cdi_under_runc() {
    if !prerequisites() {
        return;
    }
    let (columns, rows) = runc::matrix();
    report("hostile rootfs × runc (legacy, jit-cdi)", &columns, &rows);
}

#[test]
fn directories_swapped_for_host_links_during_the_run() {
    if !prerequisites() {
        return;
    }
    let (columns, rows) = race::matrix();
    report(
        "rootfs directories swapped with links to the host (renameat2 RENAME_EXCHANGE)",
        &columns,
        &rows,
    );
}

#[test]
fn the_table_is_large_enough() {
    let runc = layouts::LAYOUTS.iter().filter(|l| l.runc).count();
    assert!(layouts::LAYOUTS.len() >= 25, "{}", layouts::LAYOUTS.len());
    assert!(runc >= 10, "{runc}");
    let mut names: Vec<_> = layouts::LAYOUTS.iter().map(|l| l.name).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), layouts::LAYOUTS.len(), "layout names repeat");
}
