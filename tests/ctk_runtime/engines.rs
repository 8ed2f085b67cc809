//! Real engines read what `runtime configure` wrote: a private dockerd started on our daemon.json,
//! and `containerd config dump` on our top-level file plus drop-in.

use super::ctk;
use crate::common::container::*;
use crate::common::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
    let socket = format!("unix://{}/docker.sock", d.display());
    let log = std::fs::File::create(d.join("dockerd.log")).unwrap();
    let mut daemon = DaemonGuard(
        Command::new(DOCKERD)
            .args(["--iptables=false", "--ip6tables=false", "--bridge=none"])
            .args(["--storage-driver=vfs", "-H", &socket])
            .arg("--config-file")
            .arg(&cfg)
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("pid"))
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("NVIDIA_CTK_CONFIG_FILE_PATH", &host.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
        d.join("exec/containerd/containerd.pid"),
    );
    let docker = |args: &[&str]| {
        Command::new(DOCKER)
            .env("DOCKER_CONFIG", d.join("client"))
            .args(["-H", &socket])
            .args(args)
            .output()
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !docker(&["version"]).status.success() {
        let log = std::fs::read_to_string(d.join("dockerd.log")).unwrap_or_default();
        assert!(
            daemon.0.try_wait().unwrap().is_none(),
            "dockerd exited:\n{log}"
        );
        assert!(Instant::now() < deadline, "dockerd did not come up:\n{log}");
        std::thread::sleep(Duration::from_millis(100));
    }
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
    let tar = Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .args(["-c", "."])
        .output()
        .unwrap();
    let mut import = Command::new(DOCKER)
        .env("DOCKER_CONFIG", d.join("client"))
        .args(["-H", &socket, "import", "-", "nvbox-rtcfg"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write;
    import.stdin.take().unwrap().write_all(&tar.stdout).unwrap();
    assert!(import.wait().unwrap().success());
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

/// Stops dockerd (and the containerd it started) on drop, panics included.
struct DaemonGuard(Child, PathBuf);

impl Drop for DaemonGuard {
    fn drop(&mut self) {
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;
        let containerd: Option<i32> = std::fs::read_to_string(&self.1)
            .ok()
            .and_then(|s| s.trim().parse().ok());
        let _ = kill(Pid::from_raw(self.0.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline && self.0.try_wait().ok().flatten().is_none() {
            std::thread::sleep(Duration::from_millis(50));
        }
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
        if let Some(c) = containerd {
            let comm = std::fs::read_to_string(format!("/proc/{c}/comm")).unwrap_or_default();
            if comm.trim() == "containerd" {
                let _ = kill(Pid::from_raw(c), Signal::SIGKILL);
            }
        }
    }
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
