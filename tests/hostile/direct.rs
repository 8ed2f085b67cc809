//! The direct paths: `nvidia-container-cli configure --pid` and each `nvidia-cdi-hook`, run in
//! the case's private mount namespace (as a runtime would run them in the container's) with
//! the container state on stdin.

use std::io::Write;
use std::process::{Output, Stdio};

use super::expect::{Guard, LINKS, check_hook, check_live, pre};
use super::layouts::{LAYOUTS, Layout};
use super::sandbox::{Sandbox, View};
use super::{Case, Outcome, check_error_line};
use crate::canary::snapshot_tree;
use crate::common::{command, container::shared_host, nvbox};

pub const HOOKS: &[&str] = &[
    "create-symlinks",
    "update-ldcache",
    "enable-cuda-compat",
    "disable-device-node-modification",
    "chmod",
    "update-application-profile",
];

fn hook_args(hook: &str) -> Vec<String> {
    match hook {
        "create-symlinks" => LINKS
            .iter()
            .map(|(t, l)| format!("--link={t}::{l}"))
            .collect(),
        "update-ldcache" => vec![format!("--folder={}", super::expect::LIBS)],
        "enable-cuda-compat" => vec!["--host-driver-version=470.57.02".into()],
        "chmod" => {
            let mut a = vec!["--mode=0750".to_owned()];
            a.extend(
                super::expect::CHMOD_PATHS
                    .iter()
                    .map(|p| format!("--path={p}")),
            );
            a
        }
        _ => Vec::new(),
    }
}

/// The columns and rows of the matrix: every layout × (configure, each hook).
pub fn matrix() -> (Vec<&'static str>, Vec<(String, Vec<Outcome>)>) {
    let mut columns = vec!["configure"];
    columns.extend(HOOKS);
    let rows = LAYOUTS
        .iter()
        .map(|l| {
            let mut cells = vec![run_case(l, "configure")];
            cells.extend(HOOKS.iter().map(|h| run_case(l, h)));
            (l.name.to_owned(), cells)
        })
        .collect();
    (columns, rows)
}

/// `configure` or one hook against a fresh case of `layout`.
pub fn run_case(layout: &Layout, path: &str) -> Outcome {
    let case = Case::new(layout, "hostile");
    let mut o = Outcome::default();
    let sandbox = match Sandbox::new(&layout.ns.setup(&case.root, &case.host)) {
        Ok(s) => s,
        Err(e) => {
            o.problems.push(e);
            return o;
        }
    };
    run_in(&case, &sandbox, path, &mut o, true);
    o
}

/// Run `path` against the case's rootfs in `sandbox` and judge it. `exact`: check the result
/// in full (off under a race, where only the host and the error's shape are judged).
pub fn run_in(case: &Case, sandbox: &Sandbox, path: &str, o: &mut Outcome, exact: bool) {
    let rootfs = sandbox.path(&case.root);
    let view = View::open(&rootfs);
    let before = pre(&view);
    let mounts = sandbox.mounts();
    let tree = snapshot_tree(&rootfs, false);
    let guard = Guard::arm(&case.host, &rootfs);
    let out = if path == "configure" {
        configure(case, sandbox)
    } else {
        hook(case, sandbox, path)
    };
    guard.check(&case.host, o);
    o.ok = out.status.success();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !o.ok {
        o.error = last_line(&stderr);
    }
    let root_prefix = format!("{}/", case.root.display());
    let after = sandbox.mounts();
    let added: Vec<&String> = after.iter().filter(|m| !mounts.contains(m)).collect();
    if o.ok {
        for m in &added {
            if !m.starts_with(&root_prefix) {
                o.problems.push(format!("mounted outside the rootfs: {m}"));
            }
        }
        if exact {
            if path == "configure" {
                check_live(&view, &before, o);
            } else {
                check_hook(path, &view, &before, o);
            }
        }
        return;
    }
    if after != mounts {
        o.problems
            .push(format!("mounts left after the failure: {added:?}"));
    }
    if path == "configure" {
        check_error_line(&stderr, "nvidia-container-cli: ", o);
        if !stderr.contains(" error: ") {
            o.problems
                .push(format!("the error names no step: {stderr:?}"));
        }
        if exact {
            // All or nothing: the rootfs is as it was.
            let now = snapshot_tree(&rootfs, false);
            o.problems.extend(super::canary::tree_diff(
                "rootfs after failure",
                &tree,
                &now,
            ));
        }
    } else {
        check_error_line(&stderr, &format!("nvidia-cdi-hook: {path}: "), o);
    }
}

fn configure(case: &Case, sandbox: &Sandbox) -> Output {
    let host = shared_host(&["--gpus", "2"]);
    command(nvbox())
        .env("NVIDIA_CTK_CONFIG_FILE_PATH", &host.config)
        .args([
            "nvidia-container-cli",
            "configure",
            "--no-cgroups",
            "--device=all",
            "--compute",
            "--utility",
            "--graphics",
            "--pid",
            &sandbox.pid().to_string(),
        ])
        .arg(&case.root)
        .output()
        .unwrap()
}

fn hook(case: &Case, sandbox: &Sandbox, name: &str) -> Output {
    let mut c = sandbox.command(nvbox());
    c.env(
        "NVIDIA_CTK_CONFIG_FILE_PATH",
        "/nonexistent/nvbox-test/config.toml",
    )
    .arg("nvidia-cdi-hook")
    .arg(name)
    .args(hook_args(name))
    // Hooks run with the rootfs as their working directory.
    .current_dir(&case.root)
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let state = case.state(sandbox.pid());
    let _ = child.stdin.take().unwrap().write_all(state.as_bytes());
    child.wait_with_output().unwrap()
}

/// The last line of `text`, shortened for the matrix's notes.
pub fn last_line(text: &str) -> String {
    let line = text.trim_end().lines().last().unwrap_or("").to_owned();
    if line.len() > 240 {
        format!("{}…", &line[..line.floor_char_boundary(240)])
    } else {
        line
    }
}
