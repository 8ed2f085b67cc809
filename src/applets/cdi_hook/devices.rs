//! The two hooks about device nodes: `disable-device-node-modification` (the container's
//! `/proc/driver/nvidia/params` says `ModifyDeviceFiles: 0`, so libnvidia-ml and nvidia-smi in it
//! never mknod) and `update-application-profile` (EGL sees only the container's GPUs).

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use anyhow::{Result, anyhow};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat, renameat};
use nix::mount::{MntFlags, umount2};
use nix::sys::stat::{Mode, SFlag, fstat, fstatat, minor};
use nix::unistd::{UnlinkatFlags, unlinkat};

use super::{Args, random_suffix};
use crate::live::rootfs::{Rootfs, kind};
use crate::plan::{APP_PROFILE, APP_PROFILE_DIR, PROC_NVIDIA, app_profile_text};
use crate::sys::mount as sys;

const HOST_PARAMS: &str = "/proc/driver/nvidia/params";
const PARAMS_FILE: &str = "nvct-params";

pub fn run_disable_device_node_modification(args: &Args) -> Result<()> {
    // The hook runs before pivot_root: /proc is still the host's.
    let Ok(text) = std::fs::read_to_string(HOST_PARAMS) else {
        return Ok(());
    };
    let Some(params) = container_params(&text) else {
        return Ok(());
    };
    let (_, root) = args.open_root()?;
    mask_params(&root, params.as_bytes())
}

/// `params` with `ModifyDeviceFiles: 1` turned off; `None` when there is nothing to turn off.
pub fn container_params(text: &str) -> Option<String> {
    let on = "ModifyDeviceFiles: 1";
    text.lines()
        .any(|l| l.trim() == on)
        .then(|| text.replacen(on, "ModifyDeviceFiles: 0", 1))
}

/// A read-only bind of a tmpfs file holding `params` over the container's params file. A
/// container without that file (no driver procfs in it) is left alone.
pub fn mask_params(root: &Rootfs, params: &[u8]) -> Result<()> {
    let target_abs = format!("{PROC_NVIDIA}/params");
    let target = match root.resolve(&target_abs, OFlag::O_PATH | OFlag::O_NOFOLLOW) {
        Ok(fd) => fd,
        Err(Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP) => return Ok(()),
        Err(e) => return Err(anyhow!("failed to open {target_abs}: {}", lower(e))),
    };
    if fstat(&target).map(|st| kind(&st)) != Ok(SFlag::S_IFREG) {
        return Err(anyhow!("{target_abs}: not a regular file"));
    }
    let attrs = sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV | sys::MOUNT_ATTR_NOEXEC;
    let tmpfs = sys::tmpfs("0555", attrs).map_err(|e| anyhow!("failed to create tmpfs: {e}"))?;
    let file = openat(
        &tmpfs,
        PARAMS_FILE,
        OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o444),
    )
    .map_err(|e| anyhow!("failed to create {PARAMS_FILE}: {}", lower(e)))?;
    File::from(file).write_all(params)?;
    let bind = match clone_file(&tmpfs) {
        Ok(bind) => bind,
        // Kernels before 6.15 clone only from mounts in the caller's namespace: attach the tmpfs
        // for the moment it takes, in a fresh directory of the container's /run, as upstream.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => clone_through_run(root, tmpfs)?,
        Err(e) => return Err(anyhow!("failed to clone {PARAMS_FILE}: {e}")),
    };
    sys::mount_setattr(bind.as_fd(), sys::MOUNT_ATTR_RDONLY | attrs, 0)
        .map_err(|e| anyhow!("failed to set mount attributes: {e}"))?;
    sys::move_mount(bind.as_fd(), target.as_fd())
        .map_err(|e| anyhow!("failed to mount over {target_abs}: {e}"))
}

fn clone_file(dir: &OwnedFd) -> std::io::Result<OwnedFd> {
    let file = openat(
        dir,
        PARAMS_FILE,
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    sys::open_tree_clone(file.as_fd(), false)
}

fn clone_through_run(root: &Rootfs, tmpfs: OwnedFd) -> Result<OwnedFd> {
    let abs = format!("/run/nvidia-ctk-hook-{}", random_suffix());
    let mut created = Vec::new();
    let dir = root.mkdir_all(&abs, &mut created)?;
    let attached = sys::move_mount(tmpfs.as_fd(), dir.as_fd())
        .map_err(|e| anyhow!("failed to mount tmpfs on {abs}: {e}"))
        .and_then(|()| {
            root.resolve(&abs, OFlag::O_PATH | OFlag::O_DIRECTORY)
                .map_err(|e| anyhow!("failed to reopen {abs}: {}", lower(e)))
        });
    let result = attached.and_then(|mounted| {
        let bind = clone_file(&mounted).map_err(|e| anyhow!("failed to clone {PARAMS_FILE}: {e}"));
        // The bind keeps the tmpfs alive; its mount point goes.
        let _ = umount2(
            format!("/proc/self/fd/{}", mounted.as_raw_fd()).as_str(),
            MntFlags::MNT_DETACH,
        );
        bind
    });
    for c in created.iter().rev() {
        let _ = unlinkat(&c.dir, c.name.as_str(), UnlinkatFlags::RemoveDir);
    }
    result
}

pub fn run_update_application_profile(args: &Args) -> Result<()> {
    let (_, root) = args.open_root()?;
    let mask = gpu_mask(&root)?;
    if mask == 0 {
        return Ok(());
    }
    write_profile(&root, mask)
}

/// Bit N set for each `/dev/nvidiaN` character device (N < 64) in the container.
pub fn gpu_mask(root: &Rootfs) -> Result<u64> {
    let dev = match root.resolve("/dev", OFlag::O_RDONLY | OFlag::O_DIRECTORY) {
        Ok(fd) => fd,
        Err(Errno::ENOENT | Errno::ENOTDIR) => return Ok(0),
        Err(e) => return Err(anyhow!("failed to open /dev: {}", lower(e))),
    };
    let names = super::ldconf::list_dir(dev.try_clone()?)
        .map_err(|e| anyhow!("failed to list /dev: {e}"))?;
    let mut mask = 0u64;
    for name in names {
        let digits = name.strip_prefix("nvidia").unwrap_or("");
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(st) = fstatat(&dev, name.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW) else {
            continue;
        };
        if kind(&st) != SFlag::S_IFCHR {
            continue;
        }
        let m = minor(st.st_rdev);
        if m < 64 {
            mask |= 1 << m;
        } else {
            eprintln!("warning: /dev/{name}: minor {m} does not fit the GPU mask; ignored");
        }
    }
    Ok(mask)
}

/// The profile file (0444) in its directory (0555 when created here), replaced atomically.
fn write_profile(root: &Rootfs, mask: u64) -> Result<()> {
    let mut created = Vec::new();
    let dir = root.mkdir_all(APP_PROFILE_DIR, &mut created)?;
    let abs = format!("{APP_PROFILE_DIR}/{APP_PROFILE}");
    let temp = format!(".{APP_PROFILE}-{}", random_suffix());
    let fd = openat(
        &dir,
        temp.as_str(),
        OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o444),
    )
    .map_err(|e| anyhow!("failed to create {abs}: {}", lower(e)))?;
    let result = File::from(fd)
        .write_all(app_profile_text(mask).as_bytes())
        .map_err(|e| anyhow!("failed to write {abs}: {e}"))
        .and_then(|()| {
            renameat(&dir, temp.as_str(), &dir, APP_PROFILE)
                .map_err(|e| anyhow!("failed to replace {abs}: {}", lower(e)))
        });
    if result.is_err() {
        let _ = unlinkat(&dir, temp.as_str(), UnlinkatFlags::NoRemoveDir);
        return result;
    }
    if !created.is_empty() {
        super::links::chmod_fd(&dir, 0o555)
            .map_err(|e| anyhow!("failed to chmod {APP_PROFILE_DIR}: {e}"))?;
    }
    Ok(())
}

fn lower(e: Errno) -> String {
    e.desc().to_lowercase()
}
