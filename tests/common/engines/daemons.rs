//! Private engines whose OCI runtime is the shim: a dockerd started with a daemon.json, a
//! containerd with its own root, state and socket, and podman with its own storage. Each reads
//! the shim's config.toml through NVIDIA_CTK_CONFIG_FILE_PATH handed down to the runtime.

use super::{CONMON, CTR, PODMAN, shim_env_path, shim_path};
use crate::common::TempDir;
use crate::common::container::{CONTAINERD, text};
use crate::common::container::{DaemonConfig, Dockerd};
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// `{"runtimes": {"nvidia": {"path": <shim>}}}` plus `default-runtime` when given.
pub fn daemon_json(default_runtime: Option<&str>) -> Value {
    let mut v = json!({"runtimes": {"nvidia": {"path": shim_path()}}});
    if let Some(d) = default_runtime {
        v["default-runtime"] = json!(d);
    }
    v
}

/// Stops a daemon: SIGTERM, up to 20 s, then SIGKILL.
fn stop(child: &mut Child) {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if child.try_wait().ok().flatten().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn log_tail(path: &Path) -> String {
    let log = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

fn wait_until(what: &str, log: &Path, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready() {
        assert!(
            Instant::now() < deadline,
            "{what} did not come up:\n{}",
            log_tail(log)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A private dockerd for the shim: a daemon.json registering it, its env carrying the shim's
/// config and the applets on PATH.
pub fn shim_dockerd(shim_config: &Path, daemon_json: &Value) -> Dockerd {
    Dockerd::start_with(
        Some(shim_config),
        DaemonConfig::Json(daemon_json),
        &shim_env_path(),
    )
}

/// `tar -C rootfs -c .` into the stdin of `cmd`.
fn pipe_tar(rootfs: &Path, cmd: &mut Command) -> Output {
    let mut tar = Command::new("tar")
        .arg("-C")
        .arg(rootfs)
        .args(["-c", "."])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = cmd.stdin(tar.stdout.take().unwrap()).output().unwrap();
    assert!(tar.wait().unwrap().success(), "tar of {}", rootfs.display());
    out
}

/// A private containerd: its own root, state, socket, and no CRI plugin.
pub struct Containerd {
    dir: TempDir,
    child: Child,
    pub socket: String,
}

impl Containerd {
    pub fn start(shim_config: &Path) -> Containerd {
        let dir = TempDir::new("containerd");
        let d = dir.path();
        let socket = d.join("containerd.sock").display().to_string();
        let config = format!(
            "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{socket}\"\n[ttrpc]\n  address = \"{socket}.ttrpc\"\n",
            root = d.join("root").display(),
            state = d.join("state").display(),
        );
        std::fs::write(d.join("config.toml"), config).unwrap();
        let log = std::fs::File::create(d.join("containerd.log")).unwrap();
        let child = Command::new(CONTAINERD)
            .arg("--config")
            .arg(d.join("config.toml"))
            .env_clear()
            .env("PATH", shim_env_path())
            .env("NVIDIA_CTK_CONFIG_FILE_PATH", shim_config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let daemon = Containerd { dir, child, socket };
        let log = daemon.dir.path().join("containerd.log");
        wait_until("containerd", &log, || {
            daemon
                .ctr()
                .arg("version")
                .output()
                .unwrap()
                .status
                .success()
        });
        daemon
    }

    pub fn ctr(&self) -> Command {
        let mut c = Command::new(CTR);
        c.args(["--address", &self.socket]);
        c
    }

    /// The end of containerd's log, for failure messages.
    pub fn log(&self) -> String {
        log_tail(&self.dir.path().join("containerd.log"))
    }

    /// `ctr run --rm --rootfs` of a busybox rootfs with the shim as the runc binary; the
    /// container's cgroups are mounted (as Docker does) so the probe sees its device cgroup.
    pub fn run_shim(&self, rootfs: &Path, id: &str, env: &[&str], script: &str) -> Output {
        let mut c = self.ctr();
        c.args(["run", "--rm", "--rootfs", "--runc-binary"])
            .arg(shim_path())
            .args([
                "--mount",
                "type=cgroup,src=cgroup,dst=/sys/fs/cgroup,options=ro:nosuid:noexec:nodev",
            ]);
        for e in env {
            c.args(["--env", e]);
        }
        c.arg(rootfs).args([id, "/bin/sh", "-c", script]);
        c.stdin(Stdio::null()).output().unwrap()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// podman with its own storage, cgroupfs, vfs and file events. conmon runs the runtime with
/// only the variables containers.conf lists, so the shim's config path goes there.
pub struct Podman {
    dir: TempDir,
}

impl Podman {
    pub fn new(shim_config: &Path) -> Podman {
        let dir = TempDir::new("podman");
        let conf = format!(
            "[engine]\nconmon_env_vars = [\"PATH={}\", \"NVIDIA_CTK_CONFIG_FILE_PATH={}\"]\n",
            shim_env_path(),
            shim_config.display()
        );
        std::fs::write(dir.path().join("containers.conf"), conf).unwrap();
        Podman { dir }
    }

    pub fn command(&self) -> Command {
        let d = self.dir.path();
        let mut c = Command::new(PODMAN);
        c.env("CONTAINERS_CONF", d.join("containers.conf"))
            .env("PATH", shim_env_path())
            .arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("runroot"))
            .args([
                "--cgroup-manager=cgroupfs",
                "--storage-driver=vfs",
                "--events-backend=file",
            ])
            .arg("--tmpdir")
            .arg(d.join("tmp"));
        c
    }

    /// `tar -C rootfs -c . | podman import - NAME`.
    pub fn import(&self, rootfs: &Path, name: &str) {
        let out = pipe_tar(rootfs, self.command().args(["import", "-", name]));
        assert!(out.status.success(), "podman import: {}", text(&out.stderr));
    }

    /// `podman --runtime <shim> run --rm` with the limits this machine lets runc set.
    pub fn run_shim(&self, image: &str, env: &[&str], script: &str) -> Output {
        let mut c = self.command();
        c.arg("--runtime").arg(shim_path()).args([
            "run",
            "--rm",
            "--network",
            "none",
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
        ]);
        for e in env {
            c.args(["-e", e]);
        }
        c.args([image, "sh", "-c", script]);
        c.stdin(Stdio::null()).output().unwrap()
    }
}

/// Is conmon there too (podman needs it)?
pub fn have_conmon() -> bool {
    Path::new(CONMON).exists()
}
