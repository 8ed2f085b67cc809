//! The runc paths: the runtime shim in legacy mode (runc runs our prestart hook) and in jit-cdi
//! mode (runc mounts what the spec says, then runs our createContainer hook), on busybox
//! bundles carrying the layouts marked `runc`. A created container is inspected through its
//! init's root before it is deleted.

use serde_json::json;

use super::canary::Canaries;
use super::expect::{Guard, check_jit, check_live, pre};
use super::layouts::{LAYOUTS, Layout, Ns};
use super::sandbox::View;
use super::{Outcome, plant_base};
use crate::common::container::{Bundle, RUNC, shared_host};
use crate::common::engines::{
    Created, ShimConfig, create_logged, shim_command, shim_state, unique_id,
};

pub fn matrix() -> (Vec<&'static str>, Vec<(String, Vec<Outcome>)>) {
    let host = shared_host(&["--gpus", "2"]);
    let legacy = ShimConfig::mode(host, "legacy");
    let jit = ShimConfig::mode(host, "jit-cdi");
    let rows = LAYOUTS
        .iter()
        .filter(|l| l.runc)
        .map(|l| {
            let cells = vec![run_case(l, &legacy, "legacy"), run_case(l, &jit, "jit-cdi")];
            (l.name.to_owned(), cells)
        })
        .collect();
    (vec!["runc legacy hook", "runc jit-cdi"], rows)
}

/// What the layout's namespace needs, said in the OCI spec.
fn apply_ns(bundle: &mut Bundle, ns: Ns) {
    let mount = |dest: &str, ro: bool| {
        let mut options = vec!["nosuid", "nodev"];
        if ro {
            options.push("ro");
        }
        json!({"destination": format!("/{dest}"), "type": "tmpfs", "source": "tmpfs",
            "options": options})
    };
    let extra = match ns {
        Ns::Plain | Ns::Proc => return,
        Ns::ReadOnly => {
            bundle.spec["root"]["readonly"] = json!(true);
            return;
        }
        Ns::Tmpfs(p) => mount(p, false),
        Ns::RoTmpfs(p) => mount(p, true),
        Ns::HostNode => panic!("a host node layout is not meant for runc"),
    };
    bundle.spec["mounts"].as_array_mut().unwrap().push(extra);
}

fn run_case(layout: &Layout, config: &ShimConfig, mode: &str) -> Outcome {
    let mut o = Outcome::default();
    let mut bundle = Bundle::new(true);
    plant_base(&bundle.rootfs);
    let canaries = Canaries::new(&bundle.path().join("host"));
    (layout.plant)(&bundle.rootfs, &canaries);
    apply_ns(&mut bundle, layout.ns);
    bundle.spec["process"]["args"] = json!(["/bin/busybox", "true"]);
    bundle.env(&[
        "NVIDIA_VISIBLE_DEVICES=all",
        "NVIDIA_DRIVER_CAPABILITIES=compute,utility,graphics",
    ]);
    let id = unique_id("hostile");
    bundle.spec["linux"]["cgroupsPath"] = json!(format!("/{id}"));
    std::fs::write(
        bundle.path().join("config.json"),
        serde_json::to_vec_pretty(&bundle.spec).unwrap(),
    )
    .unwrap();
    let mut before = pre(&View::open(&bundle.rootfs));
    if mode == "legacy" && matches!(layout.ns, Ns::Tmpfs("etc") | Ns::RoTmpfs("etc")) {
        // The hook probes the container at prestart, where the spec's /etc hides the marker;
        // the jit-cdi shim probes the bundle's rootfs before runc runs.
        before.debian = false;
    }
    let guard = Guard::arm(&canaries, &bundle.rootfs);
    let state = shim_state();
    let created = Created {
        state: state.clone(),
        id: id.clone(),
    };
    let err_path = bundle.path().join("create.stderr");
    let status = create_logged(
        shim_command(&config.path),
        &state,
        bundle.path(),
        &id,
        &err_path,
    )
    .status()
    .unwrap();
    o.ok = status.success();
    if o.ok {
        let st = std::process::Command::new(RUNC)
            .arg("--root")
            .arg(&state)
            .args(["state", &id])
            .output()
            .unwrap();
        let st: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap_or_default();
        match st["pid"].as_u64() {
            Some(pid) => {
                let view = View::open(std::path::Path::new(&format!("/proc/{pid}/root")));
                if mode == "legacy" {
                    check_live(&view, &before, &mut o);
                } else {
                    check_jit(&view, &before, &mut o);
                }
            }
            None => o
                .problems
                .push("created, but runc has no pid for it".into()),
        }
    } else {
        let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
        o.error = super::direct::last_line(&stderr);
        let ours = if mode == "legacy" {
            "nvidia-container-runtime-hook: "
        } else {
            "nvidia-cdi-hook: "
        };
        // runc wraps a hook's output in its own message; a failure of runc's own setup (its
        // mounts of the spec, its /dev) comes before any hook and is runc's to word.
        let hook_failed = stderr.contains("error running hook");
        let named = if hook_failed {
            stderr.contains(ours)
        } else {
            stderr.contains("error during container init")
        };
        if !named {
            o.problems
                .push(format!("the error names no step: {stderr:?}"));
        }
        if stderr.contains(ours) {
            let line = stderr
                .split(ours)
                .nth(1)
                .unwrap_or("")
                .split("\\n")
                .next()
                .unwrap_or("");
            if line.contains("warning") {
                o.problems
                    .push(format!("a warning where an error should be: {line}"));
            }
        }
    }
    drop(created);
    if state.join(&id).exists() {
        o.problems.push("runc state left behind".into());
    }
    guard.check(&canaries, &mut o);
    o
}
