//! What a hostile rootfs aims at, and how a test proves it was not hit: a scratch "host" tree
//! per case (a directory with a sentinel, a fake `/etc/ld.so.cache` and `ld.so.conf.d`, a
//! character device node), the real host's sensitive directories, and the host's mount table,
//! each snapshotted before and after. Trees are walked through fds, so paths longer than
//! PATH_MAX in a rootfs do not stop the walk.

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::fcntl::{OFlag, openat};
use nix::sys::stat::{Mode, SFlag, fstat};
use nix::sys::statfs::{PROC_SUPER_MAGIC, fstatfs};

/// The scratch host tree one case aims its links at.
pub struct Canaries {
    pub base: PathBuf,
}

impl Canaries {
    pub fn new(base: &Path) -> Canaries {
        let c = Canaries {
            base: base.to_path_buf(),
        };
        std::fs::create_dir_all(c.dir()).unwrap();
        std::fs::write(c.dir().join("sentinel"), "keep").unwrap();
        std::fs::create_dir_all(c.etc().join("ld.so.conf.d")).unwrap();
        std::fs::write(c.cache(), "host-cache").unwrap();
        std::fs::write(c.etc().join("ld.so.conf"), "include host\n").unwrap();
        std::fs::write(c.etc().join("ld.so.conf.d/host.conf"), "/host\n").unwrap();
        std::fs::create_dir_all(c.dev()).unwrap();
        let st = Command::new("mknod")
            .arg(c.node())
            .args(["c", "1", "3"])
            .status()
            .unwrap();
        assert!(st.success(), "mknod {}", c.node().display());
        std::fs::set_permissions(
            c.node(),
            std::os::unix::fs::PermissionsExt::from_mode(0o666),
        )
        .unwrap();
        c
    }

    /// A host directory holding `sentinel`.
    pub fn dir(&self) -> PathBuf {
        self.base.join("dir")
    }

    pub fn etc(&self) -> PathBuf {
        self.base.join("etc")
    }

    /// The host's (fake) loader cache.
    pub fn cache(&self) -> PathBuf {
        self.etc().join("ld.so.cache")
    }

    pub fn dev(&self) -> PathBuf {
        self.base.join("dev")
    }

    /// A host character device (a copy of /dev/null's numbers).
    pub fn node(&self) -> PathBuf {
        self.dev().join("null")
    }

    /// `s` with every `@H` replaced by this tree's path.
    pub fn fill(&self, s: &str) -> String {
        s.replace("@H", self.base.to_str().unwrap())
    }

    pub fn snapshot(&self) -> BTreeMap<String, String> {
        snapshot_tree(&self.base, true)
    }
}

/// Every entry under `dir`: kind, mode, owner, size, device numbers, link target, and with
/// `times` the modification and change times (a chmod or a write through a link shows there).
/// Procfs mounts are not entered.
pub fn snapshot_tree(dir: &Path, times: bool) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Ok(fd) = nix::fcntl::open(
        dir,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) else {
        out.insert(String::new(), "unreadable".into());
        return out;
    };
    walk(&fd, "", times, &mut out, 0);
    out
}

fn walk(dir: &OwnedFd, rel: &str, times: bool, out: &mut BTreeMap<String, String>, depth: u32) {
    if depth > 64 {
        out.insert(rel.to_owned(), "too deep".into());
        return;
    }
    let Ok(entries) = std::fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd())) else {
        out.insert(rel.to_owned(), "unlistable".into());
        return;
    };
    let mut names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in names {
        let path = format!("{rel}/{name}");
        let Ok(fd) = openat(
            dir,
            name.as_str(),
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) else {
            out.insert(path, "unopenable".into());
            continue;
        };
        let st = fstat(&fd).unwrap();
        let kind = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits());
        let mut line = format!(
            "{:o} {}:{} size={}",
            st.st_mode, st.st_uid, st.st_gid, st.st_size
        );
        if times {
            line.push_str(&format!(
                " m={}.{} c={}.{}",
                st.st_mtime, st.st_mtime_nsec, st.st_ctime, st.st_ctime_nsec
            ));
        }
        if kind == SFlag::S_IFCHR || kind == SFlag::S_IFBLK {
            line.push_str(&format!(" rdev={:x}", st.st_rdev));
        }
        if kind == SFlag::S_IFLNK {
            let t = nix::fcntl::readlinkat(dir, name.as_str()).unwrap_or_default();
            line.push_str(&format!(" -> {}", t.to_string_lossy()));
        }
        if kind == SFlag::S_IFREG && st.st_size <= 4096 {
            let data = std::fs::read(format!("/proc/self/fd/{}", fd.as_raw_fd()));
            line.push_str(&format!(" data={:?}", data.map(|d| hash(&d)).ok()));
        }
        out.insert(path.clone(), line);
        if kind == SFlag::S_IFDIR {
            let sub = openat(
                dir,
                name.as_str(),
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            );
            if let Ok(sub) = sub
                && !fstatfs(&sub).is_ok_and(|s| s.filesystem_type() == PROC_SUPER_MAGIC)
            {
                walk(&sub, &path, times, out, depth + 1);
            }
        }
    }
}

fn hash(data: &[u8]) -> u64 {
    // FNV-1a: enough to see that contents changed.
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// The names of a host directory a leak would land in; `filter` keeps only names that the
/// toolkit would write (the directory is shared with the rest of the system).
fn names(dir: &str, filter: bool) -> BTreeSet<String> {
    const WORDS: &[&str] = &[
        "nvidia", "cuda", "nvcr", "compat", "nvbox", "libnv", "ld.so",
    ];
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !filter || WORDS.iter().any(|w| n.contains(w)))
        .map(|n| format!("{dir}/{n}"))
        .collect()
}

/// The real host: its top-level names and /etc, the places a driver would be injected to, the
/// loader cache, and the mount points under sensitive prefixes or our own scratch paths.
#[derive(PartialEq, Eq, Debug)]
pub struct HostState {
    entries: BTreeSet<String>,
    cache: Option<(i64, i64, u64)>,
    mounts: BTreeSet<String>,
}

pub fn host_state() -> HostState {
    let mut entries = BTreeSet::new();
    for (dir, filter) in [
        ("/", false),
        ("/etc", false),
        ("/etc/ld.so.conf.d", false),
        ("/etc/nvidia", false),
        ("/usr/lib", true),
        ("/usr/lib/x86_64-linux-gnu", true),
        ("/usr/lib64", true),
        ("/usr/bin", true),
        ("/usr/local", true),
        ("/usr/local/cuda", false),
        ("/dev", true),
        ("/run", true),
        ("/proc/driver", false),
    ] {
        entries.extend(names(dir, filter));
    }
    let cache = std::fs::symlink_metadata("/etc/ld.so.cache")
        .ok()
        .map(|m| (m.mtime(), m.ctime(), m.ino()));
    HostState {
        entries,
        cache,
        mounts: sensitive_mounts(),
    }
}

/// Mount points in the host namespace that a leak would make: under our own scratch
/// directories (a rootfs or canary tree mounted on the host instead of in a container), or
/// under the system paths the toolkit targets.
fn sensitive_mounts() -> BTreeSet<String> {
    let pid = std::process::id().to_string();
    let tmp = std::env::temp_dir();
    let tmp = tmp.to_str().unwrap();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
        .filter(|m| {
            let ours = m.starts_with(tmp) && m.contains(&format!("-{pid}-"));
            let system = [
                "/etc",
                "/usr",
                "/lib",
                "/bin",
                "/dev/nvidia",
                "/proc/driver",
            ]
            .iter()
            .any(|p| m == p || m.starts_with(&format!("{p}/")))
                || m.starts_with("/run/nvidia");
            ours || system
        })
        .collect()
}

/// What changed between two host states, as lines.
pub fn host_diff(before: &HostState, after: &HostState) -> Vec<String> {
    let mut out = Vec::new();
    for e in after.entries.difference(&before.entries) {
        out.push(format!("host entry created: {e}"));
    }
    for e in before.entries.difference(&after.entries) {
        out.push(format!("host entry removed: {e}"));
    }
    if before.cache != after.cache {
        out.push("host /etc/ld.so.cache changed".into());
    }
    for m in after.mounts.difference(&before.mounts) {
        out.push(format!("host mount added: {m}"));
    }
    out
}

/// Differences between two tree snapshots, as lines.
pub fn tree_diff(
    what: &str,
    before: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (k, v) in after {
        match before.get(k) {
            None => out.push(format!("{what}: created {k} ({v})")),
            Some(b) if b != v => out.push(format!("{what}: changed {k} ({b} => {v})")),
            _ => {}
        }
    }
    for k in before.keys().filter(|k| !after.contains_key(*k)) {
        out.push(format!("{what}: removed {k}"));
    }
    out
}
