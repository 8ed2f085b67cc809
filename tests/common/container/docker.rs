//! A private dockerd for the e2e tests: its own data root, exec root and socket under a temp
//! dir, no networking of its own, stopped (with the containerd it starts) on drop.

use super::{DOCKER, DOCKERD, Host, applet_dir, text};
use crate::common::TempDir;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Where a private dockerd gets its daemon.json.
pub enum DaemonConfig<'a> {
    /// None: dockerd's built-in defaults (`--config-file` pointing at a file that is absent
    /// would be an error, so no flag at all).
    Defaults,
    /// A file someone else wrote (e.g. `nvidia-ctk runtime configure`).
    File(&'a Path),
    /// Contents to write into the daemon's own directory.
    Json(&'a serde_json::Value),
}

/// PATH for dockerd when the applets must not be on it.
pub const SYSTEM_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A private dockerd (and the containerd it starts), stopped on drop, panics included.
pub struct Dockerd {
    dir: TempDir,
    child: Child,
    pub socket: String,
}

impl Dockerd {
    /// PATH starts with the applet directory: dockerd registers `--gpus` only if it finds
    /// nvidia-container-runtime-hook at startup, and hands its own environment to the hook.
    pub fn start(host: &Host) -> Dockerd {
        let path = format!("{}:{SYSTEM_PATH}", applet_dir().display());
        Dockerd::start_with(Some(&host.config), DaemonConfig::Defaults, &path)
    }

    /// dockerd with `NVIDIA_CTK_CONFIG_FILE_PATH=config` (when given) and exactly `path` as its
    /// PATH (its environment is what the runtime and the hook see).
    pub fn start_with(config: Option<&Path>, daemon: DaemonConfig, path: &str) -> Dockerd {
        let dir = TempDir::new("dockerd");
        let d = dir.path();
        let socket = format!("unix://{}/docker.sock", d.display());
        let log = std::fs::File::create(d.join("dockerd.log")).unwrap();
        let json_file = d.join("daemon.json");
        let config_file = match daemon {
            DaemonConfig::Defaults => None,
            DaemonConfig::File(f) => Some(f.to_path_buf()),
            DaemonConfig::Json(v) => {
                std::fs::write(&json_file, serde_json::to_vec_pretty(v).unwrap()).unwrap();
                Some(json_file)
            }
        };
        let mut cmd = Command::new(DOCKERD);
        if let Some(f) = &config_file {
            cmd.arg("--config-file").arg(f);
        }
        cmd.env_clear();
        if let Some(c) = config {
            cmd.env("NVIDIA_CTK_CONFIG_FILE_PATH", c);
        }
        let child = cmd
            .args(["--iptables=false", "--ip6tables=false", "--bridge=none"])
            .args(["--storage-driver=vfs", "-H", &socket])
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("pid"))
            .env("PATH", path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let daemon = Dockerd { dir, child, socket };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if daemon.docker(&["version"]).status.success() {
                return daemon;
            }
            assert!(
                Instant::now() < deadline,
                "dockerd did not come up:\n{}",
                daemon.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }

    /// The client's own config directory (`DOCKER_CONFIG`), so the host's is never read.
    pub fn client_dir(&self) -> PathBuf {
        self.dir.path().join("client")
    }

    pub fn command(&self) -> Command {
        let mut c = Command::new(DOCKER);
        c.env("DOCKER_CONFIG", self.client_dir());
        c.args(["-H", &self.socket]);
        c
    }

    pub fn docker(&self, args: &[&str]) -> Output {
        self.command().args(args).output().unwrap()
    }

    /// `tar -C rootfs -c . | docker import - NAME`.
    pub fn import(&self, rootfs: &Path, name: &str) {
        let mut tar = Command::new("tar")
            .arg("-C")
            .arg(rootfs)
            .args(["-c", "."])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = self
            .command()
            .args(["import", "-", name])
            .stdin(tar.stdout.take().unwrap())
            .output()
            .unwrap();
        assert!(tar.wait().unwrap().success(), "tar of {}", rootfs.display());
        assert!(out.status.success(), "docker import: {}", text(&out.stderr));
    }

    fn containerd_pid(&self) -> Option<i32> {
        let f = self.dir.path().join("exec/containerd/containerd.pid");
        std::fs::read_to_string(f).ok()?.trim().parse().ok()
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;
        let containerd = self.containerd_pid();
        let pid = Pid::from_raw(self.child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // dockerd stops its containerd on a clean exit; after a forced one it would linger.
        if let Some(c) = containerd {
            let comm = std::fs::read_to_string(format!("/proc/{c}/comm")).unwrap_or_default();
            if comm.trim() == "containerd" {
                let _ = kill(Pid::from_raw(c), Signal::SIGKILL);
            }
        }
        // vfs layers of the data root are plain directories: TempDir removes them.
    }
}
