//! How engine config files are read and replaced: a missing file reads as empty, a write is
//! atomic (temp file in the same directory, fsync, rename, directory fsync) and keeps the old
//! file's mode and owner, and concurrent `runtime configure` runs are serialised by an flock on a
//! lock file beside the config (upstream truncated in place and did not lock, so two runs or a
//! crash mid-write could leave a torn daemon.json).

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use nix::fcntl::{Flock, FlockArg};

/// The file's text, or None when it does not exist. A directory is an error.
pub fn read_optional(path: &Path) -> Result<Option<String>> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => bail!("config file is a directory: {}", path.display()),
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(anyhow!("unable to read config {}: {e}", path.display())),
    }
    std::fs::read_to_string(path)
        .map(Some)
        .with_context(|| format!("unable to read config {}", path.display()))
}

/// Where a write to `path` lands: a symlinked config (common for daemon.json on managed hosts) is
/// replaced at its target, so the link survives.
fn resolve_target(path: &Path) -> PathBuf {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => {
            std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
        }
        _ => path.to_path_buf(),
    }
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Create the parent directory (0755, as upstream) when missing.
pub fn create_parent(path: &Path) -> Result<()> {
    let dir = parent_of(path);
    DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .with_context(|| format!("unable to create directory {}", dir.display()))
}

/// Replace `path` with `bytes` atomically; a new file gets mode 0644.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let target = resolve_target(path);
    create_parent(&target)?;
    let dir = parent_of(&target);
    let old = std::fs::metadata(&target).ok();
    let mode = old.as_ref().map_or(0o644, |m| m.mode() & 0o7777);
    let name = target
        .file_name()
        .map_or_else(|| "config".into(), |n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(".{name}.nvbox-{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        if let Some(m) = &old {
            std::os::unix::fs::fchown(&f, Some(m.uid()), Some(m.gid()))?;
            // The umask may have narrowed the mode given to open.
            f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))?;
        }
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &target)?;
        File::open(dir)?.sync_all()
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        anyhow!("unable to write config {}: {e}", target.display())
    })
}

/// Delete `path`; true when there was a file to delete.
pub fn remove(path: &Path) -> Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(anyhow!("unable to remove {}: {e}", path.display())),
    }
}

/// An exclusive lock held until dropped.
pub struct Lock {
    _flock: Flock<File>,
    pub path: PathBuf,
}

/// The lock file for `config`: `.<name>.lock` in the same directory. It is never deleted:
/// unlinking a lock file lets a waiter lock an inode that a newcomer no longer sees.
pub fn lock_path(config: &Path) -> PathBuf {
    let name = config
        .file_name()
        .map_or_else(|| "config".into(), |n| n.to_string_lossy().into_owned());
    parent_of(config).join(format!(".{name}.lock"))
}

/// Block until this process holds the lock for `config`. The lock sits beside the file the
/// write will replace, so runs naming a symlinked config and runs naming its target share it.
pub fn lock(config: &Path) -> Result<Lock> {
    let path = lock_path(&resolve_target(config));
    create_parent(&path)?;
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("unable to open lock file {}", path.display()))?;
    let flock = Flock::lock(f, FlockArg::LockExclusive)
        .map_err(|(_, e)| anyhow!("unable to lock {}: {e}", path.display()))?;
    Ok(Lock {
        _flock: flock,
        path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("nvbox-engines-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn write_keeps_mode_leaves_no_temp_and_follows_links() {
        let d = scratch("write");
        let real = d.join("real.json");
        std::fs::write(&real, "old").unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o640)).unwrap();
        let link = d.join("daemon.json");
        std::os::unix::fs::symlink("real.json", &link).unwrap();
        write_atomic(&link, b"new").unwrap();
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(std::fs::read_to_string(&real).unwrap(), "new");
        let mode = std::fs::metadata(&real).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o640);
        let fresh = d.join("sub/dir/new.toml");
        write_atomic(&fresh, b"x").unwrap();
        let mode = std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o644 & !current_umask());
        let names: Vec<String> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(!names.iter().any(|n| n.contains("nvbox-")), "{names:?}");
        assert!(read_optional(&d).is_err(), "a directory is not a config");
        assert_eq!(read_optional(&d.join("none")).unwrap(), None);
        std::fs::remove_dir_all(&d).unwrap();
    }

    fn current_umask() -> u32 {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Umask:"))
                    .and_then(|u| u32::from_str_radix(u.trim(), 8).ok())
            })
            .unwrap_or(0o022)
    }

    #[test]
    fn lock_excludes_a_second_holder_until_dropped() {
        let d = scratch("lock");
        let cfg = d.join("daemon.json");
        let first = lock(&cfg).unwrap();
        assert_eq!(first.path, d.join(".daemon.json.lock"));
        let got = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&got);
        let cfg2 = cfg.clone();
        let t = std::thread::spawn(move || {
            let _second = lock(&cfg2).unwrap();
            flag.store(true, Ordering::SeqCst);
        });
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            !got.load(Ordering::SeqCst),
            "second lock taken while first held"
        );
        drop(first);
        t.join().unwrap();
        assert!(got.load(Ordering::SeqCst));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
