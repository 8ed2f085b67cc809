//! Real engines read what `runtime configure` wrote: a private dockerd started on our daemon.json,
//! and `containerd config dump` on our top-level file plus drop-in.

use super::ctk;
use crate::common::container::*;
use crate::common::*;
use std::path::Path;
use std::process::Command;

/// A private dockerd reading the daemon.json we wrote lists our runtime as the default, and a
/// plain `docker run` asking for GPU 1 of a simulated host gets it through that runtime.
#[test]
fn real_dockerd_lists_the_configured_runtime() {
    if !have_prerequisites(&[DOCKERD, DOCKER, BUSYBOX]) {
        return;
    }
    let host = shared_host(&["--gpus", "2"]);
    let tmp = TempDir::new("rtcfg-dockerd");
    let d = tmp.path();
    let cfg = d.join("daemon.json");
    let runtime = applet_dir().join("nvidia-container-runtime");
    std::fs::write(
        &cfg,
        "{\"debug\": false, \"features\": {\"buildkit\": false}}",
    )
    .unwrap();
    let out = ctk(&[
        "runtime",
        "configure",
        &format!("--config={}", cfg.display()),
        &format!("--nvidia-runtime-path={}", runtime.display()),
        "--set-as-default",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let daemon = Dockerd::start_with(Some(&host.config), DaemonConfig::File(&cfg), SYSTEM_PATH);
    let docker = |args: &[&str]| daemon.docker(args);
    let out = docker(&["info", "--format", "{{json .Runtimes}}"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let runtimes: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        runtimes["nvidia"]["path"].as_str(),
        Some(runtime.to_str().unwrap()),
        "{runtimes}"
    );
    let out = docker(&["info", "--format", "{{.DefaultRuntime}}"]);
    assert_eq!(stdout(&out).trim(), "nvidia");

    // The node as configured runs a GPU container: no --runtime flag, the default is ours.
    let rootfs = d.join("rootfs");
    make_rootfs(&rootfs, true);
    daemon.import(&rootfs, "nvbox-rtcfg");
    let out = docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-e",
        "NVIDIA_VISIBLE_DEVICES=1",
        "nvbox-rtcfg",
        "sh",
        "-c",
        "stat -c '%t:%T' /dev/nvidia1; ls /dev | grep -c '^nvidia[0-9]'",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "c3:1\n1\n");
}

/// containerd itself merges the top-level file and our drop-in: `config dump` shows the runtime.
#[test]
fn real_containerd_reads_the_drop_in_through_imports() {
    if !Path::new(CONTAINERD).exists() {
        skip_or_fail(&format!(
            "{CONTAINERD} is not installed (tests/run.sh installs it)"
        ));
        return;
    }
    let tmp = TempDir::new("rtcfg-containerd");
    let d = tmp.path();
    let top = d.join("config.toml");
    std::fs::write(
        &top,
        format!(
            "# ours\nversion = 2\nroot = \"{0}/root\"\nstate = \"{0}/state\"\n\n\
             [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]\n  \
             SystemdCgroup = true # kept\n",
            d.display()
        ),
    )
    .unwrap();
    let out = ctk(&[
        "runtime",
        "configure",
        "--runtime=containerd",
        &format!("--config={}", top.display()),
        &format!("--drop-in-config={}/conf.d/99-nvidia.toml", d.display()),
        "--set-as-default",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        std::fs::read_to_string(&top)
            .unwrap()
            .contains("SystemdCgroup = true # kept")
    );
    let dump = Command::new(CONTAINERD)
        .arg("--config")
        .arg(&top)
        .args(["config", "dump"])
        .output()
        .unwrap();
    assert!(
        dump.status.success(),
        "containerd config dump: {}",
        stderr(&dump)
    );
    let cfg: toml::Table = stdout(&dump).parse().unwrap();
    let cri = &cfg["plugins"]["io.containerd.grpc.v1.cri"]["containerd"];
    assert_eq!(cri["default_runtime_name"].as_str(), Some("nvidia"));
    let nvidia = &cri["runtimes"]["nvidia"];
    assert_eq!(
        nvidia["runtime_type"].as_str(),
        Some("io.containerd.runc.v2")
    );
    assert_eq!(
        nvidia["options"]["BinaryName"].as_str(),
        Some("/usr/bin/nvidia-container-runtime")
    );
    assert_eq!(nvidia["options"]["SystemdCgroup"].as_bool(), Some(true));
    assert!(cri["runtimes"].get("runc").is_some(), "runc kept");
    let imports = cfg["imports"].as_array().unwrap();
    assert!(
        imports
            .iter()
            .any(|i| i.as_str().unwrap().ends_with("conf.d/99-nvidia.toml")),
        "{imports:?}"
    );
}
