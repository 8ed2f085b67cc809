//! `create-symlinks` and `chmod`: plain edits of the rootfs, each resolved through the rootfs's
//! fd so that a symlinked parent (`/usr/lib -> /`, `../../`) lands inside it.

use std::collections::HashSet;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;

use anyhow::{Result, anyhow, bail};
use nix::errno::Errno;
use nix::fcntl::{OFlag, readlinkat, renameat};
use nix::sys::stat::{SFlag, fstat};
use nix::unistd::{UnlinkatFlags, symlinkat, unlinkat};

use super::{Args, random_suffix};
use crate::live::rootfs::{Rootfs, kind, split};

pub fn run_create_symlinks(args: &Args) -> Result<()> {
    let specs = args.all("link");
    if specs.is_empty() {
        return Ok(());
    }
    let (_, root) = args.open_root()?;
    create_symlinks(&root, &specs)
}

/// Each `TARGET::LINK` once; a malformed one fails before anything is created.
pub fn create_symlinks(root: &Rootfs, specs: &[&str]) -> Result<()> {
    let mut seen = HashSet::new();
    let mut links = Vec::new();
    for spec in specs {
        if !seen.insert(*spec) {
            continue;
        }
        let parts: Vec<&str> = spec.split("::").collect();
        let [target, link] = parts[..] else {
            bail!("invalid symlink specification {spec}");
        };
        if target.is_empty() || link.is_empty() {
            bail!("invalid symlink specification {spec}");
        }
        links.push((target, link));
    }
    for (target, link) in links {
        create_link(root, target, link)
            .map_err(|e| anyhow!("failed to create link {link} -> {target}: {e}"))?;
    }
    Ok(())
}

/// `link` (a container path) made a symlink whose contents are `target`, verbatim: the target is
/// resolved later, by the container, so it is neither checked nor created here.
fn create_link(root: &Rootfs, target: &str, link: &str) -> Result<()> {
    let abs = format!("/{}", link.trim_start_matches('/'));
    let (dir, name) = split(&abs)?;
    let dirfd = root.mkdir_all(dir, &mut Vec::new())?;
    if readlinkat(&dirfd, name).is_ok_and(|t| t.as_os_str() == target) {
        return Ok(());
    }
    // A fresh link renamed over the name: whatever held it is replaced in one step.
    let temp = format!(".{name}-{}", random_suffix());
    symlinkat(target, &dirfd, temp.as_str()).map_err(|e| anyhow!("symlink: {}", lower(e)))?;
    renameat(&dirfd, temp.as_str(), &dirfd, name).map_err(|e| {
        let _ = unlinkat(&dirfd, temp.as_str(), UnlinkatFlags::NoRemoveDir);
        anyhow!("rename: {}", lower(e))
    })
}

pub fn run_chmod(args: &Args) -> Result<()> {
    let mode = args.last("mode").unwrap_or("");
    if mode.is_empty() {
        bail!("a non-empty mode must be specified");
    }
    let mode = u32::from_str_radix(mode, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| anyhow!("failed to parse mode {mode}: not an octal file mode"))?;
    let paths = args.all("path");
    if paths.is_empty() || paths.iter().any(|p| p.is_empty()) {
        bail!("at least one non-empty path must be specified");
    }
    let (_, root) = args.open_root()?;
    chmod_paths(&root, mode, &paths)
}

/// Paths that are missing are skipped; EPERM (a read-only or foreign mount) is ignored, as
/// upstream does. The parents are resolved in the root, but a symlink at the path itself is
/// skipped, not followed: in a live container it could name a node bind-mounted from the host
/// (runc's `/dev/null`), whose mode is the host's.
pub fn chmod_paths(root: &Rootfs, mode: u32, paths: &[&str]) -> Result<()> {
    for path in paths {
        let fd = match root.resolve(path, OFlag::O_PATH | OFlag::O_NOFOLLOW) {
            Ok(fd) => fd,
            Err(Errno::ENOENT | Errno::ENOTDIR) => continue,
            Err(e) => bail!("failed to open {path}: {}", lower(e)),
        };
        if fstat(&fd).is_ok_and(|st| kind(&st) == SFlag::S_IFLNK) {
            eprintln!("warning: {path} is a symlink in the container; not changing its mode");
            continue;
        }
        match chmod_fd(&fd, mode) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {}
            Err(e) => bail!(
                "failed to chmod {path}: {}",
                crate::discover::files::lower_io(&e)
            ),
        }
    }
    Ok(())
}

/// An `O_PATH` fd cannot be fchmod'ed; its procfs link names exactly that inode, so nothing is
/// looked up by name again.
pub fn chmod_fd(fd: &OwnedFd, mode: u32) -> std::io::Result<()> {
    let st = fstat(fd)?;
    if st.st_mode & 0o7777 == mode {
        return Ok(());
    }
    let proc_path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    std::fs::set_permissions(proc_path, std::fs::Permissions::from_mode(mode))
}

fn lower(e: Errno) -> String {
    e.desc().to_lowercase()
}
