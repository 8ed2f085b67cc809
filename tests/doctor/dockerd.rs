//! A private dockerd with a daemon.json and a PATH of the test's choosing.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::TempDir;
use crate::common::container::{DOCKER, DOCKERD};
/// A private dockerd reading `config`, with exactly `path` as its PATH; stopped on drop.
pub struct Dockerd {
    dir: TempDir,
    child: Child,
}

impl Dockerd {
    pub fn start(config: &Path, path: &str) -> Dockerd {
        let dir = TempDir::new("doctor-dockerd");
        let d = dir.path();
        let socket = format!("unix://{}/docker.sock", d.display());
        let log = std::fs::File::create(d.join("dockerd.log")).unwrap();
        let child = Command::new(DOCKERD)
            .args(["--iptables=false", "--ip6tables=false", "--bridge=none"])
            .args(["--storage-driver=vfs", "-H", &socket])
            .arg("--config-file")
            .arg(config)
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("pid"))
            .env_clear()
            .env("PATH", path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let daemon = Dockerd { dir, child };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let up = Command::new(DOCKER)
                .env("DOCKER_CONFIG", daemon.dir.path().join("client"))
                .args(["-H", &socket, "version"])
                .output()
                .unwrap();
            if up.status.success() {
                return daemon;
            }
            let log =
                std::fs::read_to_string(daemon.dir.path().join("dockerd.log")).unwrap_or_default();
            assert!(Instant::now() < deadline, "dockerd did not come up:\n{log}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;
        let containerd: Option<i32> =
            std::fs::read_to_string(self.dir.path().join("exec/containerd/containerd.pid"))
                .ok()
                .and_then(|t| t.trim().parse().ok());
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline && self.child.try_wait().ok().flatten().is_none() {
            std::thread::sleep(Duration::from_millis(50));
        }
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if let Some(c) = containerd {
            let comm = std::fs::read_to_string(format!("/proc/{c}/comm")).unwrap_or_default();
            if comm.trim() == "containerd" {
                let _ = kill(Pid::from_raw(c), Signal::SIGKILL);
            }
        }
    }
}
