//! The new mount API (open_tree, move_mount, mount_setattr, fsopen/fsconfig/fsmount), which lets
//! a mount be prepared from an fd in one mount namespace and attached to an fd in another, so no
//! path is ever looked up twice.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use libc::{c_int, c_uint};

pub use libc::{
    MOUNT_ATTR_NODEV, MOUNT_ATTR_NOEXEC, MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY,
    MOVE_MOUNT_F_EMPTY_PATH, MOVE_MOUNT_T_EMPTY_PATH, OPEN_TREE_CLOEXEC, OPEN_TREE_CLONE,
};

const EMPTY: &[u8] = b"\0";

fn fd_result(ret: libc::c_long) -> io::Result<OwnedFd> {
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the syscall returned a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as c_int) })
}

fn unit_result(ret: libc::c_long) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// A detached copy (`OPEN_TREE_CLONE`) of the mount at `fd` itself (`AT_EMPTY_PATH`): a bind
/// mount not yet attached anywhere. `recursive` copies the submounts too.
pub fn open_tree_clone(fd: BorrowedFd, recursive: bool) -> io::Result<OwnedFd> {
    let mut flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | libc::AT_EMPTY_PATH as c_uint;
    if recursive {
        flags |= libc::AT_RECURSIVE as c_uint;
    }
    // SAFETY: EMPTY is a valid NUL-terminated string; fd is a live descriptor.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            fd.as_raw_fd(),
            EMPTY.as_ptr() as *const libc::c_char,
            flags,
        )
    };
    fd_result(ret)
}

/// Set mount attributes (`MOUNT_ATTR_*`) on the mount `fd` refers to.
pub fn mount_setattr(fd: BorrowedFd, set: u64, clear: u64) -> io::Result<()> {
    let attr = libc::mount_attr {
        attr_set: set,
        attr_clr: clear,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: attr is a valid mount_attr of the size passed; EMPTY is NUL-terminated.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            EMPTY.as_ptr() as *const libc::c_char,
            libc::AT_EMPTY_PATH as c_uint,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    unit_result(ret)
}

/// Attach the detached mount `from` onto the file or directory `to` (both fds, no paths).
pub fn move_mount(from: BorrowedFd, to: BorrowedFd) -> io::Result<()> {
    // SAFETY: both fds are live; the empty paths are NUL-terminated.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            from.as_raw_fd(),
            EMPTY.as_ptr() as *const libc::c_char,
            to.as_raw_fd(),
            EMPTY.as_ptr() as *const libc::c_char,
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    unit_result(ret)
}

/// A new, detached tmpfs with the given `mode=` and mount attributes.
pub fn tmpfs(mode: &str, attrs: u64) -> io::Result<OwnedFd> {
    let fstype = CString::new("tmpfs").expect("static string");
    // SAFETY: fstype is NUL-terminated.
    let fsfd = fd_result(unsafe {
        libc::syscall(
            libc::SYS_fsopen,
            fstype.as_ptr(),
            libc::FSOPEN_CLOEXEC as c_uint,
        )
    })?;
    let key = CString::new("mode").expect("static string");
    let value = CString::new(mode).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: key and value are NUL-terminated strings that outlive the call.
    unit_result(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fsfd.as_raw_fd(),
            libc::FSCONFIG_SET_STRING,
            key.as_ptr(),
            value.as_ptr(),
            0,
        )
    })?;
    // SAFETY: no pointers are passed.
    unit_result(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fsfd.as_raw_fd(),
            libc::FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0,
        )
    })?;
    // SAFETY: no pointers are passed.
    fd_result(unsafe {
        libc::syscall(
            libc::SYS_fsmount,
            fsfd.as_raw_fd(),
            libc::FSMOUNT_CLOEXEC as c_uint,
            attrs,
        )
    })
}
