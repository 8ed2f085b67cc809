//! Bind mounts fd to fd. A source is opened on the host, before the container's namespace is
//! entered, and turned into a detached mount (`open_tree(OPEN_TREE_CLONE)` + `mount_setattr`);
//! inside the container it is attached to a placeholder's fd with `move_mount`. Kernels without
//! the new mount API get the same fd discipline through `/proc/thread-self/fd` paths.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags, mount, umount2};

use crate::plan::Kind;
use crate::sys::mount as sys;

/// A prepared source.
pub enum Source {
    /// A detached mount with its flags already set.
    Tree(OwnedFd),
    /// An `O_PATH` fd, bind-mounted through procfs (no new mount API). A bind mount's source
    /// must be in the caller's namespace, so a host source is looked up again inside the
    /// container's (which still holds a copy of the host's mounts at prestart) by `reopen`, and
    /// must be the very inode that was checked on the host.
    Path {
        fd: OwnedFd,
        reopen: Option<(PathBuf, String)>,
    },
}

fn attrs(kind: Kind) -> u64 {
    match kind {
        Kind::File => sys::MOUNT_ATTR_RDONLY | sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV,
        Kind::Ipc => sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV | sys::MOUNT_ATTR_NOEXEC,
        Kind::Device { .. } => {
            sys::MOUNT_ATTR_RDONLY | sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NOEXEC
        }
        Kind::DeviceDir => sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NOEXEC,
        Kind::Dir => sys::MOUNT_ATTR_RDONLY | sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV,
        Kind::Proc => {
            sys::MOUNT_ATTR_RDONLY
                | sys::MOUNT_ATTR_NOSUID
                | sys::MOUNT_ATTR_NODEV
                | sys::MOUNT_ATTR_NOEXEC
        }
    }
}

fn ms_flags(kind: Kind) -> MsFlags {
    let a = attrs(kind);
    let mut f = MsFlags::empty();
    for (bit, flag) in [
        (sys::MOUNT_ATTR_RDONLY, MsFlags::MS_RDONLY),
        (sys::MOUNT_ATTR_NOSUID, MsFlags::MS_NOSUID),
        (sys::MOUNT_ATTR_NODEV, MsFlags::MS_NODEV),
        (sys::MOUNT_ATTR_NOEXEC, MsFlags::MS_NOEXEC),
    ] {
        if a & bit != 0 {
            f |= flag;
        }
    }
    f
}

/// Whether to use the new mount API: yes unless the kernel lacks it, or the operator (or a
/// test) asks for the procfs path with `NVBOX_MOUNT_API=legacy`.
pub fn new_api() -> bool {
    std::env::var_os("NVBOX_MOUNT_API").is_none_or(|v| v != "legacy")
}

/// Turn an `O_PATH` fd of a verified source into a mountable source.
pub fn prepare(
    fd: OwnedFd,
    kind: Kind,
    use_new_api: bool,
    reopen: Option<(PathBuf, String)>,
) -> io::Result<Source> {
    if !use_new_api {
        return Ok(Source::Path { fd, reopen });
    }
    let recursive = matches!(kind, Kind::Proc | Kind::DeviceDir | Kind::Dir);
    match sys::open_tree_clone(fd.as_fd(), recursive) {
        Ok(tree) => {
            sys::mount_setattr(tree.as_fd(), attrs(kind), 0)
                .map_err(|e| io::Error::other(format!("mount_setattr: {}", lower(&e))))?;
            Ok(Source::Tree(tree))
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => Ok(Source::Path { fd, reopen }),
        Err(e) => Err(io::Error::other(format!("open_tree: {}", lower(&e)))),
    }
}

fn proc_fd(fd: BorrowedFd) -> String {
    format!("/proc/thread-self/fd/{}", fd.as_raw_fd())
}

/// Attach `src` onto the placeholder `target`. The caller re-resolves the target afterwards to
/// get the mount itself.
pub fn attach(src: &Source, target: &OwnedFd, kind: Kind) -> io::Result<()> {
    match src {
        Source::Tree(tree) => sys::move_mount(tree.as_fd(), target.as_fd())
            .map_err(|e| io::Error::other(format!("move_mount: {}", lower(&e)))),
        Source::Path { fd, reopen } => {
            let same;
            let fd = match reopen {
                Some((root, path)) => {
                    same = reopen_same(fd, root, path)?;
                    &same
                }
                None => fd,
            };
            let target_path = proc_fd(target.as_fd());
            let rec = if matches!(kind, Kind::Proc | Kind::DeviceDir | Kind::Dir) {
                MsFlags::MS_REC
            } else {
                MsFlags::empty()
            };
            mount(
                Some(proc_fd(fd.as_fd()).as_str()),
                target_path.as_str(),
                None::<&str>,
                MsFlags::MS_BIND | rec,
                None::<&str>,
            )
            .map_err(|e| errno_err("mount", e))
        }
    }
}

/// `path` under `root`, looked up in the current namespace, if it is the inode `fd` is.
fn reopen_same(fd: &OwnedFd, root: &std::path::Path, path: &str) -> io::Result<OwnedFd> {
    let found = crate::discover::root::RootDir::open(root)?
        .find(path)?
        .ok_or_else(|| {
            io::Error::other(format!("{path}: not visible in the container's namespace"))
        })?;
    let host = nix::sys::stat::fstat(fd).map_err(io::Error::from)?;
    if (host.st_dev, host.st_ino) != (found.stat.st_dev, found.stat.st_ino) {
        return Err(io::Error::other(format!(
            "{path}: not the file checked on the host"
        )));
    }
    Ok(found.fd)
}

/// Second half of the legacy path: remount the now-attached mount (`mounted` is an fd of the
/// mount itself) with its flags.
pub fn remount_legacy(mounted: &OwnedFd, kind: Kind) -> io::Result<()> {
    mount(
        None::<&str>,
        proc_fd(mounted.as_fd()).as_str(),
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | ms_flags(kind),
        None::<&str>,
    )
    .map_err(|e| errno_err("remount", e))
}

/// Detach the mount an fd refers to (rollback).
pub fn detach(mounted: &OwnedFd) {
    let _ = umount2(proc_fd(mounted.as_fd()).as_str(), MntFlags::MNT_DETACH);
}

pub fn errno_err(what: &str, e: Errno) -> io::Error {
    io::Error::other(format!("{what}: {}", e.desc().to_lowercase()))
}

fn lower(e: &io::Error) -> String {
    crate::discover::files::lower_io(e)
}
