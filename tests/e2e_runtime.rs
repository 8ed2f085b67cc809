//! End to end with the real runc driven through the runtime shim: `nvidia-container-runtime
//! --root S create --bundle B ID` (a symlink to nvbox, which edits config.json and execs runc),
//! then `runc start`. On a simulated 8-GPU host: legacy mode (the prestart hook does the work),
//! jit-cdi (runc does: nodes, mounts, cgroup rules that survive `runc update`), cdi with a
//! hand-written spec, CPU containers left byte-identical, and the pass-through paths.

mod common;

use common::container::*;
use common::engines::*;
use serde_json::json;
use std::collections::BTreeSet;
use std::process::{Command, Stdio};

const DEFAULT_CAPS: &[&str] = &["compute", "utility"];

fn ready() -> bool {
    have_prerequisites(&[RUNC, BUSYBOX])
}

fn eight_gpus() -> &'static Host {
    shared_host(&[])
}

fn gpu_bundle(env: &[&str]) -> Bundle {
    let mut bundle = Bundle::new(true);
    bundle.script(&probe_with_env());
    bundle.env(env);
    bundle
}

fn created(run: &ShimRun) {
    assert!(
        run.created,
        "create through the shim failed:\n{}",
        run.create_stderr
    );
}

/// legacy: the shim adds our prestart hook (with the config it used) and the hook gives the
/// container exactly what it gives under plain runc.
fn assert_legacy(env: &[&str], devices: &str) {
    let host = eight_gpus();
    let config = ShimConfig::mode(host, "legacy");
    let mut bundle = gpu_bundle(env);
    let want = expected(host, devices, DEFAULT_CAPS, &bundle.rootfs);
    let run = run_shim(&mut bundle, &config.path, &[]);
    created(&run);
    let hook = json!({
        "path": hook_path(),
        "args": [
            "nvidia-container-runtime-hook",
            format!("-config={}", config.path.display()),
            "prestart",
        ],
    });
    assert_eq!(prestart_hooks(&run.config_after), vec![hook]);
    assert_injected(&parse_probe(&run.stdout), &want, host);
    assert_cgroup(&run.devices_list, &want.cgroup, host);
    assert_ldcache(&bundle.rootfs, &want);
}

#[test]
fn legacy_all_gpus() {
    if ready() {
        assert_legacy(&["NVIDIA_VISIBLE_DEVICES=all"], "all");
    }
}

#[test]
fn legacy_two_gpus() {
    if ready() {
        assert_legacy(&["NVIDIA_VISIBLE_DEVICES=1,3"], "1,3");
    }
}

/// An NVIDIA hook already in the spec (docker `--gpus`) is kept as the only one, file untouched.
#[test]
fn legacy_keeps_an_existing_hook() {
    if !ready() {
        return;
    }
    let host = eight_gpus();
    let config = ShimConfig::mode(host, "legacy");
    let mut bundle = gpu_bundle(&["NVIDIA_VISIBLE_DEVICES=all"]);
    bundle.hook(host);
    let want = expected(host, "all", DEFAULT_CAPS, &bundle.rootfs);
    let run = run_shim(&mut bundle, &config.path, &[]);
    created(&run);
    assert_eq!(run.config_after, run.config_before, "config.json changed");
    assert_injected(&parse_probe(&run.stdout), &want, host);
}

/// jit-cdi: nodes with the host's numbers, libraries with soname links and an ld.so.cache,
/// `void` for any later hook, and the cgroup rules in the spec itself, so whatever re-applies
/// the device cgroup from the spec (systemd on daemon-reload, upstream issue #48) keeps them.
/// runc 1.1's `update` leaves device rules alone, so the rules after it are checked too but
/// the spec is what proves the point.
fn assert_jit(env: &[&str], devices: &str, debian: bool) {
    let host = eight_gpus();
    let config = ShimConfig::mode(host, "jit-cdi");
    let mut bundle = Bundle::new(debian);
    bundle.script(&probe_with_env());
    bundle.env(env);
    let want = expected_jit(host, devices, &bundle.rootfs);
    let run = run_shim(&mut bundle, &config.path, &["--memory", "64M"]);
    created(&run);
    assert_jit_injected(&parse_probe(&run.stdout), &want);
    assert_eq!(probed_env(&run.stdout, "NVENV"), "void");
    assert_cgroup_rules(&run.devices_list, &want.cgroup, host, "rwm");
    let after = run.devices_after_update.as_deref().unwrap();
    assert_cgroup_rules(after, &want.cgroup, host, "rwm");
    assert_ldcache(&bundle.rootfs, &want);
    assert!(prestart_hooks(&run.config_after).is_empty());
    assert_eq!(
        spec_device_rules(&run.config_after),
        want.cgroup,
        "the spec's rules"
    );
}

#[test]
fn jit_cdi_all_gpus() {
    if ready() {
        assert_jit(&["NVIDIA_VISIBLE_DEVICES=all"], "all", true);
    }
}

#[test]
fn jit_cdi_two_gpus_non_debian() {
    if ready() {
        assert_jit(&["NVIDIA_VISIBLE_DEVICES=1,3"], "1,3", false);
    }
}

#[test]
fn jit_cdi_none_gives_driver_only() {
    if ready() {
        assert_jit(&["NVIDIA_VISIBLE_DEVICES=none"], "", true);
    }
}

/// `auto` is jit-cdi for a plain GPU request; an NVIDIA prestart hook already in the spec is
/// removed, so the container gets one set of devices and the hook's /proc files never appear.
#[test]
fn auto_is_jit_and_removes_the_hook() {
    if !ready() {
        return;
    }
    let host = eight_gpus();
    let config = ShimConfig::new(host, "");
    let mut bundle = gpu_bundle(&["NVIDIA_VISIBLE_DEVICES=all"]);
    bundle.hook(host);
    let want = expected_jit(host, "all", &bundle.rootfs);
    let run = run_shim(&mut bundle, &config.path, &[]);
    created(&run);
    assert!(prestart_hooks(&run.config_after).is_empty());
    assert_jit_injected(&parse_probe(&run.stdout), &want);
    assert_cgroup_rules(&run.devices_list, &want.cgroup, host, "rwm");
}

/// cdi: names resolved from a spec directory; an unqualified id gets the default kind.
fn assert_cdi(mode_lines: &str, visible: &str, minors: &[u64]) {
    let host = eight_gpus();
    let config = ShimConfig::new(host, "");
    let specs = config.dir().join("cdi");
    write_cdi_spec(&specs, host);
    config.write(&format!(
        "{mode_lines}[nvidia-container-runtime.modes.cdi]\nspec-dirs = [\"{}\"]\n",
        specs.display()
    ));
    let mut bundle = gpu_bundle(&[&format!("NVIDIA_VISIBLE_DEVICES={visible}")]);
    let run = run_shim(&mut bundle, &config.path, &[]);
    created(&run);
    let (entries, rules) = expected_cdi(host, minors);
    let probe = parse_probe(&run.stdout);
    assert_entries(&probe.entries, &entries);
    assert_cgroup_rules(&run.devices_list, &rules, host, "rwm");
    assert_eq!(probed_env(&run.stdout, "CDIENV"), "from-spec");
}

#[test]
fn auto_with_cdi_names_is_cdi() {
    if ready() {
        assert_cdi("", "nvidia.com/gpu=0", &[0]);
    }
}

#[test]
fn cdi_mode_qualifies_plain_ids() {
    if ready() {
        assert_cdi(&mode_toml("cdi"), "1", &[1]);
    }
}

/// A device plugin's `cdi.k8s.io/…` annotation is a request in auto mode, with no env at all.
#[test]
fn cdi_annotation_requests_devices() {
    if !ready() {
        return;
    }
    let host = eight_gpus();
    let config = ShimConfig::new(host, "");
    let specs = config.dir().join("cdi");
    write_cdi_spec(&specs, host);
    config.write(&format!(
        "[nvidia-container-runtime.modes.cdi]\nspec-dirs = [\"{}\"]\n",
        specs.display()
    ));
    let mut bundle = gpu_bundle(&[]);
    bundle.spec["annotations"] =
        serde_json::json!({"cdi.k8s.io/device-plugin": "nvidia.com/gpu=0"});
    let run = run_shim(&mut bundle, &config.path, &[]);
    created(&run);
    let (entries, rules) = expected_cdi(host, &[0]);
    let probe = parse_probe(&run.stdout);
    assert_entries(&probe.entries, &entries);
    assert_cgroup_rules(&run.devices_list, &rules, host, "rwm");
}

#[test]
fn cdi_unresolvable_name_fails_create() {
    if !ready() {
        return;
    }
    let host = eight_gpus();
    let config = ShimConfig::new(host, "");
    let specs = config.dir().join("cdi");
    write_cdi_spec(&specs, host);
    config.write(&format!(
        "[nvidia-container-runtime.modes.cdi]\nspec-dirs = [\"{}\"]\n",
        specs.display()
    ));
    let mut bundle = gpu_bundle(&["NVIDIA_VISIBLE_DEVICES=nvidia.com/gpu=7"]);
    let run = run_shim(&mut bundle, &config.path, &[]);
    assert!(!run.created, "create must fail");
    assert!(
        run.create_stderr.contains("unresolvable CDI devices"),
        "{}",
        run.create_stderr
    );
    assert!(!run.state_dir_left, "runc ran");
}

/// A CPU container: config.json byte-identical after create, nothing in the container.
fn assert_cpu_untouched(mode: &str, env: &[&str]) {
    let host = eight_gpus();
    let config = ShimConfig::mode(host, mode);
    let mut bundle = gpu_bundle(env);
    let run = run_shim(&mut bundle, &config.path, &[]);
    created(&run);
    assert_eq!(
        text(&run.config_after),
        text(&run.config_before),
        "{mode}: config.json changed"
    );
    assert_nothing_injected(&parse_probe(&run.stdout));
    assert_cgroup_rules(&run.devices_list, &BTreeSet::new(), host, "rwm");
}

#[test]
fn cpu_container_untouched_legacy() {
    if ready() {
        assert_cpu_untouched("legacy", &[]);
        assert_cpu_untouched("legacy", &["NVIDIA_VISIBLE_DEVICES=void"]);
    }
}

#[test]
fn cpu_container_untouched_jit_cdi() {
    if ready() {
        assert_cpu_untouched("jit-cdi", &[]);
        assert_cpu_untouched("auto", &["NVIDIA_VISIBLE_DEVICES="]);
    }
}

#[test]
fn version_then_runc_version() {
    if !ready() {
        return;
    }
    let config = ShimConfig::new(eight_gpus(), "");
    let ours = shim_command(&config.path)
        .arg("--version")
        .output()
        .unwrap();
    let ours = ok_stdout("nvidia-container-runtime --version", &ours);
    let runc = Command::new(RUNC).arg("--version").output().unwrap();
    let runc = ok_stdout("runc --version", &runc);
    let (head, tail) = ours
        .split_once("\n\n")
        .unwrap_or_else(|| panic!("no empty line before runc's version:\n{ours}"));
    let lines: Vec<&str> = head.lines().collect();
    assert_eq!(lines.len(), 3, "{head}");
    assert!(
        lines[0].starts_with("NVIDIA Container Runtime version "),
        "{head}"
    );
    assert!(lines[1].starts_with("commit: "), "{head}");
    assert!(lines[2].starts_with("spec: "), "{head}");
    assert_eq!(tail, runc);
}

/// `state` and `delete` go to runc untouched; `run` (not `create`) leaves the spec alone even
/// for a GPU container.
#[test]
fn state_delete_and_run_pass_through() {
    if !ready() {
        return;
    }
    let host = eight_gpus();
    let config = ShimConfig::mode(host, "legacy");
    let state = shim_state();
    let id = unique_id("pass");
    let mut bundle = gpu_bundle(&[]);
    bundle.script("sleep 30");
    std::fs::write(
        bundle.path().join("config.json"),
        serde_json::to_vec(&bundle.spec).unwrap(),
    )
    .unwrap();
    let _guard = Created {
        state: state.clone(),
        id: id.clone(),
    };
    let create_log = bundle.path().join("create.log");
    let create = create_logged(
        shim_command(&config.path),
        &state,
        bundle.path(),
        &id,
        &create_log,
    )
    .status()
    .unwrap();
    let log = std::fs::read_to_string(&create_log).unwrap();
    assert!(create.success(), "create: {log}");
    let shim = |args: &[&str]| {
        shim_command(&config.path)
            .arg("--root")
            .arg(&state)
            .args(args)
            .output()
            .unwrap()
    };
    let ours: serde_json::Value =
        serde_json::from_str(&ok_stdout("shim state", &shim(&["state", &id]))).unwrap();
    let theirs: serde_json::Value = serde_json::from_str(&ok_stdout(
        "runc state",
        &runc_at(&state).args(["state", &id]).output().unwrap(),
    ))
    .unwrap();
    assert_eq!(ours, theirs);
    assert_eq!(ours["status"], "created");
    ok_stdout("shim delete", &shim(&["delete", "--force", &id]));
    let gone = runc_at(&state).args(["state", &id]).output().unwrap();
    assert!(!gone.status.success(), "the container survived delete");

    // `run` is not `create`: config.json stays as written and the hook never runs.
    let mut gpu = gpu_bundle(&["NVIDIA_VISIBLE_DEVICES=all"]);
    let id = unique_id("run");
    gpu.spec["linux"]["cgroupsPath"] = json!(format!("/{id}"));
    let bytes = serde_json::to_vec_pretty(&gpu.spec).unwrap();
    std::fs::write(gpu.path().join("config.json"), &bytes).unwrap();
    let _guard = Created {
        state: state.clone(),
        id: id.clone(),
    };
    let run = shim_command(&config.path)
        .arg("--root")
        .arg(&state)
        .args(["run", "--bundle"])
        .arg(gpu.path())
        .arg(&id)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let out = ok_stdout("shim run", &run);
    assert_eq!(
        std::fs::read(gpu.path().join("config.json")).unwrap(),
        bytes
    );
    assert_nothing_injected(&parse_probe(&out));
}

/// A broken config.toml fails create with one line on stderr, before runc runs.
#[test]
fn broken_config_fails_before_runc() {
    if !ready() {
        return;
    }
    let config = ShimConfig::new(
        eight_gpus(),
        "[nvidia-container-runtime\nmode = \"legacy\"\n",
    );
    let mut bundle = gpu_bundle(&["NVIDIA_VISIBLE_DEVICES=all"]);
    let run = run_shim(&mut bundle, &config.path, &[]);
    assert!(!run.created, "create must fail");
    assert_eq!(
        run.create_stderr.lines().count(),
        1,
        "stderr:\n{}",
        run.create_stderr
    );
    assert!(
        run.create_stderr.starts_with("nvidia-container-runtime: "),
        "{}",
        run.create_stderr
    );
    assert!(!run.state_dir_left, "runc ran");
    assert_eq!(run.config_after, run.config_before);
    // Teardown still works with the broken config (upstream wedges it): `state` of a
    // container that does not exist reaches runc, whose own answer comes back.
    let out = shim_command(&config.path)
        .arg("--root")
        .arg(shim_state())
        .args(["state", "nvbox-no-such-container"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("nvidia-container-runtime: warning: "),
        "{err}"
    );
    assert!(
        err.contains("container does not exist"),
        "runc did not run: {err}"
    );
}

/// csv (Tegra): the mount spec files decide; on the simulated host they name its nodes and
/// libcuda, and a `sym` entry becomes a link made by our hook.
#[test]
fn csv_mode_mounts_what_the_spec_files_list() {
    if !ready() {
        return;
    }
    let host = eight_gpus();
    let config = ShimConfig::new(host, "");
    let csv = config.dir().join("csv");
    std::fs::create_dir_all(&csv).unwrap();
    std::fs::write(
        csv.join("devices.csv"),
        "# Tegra-style device list\ndev, /dev/nvidiactl\ndev, /dev/nvidia0\n",
    )
    .unwrap();
    let lib = "/usr/lib/x86_64-linux-gnu";
    std::fs::write(
        csv.join("drivers.csv"),
        format!("lib, {lib}/libcuda.so.535.104.05\nsym, {lib}/libcuda.so.1\n"),
    )
    .unwrap();
    config.write(&format!(
        "{}[nvidia-container-runtime.modes.csv]\nmount-spec-path = \"{}\"\n",
        mode_toml("csv"),
        csv.display()
    ));
    let mut bundle = gpu_bundle(&["NVIDIA_VISIBLE_DEVICES=all"]);
    let run = run_shim(&mut bundle, &config.path, &[]);
    created(&run);
    let probe = parse_probe(&run.stdout);
    let get = |p: &str| probe.entries.get(p).map(String::as_str);
    assert_eq!(get("/dev/nvidia0"), Some("character special file 195:0"));
    assert_eq!(
        get("/dev/nvidiactl"),
        Some("character special file 195:255")
    );
    assert_eq!(get("/dev/nvidia1"), None, "only what the CSV lists");
    assert_eq!(
        get(&format!("{lib}/libcuda.so.535.104.05")),
        Some("regular file")
    );
    assert_eq!(
        get(&format!("{lib}/libcuda.so.1")),
        Some("-> libcuda.so.535.104.05")
    );
    let rules: BTreeSet<String> = ["c 195:0", "c 195:255"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_cgroup_rules(&run.devices_list, &rules, host, "rwm");
}
