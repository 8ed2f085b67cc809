//! fork(2) for the one place that needs it: entering a container's mount namespace happens in
//! a child, so the caller's namespace is never changed and a failure cannot leave it half-moved.

use nix::unistd::{ForkResult, Pid};

pub enum Forked {
    Parent(Pid),
    Child,
}

/// Fork the calling process.
///
/// The caller must be single-threaded: setns(CLONE_NEWNS) refuses multi-threaded processes
/// anyway, and a child of a threaded process may only call async-signal-safe functions.
pub fn fork_single_threaded() -> nix::Result<Forked> {
    debug_assert!(is_single_threaded(), "fork from a multi-threaded process");
    // SAFETY: nvbox never starts threads (DESIGN.md §6), so the child is a full copy of the only
    // thread and may allocate and run arbitrary code, as a single-threaded program may.
    match unsafe { nix::unistd::fork() }? {
        ForkResult::Parent { child } => Ok(Forked::Parent(child)),
        ForkResult::Child => Ok(Forked::Child),
    }
}

/// Whether this process has exactly one thread (from /proc/self/stat's num_threads field).
pub fn is_single_threaded() -> bool {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let after = s.rsplit_once(')')?.1;
            after.split_whitespace().nth(17)?.parse::<u32>().ok()
        })
        .is_some_and(|n| n == 1)
}

/// End a forked child without running the parent's exit handlers or flushing stdio buffers it
/// inherited (they would be written twice).
pub fn exit_child(code: i32) -> ! {
    // SAFETY: _exit only ends the process; it touches no Rust-managed state.
    unsafe { libc::_exit(code) }
}
