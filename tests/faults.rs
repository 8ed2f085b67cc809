//! Faults and load: the prestart hook SIGKILLed mid-configure (parent and forked child), a full
//! filesystem under every file we rewrite (ld.so.cache, config.json, daemon.json, config.toml),
//! 64 concurrent GPU containers through runc + the shim and through dockerd, and 32 concurrent
//! `nvidia-ctk runtime configure` runs on one file.

mod common;
#[path = "faults/configure.rs"]
mod configure;
#[path = "faults/fullfs.rs"]
mod fullfs;
#[path = "faults/kill.rs"]
mod kill;
#[path = "faults/load.rs"]
mod load;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

/// Tests that mount on the host take this, so the kill rounds can compare the host's whole
/// mount table before and after without another test's tmpfs showing up as a leak.
static HOST_MOUNTS: Mutex<()> = Mutex::new(());

pub fn hold_host_mounts() -> MutexGuard<'static, ()> {
    HOST_MOUNTS.lock().unwrap_or_else(|e| e.into_inner())
}

/// One load at a time, and no kill rounds under it: two loads at once on a small machine only
/// measure each other, and the kill delays are spread over a runtime measured without load.
static LOAD: Mutex<()> = Mutex::new(());

pub fn hold_load() -> MutexGuard<'static, ()> {
    LOAD.lock().unwrap_or_else(|e| e.into_inner())
}

/// The host's mounts as `mount point|fs type|source`, sorted (mount ids left out: they are
/// not what a leak is about).
pub fn host_mounts() -> Vec<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mut v: Vec<String> = text
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let sep = f.iter().position(|x| *x == "-").unwrap_or(f.len() - 1);
            format!(
                "{}|{}|{}",
                f[4],
                f.get(sep + 1).unwrap_or(&""),
                f.get(sep + 2).unwrap_or(&"")
            )
        })
        .collect();
    v.sort();
    v
}

/// xorshift64*: enough to spread kill delays; the seed is printed so a failure can be replayed
/// with NVBOX_FAULTS_SEED.
pub struct Rng(u64);

impl Rng {
    pub fn from_time(tag: &str) -> Rng {
        let seed = std::env::var("NVBOX_FAULTS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            })
            | 1;
        eprintln!("{tag}: seed {seed} (NVBOX_FAULTS_SEED={seed} replays it)");
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [0, n).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }
}

/// A tmpfs of `size` mounted at `dir` on the host, unmounted (lazily) on drop.
pub struct SmallFs {
    pub dir: PathBuf,
}

impl SmallFs {
    pub fn mount(dir: &Path, size: &str) -> SmallFs {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mount tmpfs on {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        SmallFs {
            dir: dir.to_path_buf(),
        }
    }

    /// Write a filler file until the filesystem refuses another byte; returns its path.
    pub fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.dir.join(".filler");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        for chunk in [1 << 20, 4096, 1] {
            let buf = vec![0x5a_u8; chunk];
            while f.write_all(&buf).is_ok() {}
        }
        let probe = std::fs::write(self.dir.join(".probe"), b"x");
        assert!(probe.is_err(), "{} is not full", self.dir.display());
        let _ = std::fs::remove_file(self.dir.join(".probe"));
        path
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// The non-empty lines of a stderr: a one-line error has exactly one.
pub fn error_lines(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| !l.trim().is_empty()).collect()
}
