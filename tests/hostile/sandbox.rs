//! A private mount namespace per case (its mounts die with it), and a view of a rootfs from
//! the test process that resolves paths the way the container will: in the root, through the
//! namespace that holds the rootfs's mounts.

use std::io::BufRead;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat};

/// `sleep` in its own mount namespace (private propagation) after `setup` ran there, with the
/// host's driver params faked by a tmpfs on /proc/driver; killed on drop.
pub struct Sandbox {
    child: Child,
}

impl Sandbox {
    pub fn new(setup: &str) -> Result<Sandbox, String> {
        let script = format!(
            "set -e; mount -t tmpfs tmpfs /proc/driver; mkdir /proc/driver/nvidia; \
             printf 'ResmanDebugLevel: 4294967295\\nModifyDeviceFiles: 1\\n' > /proc/driver/nvidia/params; \
             {setup}\necho ready; exec sleep 600"
        );
        let mut child = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        let _ = std::io::BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line);
        if line.trim() != "ready" {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            return Err(format!(
                "sandbox setup failed: {setup}: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(Sandbox { child })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Mount points of the namespace.
    pub fn mounts(&self) -> Vec<String> {
        mount_points(self.pid())
    }

    /// `rootfs` as seen in the namespace.
    pub fn path(&self, rootfs: &Path) -> PathBuf {
        let rel = rootfs.strip_prefix("/").unwrap();
        PathBuf::from(format!("/proc/{}/root", self.pid())).join(rel)
    }

    /// A command run inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.args(["-t", &self.pid().to_string(), "-m", "--", program]);
        c
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn mount_points(pid: u32) -> Vec<String> {
    std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
        .collect()
}

/// A rootfs seen from the test, every lookup confined to it as the kernel confines ours.
pub struct View {
    fd: OwnedFd,
}

pub struct Entry {
    pub stat: FileStat,
    pub fd: OwnedFd,
}

impl Entry {
    pub fn kind(&self) -> SFlag {
        SFlag::from_bits_truncate(self.stat.st_mode & SFlag::S_IFMT.bits())
    }

    /// The contents of a regular file (never opens anything else).
    pub fn read(&self) -> Option<Vec<u8>> {
        if self.kind() != SFlag::S_IFREG {
            return None;
        }
        std::fs::read(format!("/proc/self/fd/{}", self.fd.as_raw_fd())).ok()
    }
}

impl View {
    pub fn open(path: &Path) -> View {
        let fd = nix::fcntl::open(
            path,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
        View { fd }
    }

    fn resolve(&self, abs: &str, flags: OFlag) -> Result<OwnedFd, Errno> {
        let rel = abs.trim_start_matches('/');
        let rel = if rel.is_empty() { "." } else { rel };
        let how = OpenHow::new()
            .flags(flags | OFlag::O_PATH | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        let mut tries = 0;
        loop {
            match openat2(&self.fd, rel, how) {
                Err(Errno::EAGAIN) if tries < 100 => tries += 1,
                r => return r,
            }
        }
    }

    /// What `abs` names, symlinks followed in the root.
    pub fn get(&self, abs: &str) -> Option<Entry> {
        let fd = self.resolve(abs, OFlag::empty()).ok()?;
        Some(Entry {
            stat: fstat(&fd).ok()?,
            fd,
        })
    }

    /// The target of the symlink `abs` (its parent resolved in the root).
    pub fn readlink(&self, abs: &str) -> Option<String> {
        let (dir, name) = abs.rsplit_once('/')?;
        let dir = self.resolve(if dir.is_empty() { "/" } else { dir }, OFlag::O_DIRECTORY);
        let t = nix::fcntl::readlinkat(&dir.ok()?, name).ok()?;
        Some(t.to_string_lossy().into_owned())
    }

    /// Names in the directory `abs`.
    pub fn list(&self, abs: &str) -> Vec<String> {
        let Ok(fd) = self.resolve(abs, OFlag::O_DIRECTORY) else {
            return Vec::new();
        };
        let mut names: Vec<String> = std::fs::read_dir(format!("/proc/self/fd/{}", fd.as_raw_fd()))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    pub fn is_file(&self, abs: &str) -> bool {
        self.get(abs).is_some_and(|e| e.kind() == SFlag::S_IFREG)
    }

    pub fn contains(&self, abs: &str, needle: &[u8]) -> bool {
        self.get(abs)
            .and_then(|e| e.read())
            .is_some_and(|d| d.windows(needle.len()).any(|w| w == needle))
    }
}
