//! `nvbox doctor` on simulated hosts: a healthy set-up reports only `ok` and exits 0; each
//! breakage, made one at a time, gives exactly its `fail`/`warn` line and fix; and the doctor
//! never changes anything it reads (the mock tree and every config file, snapshot before/after).

mod common;

#[path = "doctor/setup.rs"]
mod setup;

#[path = "doctor/host.rs"]
mod host;

use std::time::{Duration, Instant};

use common::container::{DOCKER, DOCKERD, DaemonConfig, Dockerd, applet_dir, have_prerequisites};
use common::*;
use setup::{Setup, assert_healthy, not_ok, run_fix};

#[test]
fn healthy_host_is_all_ok_and_json_agrees() {
    let Some(s) = Setup::new() else { return };
    let (code, lines) = s.doctor_read_only(&[]);
    assert_healthy(code, &lines);
    let (code, json) = s.doctor_read_only(&["--json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&json.join("\n")).unwrap();
    let items = v.as_array().unwrap();
    assert_eq!(items.len(), lines.len());
    for (item, line) in items.iter().zip(&lines) {
        assert_eq!(item["status"], "ok");
        assert_eq!(item["fix"], "");
        let check = item["check"].as_str().unwrap();
        let message = item["message"].as_str().unwrap();
        assert_eq!(*line, format!("ok    {check}  — {message}"));
    }
}

#[test]
fn wrong_device_major() {
    use nix::sys::stat::{Mode, SFlag, makedev, mknod};
    let Some(s) = Setup::new() else { return };
    let node = s.host.join("dev/nvidiactl");
    std::fs::remove_file(&node).unwrap();
    mknod(
        &node,
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o666),
        makedev(196, 255),
    )
    .unwrap();
    let (code, lines) = s.doctor_read_only(&[]);
    let h = s.host.display();
    assert_eq!(
        not_ok(&lines),
        [format!(
            "fail  device node /dev/nvidiactl  — {h}/dev/nvidiactl is 196:255 but the driver registered 195:255 (/proc/devices): containers get a device that is not the GPU's; fix: nvidia-ctk system create-device-nodes --control-devices --dev-root={h} --proc-root={h}"
        )]
    );
    assert_eq!(code, 1);
    // The fix, run as printed, repairs it.
    run_fix(&lines, "device node /dev/nvidiactl");
    let (code, lines) = s.doctor(&[]);
    assert_healthy(code, &lines);
}

#[test]
fn missing_uvm_node_and_no_persistenced() {
    let Some(s) = Setup::new() else { return };
    std::fs::remove_file(s.host.join("dev/nvidia-uvm-tools")).unwrap();
    std::fs::remove_file(s.host.join("run/nvidia-persistenced/socket")).unwrap();
    let (code, lines) = s.doctor_read_only(&[]);
    let h = s.host.display();
    assert_eq!(
        not_ok(&lines),
        [
            format!(
                "fail  device node /dev/nvidia-uvm-tools  — {h}/dev/nvidia-uvm-tools is missing or not a character device: containers cannot reach the GPU; fix: nvidia-ctk system create-device-nodes --control-devices --dev-root={h} --proc-root={h}"
            ),
            format!(
                "warn  persistence daemon  — {h}/run/nvidia-persistenced/socket absent: without persistence mode every container start initialises the GPUs again (seconds each); fix: systemctl enable --now nvidia-persistenced"
            ),
        ]
    );
    assert_eq!(code, 1);
}

#[test]
fn config_toml_syntax_error() {
    let Some(s) = Setup::new() else { return };
    let mut text = std::fs::read_to_string(&s.config).unwrap();
    let line = text.lines().count() + 1;
    text.push_str("[nvidia-container-runtime\n");
    std::fs::write(&s.config, text).unwrap();
    let (code, lines) = s.doctor_read_only(&[]);
    let bad = not_ok(&lines);
    assert_eq!(bad.len(), 1, "{bad:#?}");
    let c = s.config.display();
    let head = format!("fail  config.toml  — {c}:{line}: invalid config: ");
    let tail = format!(
        ": every nvbox applet refuses to start; fix: correct that line in {c}, or start over with: nvidia-ctk config default --output={c}"
    );
    assert!(
        bad[0].starts_with(&head) && bad[0].ends_with(&tail),
        "{}",
        bad[0]
    );
    assert_eq!(code, 1);
}

#[test]
fn duplicate_cdi_device() {
    let Some(s) = Setup::new() else { return };
    let extra = s.cdi.join("zz-extra.json");
    std::fs::write(
        &extra,
        r#"{"cdiVersion":"0.5.0","kind":"nvidia.com/gpu","devices":[{"name":"0","containerEdits":{"deviceNodes":[{"path":"/dev/nvidia0"}]}}]}"#,
    )
    .unwrap();
    let (code, lines) = s.doctor_read_only(&[]);
    let (e, n) = (extra.display(), s.spec.display());
    assert_eq!(
        not_ok(&lines),
        [format!(
            "fail  CDI duplicate device  — conflicting device \"nvidia.com/gpu=0\" (specs \"{e}\", \"{n}\"): the device is dropped, requests fail with `unresolvable CDI devices nvidia.com/gpu=0`; fix: rm {e} (one spec per device and directory)"
        )]
    );
    assert_eq!(code, 1);
    // The same device in a higher-priority directory overrides instead: no conflict.
    let later = s.dir.path().join("cdi-run");
    std::fs::create_dir_all(&later).unwrap();
    std::fs::rename(&extra, later.join("zz-extra.json")).unwrap();
    let dirs = format!("--cdi-spec-dirs={},{}", s.cdi.display(), later.display());
    let (code, lines) = s.doctor(&[&dirs]);
    assert_healthy(code, &lines);
}

#[test]
fn stale_cdi_spec_after_driver_upgrade() {
    let Some(s) = Setup::new() else { return };
    mock(&s.host, &["--gpus", "2", "--driver-version", "550.54.14"]);
    let (code, lines) = s.doctor_read_only(&[]);
    let spec = s.spec.display();
    assert_eq!(
        not_ok(&lines),
        [format!(
            "fail  CDI spec {spec}  — stale: libraries of driver 535.104.05 mounted, the loaded driver is 550.54.14; containers fail to start or get the wrong device; fix: nvidia-ctk cdi generate --output={spec}"
        )]
    );
    assert_eq!(code, 1);
    s.generate_spec();
    let (code, lines) = s.doctor(&[]);
    assert_healthy(code, &lines);
}

#[test]
fn stale_cdi_spec_device_number() {
    let Some(s) = Setup::new() else { return };
    // A spec from a boot where the dynamic uvm major was another one.
    let text = std::fs::read_to_string(&s.spec).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let nodes = v["containerEdits"]["deviceNodes"].as_array_mut().unwrap();
    let uvm = nodes
        .iter_mut()
        .find(|n| n["path"] == "/dev/nvidia-uvm")
        .unwrap();
    uvm["major"] = serde_json::json!(504);
    std::fs::write(&s.spec, serde_json::to_vec(&v).unwrap()).unwrap();
    let (code, lines) = s.doctor_read_only(&[]);
    let (spec, h) = (s.spec.display(), s.host.display());
    assert_eq!(
        not_ok(&lines),
        [format!(
            "fail  CDI spec {spec}  — stale: {h}/dev/nvidia-uvm is 505:0 on the host, 504:0 in the spec; containers fail to start or get the wrong device; fix: nvidia-ctk cdi generate --output={spec}"
        )]
    );
    assert_eq!(code, 1);
}

#[test]
fn docker_and_containerd_configs_without_the_runtime() {
    let Some(s) = Setup::new() else { return };
    std::fs::write(&s.daemon_json, "{\"default-runtime\": \"runc\"}\n").unwrap();
    std::fs::remove_file(s.dir.path().join("containerd/conf.d/99-nvidia.toml")).unwrap();
    let (code, lines) = s.doctor_read_only(&[]);
    let (j, c) = (s.daemon_json.display(), s.containerd.display());
    let r = applet_dir().join("nvidia-container-runtime");
    let r = r.display();
    assert_eq!(
        not_ok(&lines),
        [
            format!(
                "fail  docker runtime  — {j} has no runtimes.nvidia: `docker run --runtime=nvidia` fails with `unknown or invalid runtime name: nvidia`; fix: nvidia-ctk runtime configure --runtime=docker --config={j} && systemctl restart docker"
            ),
            format!(
                "fail  containerd runtime  — no nvidia runtime in {c} (version 2): `unknown runtime handler nvidia` / `runtime \"nvidia\" binary not installed`; fix: nvidia-ctk runtime configure --runtime=containerd --config={c} --nvidia-runtime-path={r} && systemctl restart containerd"
            ),
        ]
    );
    assert_eq!(code, 1);
}

#[test]
fn applet_missing_from_path() {
    let Some(s) = Setup::new() else { return };
    // Only the applets' directory is searched, and it lacks one applet.
    let bin = s.dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for e in std::fs::read_dir(applet_dir()).unwrap().flatten() {
        if e.file_name() != "nvidia-docker" {
            std::os::unix::fs::symlink(
                std::fs::read_link(e.path()).unwrap(),
                bin.join(e.file_name()),
            )
            .unwrap();
        }
    }
    let out = s.command(bin.to_str().unwrap()).output().unwrap();
    let lines: Vec<String> = stdout(&out).lines().map(str::to_string).collect();
    let bad = not_ok(&lines);
    let want = "fail  applets on PATH  — nvidia-docker not found on PATH: engines and hooks exec them by name; fix: for a in nvidia-docker; do ln -s ";
    assert_eq!(bad.len(), 1, "{bad:#?}");
    assert!(
        bad[0].starts_with(want) && bad[0].ends_with(" /usr/local/bin/$a; done"),
        "{}",
        bad[0]
    );
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn running_dockerd_path_and_restart() {
    if !have_prerequisites(&[DOCKERD, DOCKER]) {
        return;
    }
    let Some(s) = Setup::new() else { return };
    // Healthy: the hook on dockerd's PATH, daemon.json older than dockerd.
    let good = Dockerd::start_with(None, DaemonConfig::File(&s.daemon_json), &Setup::env_path());
    let started = Instant::now();
    let (code, lines) = s.doctor_read_only(&[]);
    assert_healthy(code, &lines);
    let (j, pid) = (s.daemon_json.display(), good.pid());
    let hook = applet_dir().join("nvidia-container-runtime-hook");
    assert!(
        lines.contains(&format!(
            "ok    dockerd PATH  — dockerd (pid {pid}) finds {}",
            hook.display()
        )),
        "{lines:#?}"
    );
    assert!(
        lines.contains(&format!(
            "ok    dockerd restart  — dockerd (pid {pid}) started after {j}'s last change"
        )),
        "{lines:#?}"
    );
    // daemon.json changed while dockerd runs: a warning, the exit status still 0.
    std::thread::sleep(Duration::from_millis(1500).saturating_sub(started.elapsed()));
    let text = std::fs::read(&s.daemon_json).unwrap();
    std::fs::write(&s.daemon_json, text).unwrap();
    let (code, lines) = s.doctor_read_only(&[]);
    assert_eq!(
        not_ok(&lines),
        [format!(
            "warn  dockerd restart  — {j} changed after dockerd (pid {pid}) started: the running daemon does not see the change (`unknown or invalid runtime name: nvidia`); fix: systemctl restart docker (or kill -HUP {pid}, which reloads runtimes)"
        )]
    );
    assert_eq!(code, 0);
    drop(good);

    // A dockerd whose PATH lacks the hook: `--gpus` cannot work.
    let bare = "/usr/sbin:/usr/bin:/sbin:/bin";
    let bad = Dockerd::start_with(None, DaemonConfig::File(&s.daemon_json), bare);
    let pid = bad.pid();
    let (code, lines) = s.doctor_read_only(&[]);
    assert_eq!(
        not_ok(&lines),
        [format!(
            "fail  dockerd PATH  — nvidia-container-runtime-hook is not on the PATH of dockerd (pid {pid}, PATH={bare}): `docker run --gpus` fails with `could not select device driver \"\" with capabilities: [[gpu]]`; fix: ln -s $(command -v nvidia-container-runtime-hook) /usr/bin/nvidia-container-runtime-hook (or add its directory to dockerd's PATH), then systemctl restart docker"
        )]
    );
    assert_eq!(code, 1);
    // The error the line quotes is the one this dockerd really gives.
    let rootfs = s.dir.path().join("rootfs");
    common::container::make_rootfs(&rootfs, true);
    bad.import(&rootfs, "doctor-probe");
    let out = bad.docker(&["run", "--rm", "--gpus", "all", "doctor-probe", "true"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("could not select device driver \"\" with capabilities: [[gpu]]"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn stale_cdi_spec_lists_a_gpu_the_host_lost() {
    let Some(s) = Setup::new() else { return };
    // GPU minor 1 falls off the bus: the driver lists one GPU and its node is gone.
    let gpus = s.host.join("proc/driver/nvidia/gpus");
    for e in std::fs::read_dir(&gpus).unwrap().flatten() {
        let info = std::fs::read_to_string(e.path().join("information")).unwrap();
        let minor = info
            .lines()
            .find_map(|l| l.strip_prefix("Device Minor:"))
            .unwrap()
            .trim();
        if minor == "1" {
            std::fs::remove_dir_all(e.path()).unwrap();
        }
    }
    std::fs::remove_file(s.host.join("dev/nvidia1")).unwrap();
    let (code, lines) = s.doctor_read_only(&[]);
    let (spec, h) = (s.spec.display(), s.host.display());
    assert_eq!(
        not_ok(&lines),
        [format!(
            "fail  CDI spec {spec}  — stale: {h}/dev/nvidia1 is not a device node on the host; containers fail to start or get the wrong device; fix: nvidia-ctk cdi generate --output={spec}"
        )]
    );
    assert!(lines.contains(&"ok    GPUs  — 1 listed in /proc/driver/nvidia/gpus".to_string()));
    assert_eq!(code, 1);
    s.generate_spec();
    let (code, lines) = s.doctor(&[]);
    assert_healthy(code, &lines);
}

#[test]
fn config_toml_root_that_does_not_exist() {
    let Some(s) = Setup::new() else { return };
    let text = std::fs::read_to_string(&s.config).unwrap();
    let moved = text.replace(
        &format!("sys-root = \"{}\"", s.host.display()),
        "sys-root = \"/nonexistent/nvbox-doctor/sys\"",
    );
    assert_ne!(text, moved, "the mock's config.toml sets sys-root");
    std::fs::write(&s.config, moved).unwrap();
    let (code, lines) = s.doctor_read_only(&[]);
    let c = s.config.display();
    assert_eq!(
        not_ok(&lines),
        [format!(
            "fail  config.toml nvbox.sys-root  — \"/nonexistent/nvbox-doctor/sys\" is not a directory: every GPU lookup fails; fix: nvidia-ctk config --config-file={c} --in-place --set nvbox.sys-root=<existing directory>"
        )]
    );
    assert_eq!(code, 1);
}

#[test]
fn systemd_cgroup_driver_with_legacy_mode_needs_dev_char_links() {
    let Some(s) = Setup::new() else { return };
    let text = std::fs::read_to_string(&s.daemon_json).unwrap();
    let systemd = text.replace(
        "native.cgroupdriver=cgroupfs",
        "native.cgroupdriver=systemd",
    );
    assert_ne!(text, systemd);
    std::fs::write(&s.daemon_json, systemd).unwrap();
    let (code, lines) = s.doctor_read_only(&[]);
    let (h, c) = (s.host.display(), s.config.display());
    assert_eq!(
        not_ok(&lines),
        [format!(
            "warn  docker cgroup driver  — systemd with mode auto and no /dev/char/195:255, /dev/char/505:0, /dev/char/505:1, /dev/char/195:0, /dev/char/195:1: after `systemctl daemon-reload` running containers lose their GPUs (`Failed to initialize NVML: Unknown Error`); fix: nvidia-ctk system create-dev-char-symlinks --create-all --dev-root={h} --proc-root={h} (or nvidia-ctk config --config-file={c} --in-place --set nvidia-container-runtime.mode=jit-cdi)"
        )]
    );
    assert_eq!(code, 0);
    // The first fix, run as printed, creates the links.
    run_fix(&lines, "docker cgroup driver");
    let (code, lines) = s.doctor(&[]);
    assert_healthy(code, &lines);
    assert!(lines.contains(&"ok    docker cgroup driver  — systemd with mode auto: /dev/char links present, GPUs survive systemctl daemon-reload".to_string()), "{lines:#?}");
    // CDI modes declare the devices to the engine: no hazard, no line.
    std::fs::remove_dir_all(s.host.join("dev/char")).unwrap();
    let mut cfg = std::fs::read_to_string(&s.config).unwrap();
    cfg.push_str("\n[nvidia-container-runtime]\nmode = \"jit-cdi\"\n");
    std::fs::write(&s.config, cfg).unwrap();
    let (code, lines) = s.doctor(&[]);
    assert_healthy(code, &lines);
    assert!(
        !lines.iter().any(|l| l.contains("docker cgroup driver")),
        "{lines:#?}"
    );
}

/// A gated node left from an earlier load of its driver, whose major now belongs to another
/// driver, is named with the driver a container asking for it would reach; the rest are fine.
#[test]
fn stale_gated_device_node() {
    use nix::sys::stat::{Mode, SFlag, makedev, mknod};
    let Some(s) = Setup::new() else { return };
    mock(&s.host, &["--gpus", "2", "--gated"]);
    let (code, lines) = s.doctor_read_only(&[]);
    assert_healthy(code, &lines);
    assert!(
        lines.iter().any(|l| l
            .starts_with("ok    gated devices  — 25 GDS, MOFED, GDRCopy, NVSwitch or IMEX nodes")),
        "{lines:#?}"
    );
    let node = s.host.join("dev/gdrdrv");
    std::fs::remove_file(&node).unwrap();
    mknod(
        &node,
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o666),
        makedev(231, 0),
    )
    .unwrap();
    let (code, lines) = s.doctor_read_only(&[]);
    let h = s.host.display();
    assert_eq!(
        not_ok(&lines),
        [format!(
            "warn  device node /dev/gdrdrv  — {h}/dev/gdrdrv is 231:0 but /proc/devices gives major 231 to infiniband_verbs, infiniband_mad, not gdrdrv: a stale node from an earlier load, which a container asking for NVIDIA_GDRCOPY=enabled gets; fix: rm {h}/dev/gdrdrv, then load gdrdrv again (its install script or udev makes the node)"
        )]
    );
    assert_eq!(code, 0);
}
