//! The container's `/proc/driver/nvidia`: a tmpfs holding copies of `params` (with
//! `ModifyDeviceFiles: 0`, so nothing in the container recreates device nodes), `version` and
//! `registry`, into which the selected GPUs' directories are then bind-mounted (§3.6).

use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};

use nix::fcntl::OFlag;
use nix::sys::stat::{Mode, mkdirat};
use nix::sys::statfs::{PROC_SUPER_MAGIC, fstatfs};

use super::mount::errno_err;
use super::rootfs::{Created, Rootfs};
use crate::plan::PROC_NVIDIA;
use crate::sys::mount as sys;

const TMPFS_ATTRS: u64 = sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV | sys::MOUNT_ATTR_NOEXEC;

/// `params` as the container must see it: the first `ModifyDeviceFiles: 1` turned off.
pub fn container_params(text: &str) -> String {
    text.replacen("ModifyDeviceFiles: 1", "ModifyDeviceFiles: 0", 1)
}

/// Mount the tmpfs, filled with `files` (name, contents). Returns the mount's fd for rollback.
///
/// A real driver host's procfs has `/proc/driver/nvidia` and the tmpfs goes over it. A simulated
/// host's has not, and procfs allows no mkdir: the tmpfs then goes one level up, over
/// `/proc/driver`, with a `nvidia` directory in it. A rootfs without a procfs (standalone
/// `configure` on a bare directory) gets the directories created.
pub fn mount_proc(
    root: &Rootfs,
    files: &[(&str, Vec<u8>)],
    created: &mut Vec<Created>,
) -> io::Result<OwnedFd> {
    let dir_flags = OFlag::O_PATH | OFlag::O_DIRECTORY;
    let (target, subdir) = if let Ok(fd) = root.resolve(PROC_NVIDIA, dir_flags) {
        (fd, false)
    } else {
        match root.resolve("/proc/driver", dir_flags) {
            Ok(fd) if fstatfs(&fd).is_ok_and(|s| s.filesystem_type() == PROC_SUPER_MAGIC) => {
                (fd, true)
            }
            _ => (root.mkdir_all(PROC_NVIDIA, created)?, false),
        }
    };
    let tmpfs = sys::tmpfs("0555", TMPFS_ATTRS)
        .map_err(|e| io::Error::other(format!("fsmount tmpfs: {}", lower(&e))))?;
    let dir = if subdir {
        mkdirat(&tmpfs, "nvidia", Mode::from_bits_truncate(0o555))
            .map_err(|e| errno_err("mkdir nvidia", e))?;
        nix::fcntl::openat(
            &tmpfs,
            "nvidia",
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
            Mode::empty(),
        )
        .map_err(|e| errno_err("open nvidia", e))?
    } else {
        tmpfs.try_clone()?
    };
    write_files(&dir, files, 0o444)?;
    sys::move_mount(tmpfs.as_fd(), target.as_fd())
        .map_err(|e| io::Error::other(format!("move_mount tmpfs: {}", lower(&e))))?;
    // The fsmount fd is now the attached mount itself: no path is looked up again, so a
    // directory swapped meanwhile cannot make the rollback detach something else.
    Ok(tmpfs)
}

/// A tmpfs (mode 0555) holding `files` (mode 0555, as upstream writes the profile).
pub fn mount_tmpfs(
    root: &Rootfs,
    abs: &str,
    files: &[(&str, Vec<u8>)],
    created: &mut Vec<Created>,
) -> io::Result<OwnedFd> {
    let target = root.mkdir_all(abs, created)?;
    let tmpfs = sys::tmpfs("0555", TMPFS_ATTRS)
        .map_err(|e| io::Error::other(format!("fsmount tmpfs: {}", lower(&e))))?;
    write_files(&tmpfs, files, 0o555)?;
    sys::move_mount(tmpfs.as_fd(), target.as_fd())
        .map_err(|e| io::Error::other(format!("move_mount tmpfs: {}", lower(&e))))?;
    Ok(tmpfs)
}

/// New files in a fresh tmpfs, before it is attached anywhere.
fn write_files(dir: &OwnedFd, files: &[(&str, Vec<u8>)], mode: u32) -> io::Result<()> {
    for (name, data) in files {
        let fd = nix::fcntl::openat(
            dir,
            *name,
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(mode),
        )
        .map_err(|e| errno_err(&format!("create {name}"), e))?;
        std::fs::File::from(fd).write_all(data)?;
    }
    Ok(())
}

fn lower(e: &io::Error) -> String {
    crate::discover::files::lower_io(e)
}
