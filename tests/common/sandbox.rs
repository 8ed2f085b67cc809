//! A process in a private mount namespace holding a tmpfs, for tests that configure a rootfs
//! without a container runtime: mounts made there vanish with it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A process in its own mount namespace with a tmpfs at `root`; killed on drop.
pub struct Sandbox {
    child: Child,
    pub root: PathBuf,
}

impl Sandbox {
    pub fn new(root: &Path, seed: &str) -> Sandbox {
        std::fs::create_dir_all(root).unwrap();
        let script = format!(
            "mount -t tmpfs tmpfs {r} && cd {r} && {seed} && echo ready && exec sleep 600",
            r = root.display()
        );
        let mut child = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        use std::io::BufRead;
        std::io::BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "sandbox seed failed: {seed}");
        Sandbox {
            child,
            root: root.to_path_buf(),
        }
    }

    pub fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// Mount points in the sandbox's namespace.
    pub fn mounts(&self) -> Vec<String> {
        std::fs::read_to_string(format!("/proc/{}/mountinfo", self.child.id()))
            .unwrap()
            .lines()
            .map(|l| l.split(' ').nth(4).unwrap().to_owned())
            .collect()
    }

    /// Run a shell command inside the namespace.
    pub fn sh(&self, cmd: &str) -> String {
        let out = Command::new("nsenter")
            .args(["-t", &self.pid(), "-m", "sh", "-c", cmd])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Sandbox {
    /// A file's bytes as the namespace sees it.
    pub fn read(&self, path: &Path) -> Vec<u8> {
        let out = Command::new("nsenter")
            .args(["-t", &self.pid(), "-m", "cat"])
            .arg(path)
            .output()
            .unwrap();
        out.stdout
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
