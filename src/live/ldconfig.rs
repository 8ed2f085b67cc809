//! Upstream's way of updating the container's loader cache (`[nvbox] ldcache = "ldconfig"`):
//! run an ldconfig chrooted into the rootfs (reference libnvidia-container.md §5.11). An `@PATH`
//! ldconfig is the host's binary: it is copied into a sealed memfd before the container is
//! entered and executed from that fd, so nothing in the container can swap it. Any other path is
//! the image's own, resolved inside the rootfs.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, OwnedFd};

use anyhow::{Result, anyhow, bail};
use nix::fcntl::{FcntlArg, OFlag, SealFlag, fcntl};
use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, unshare};
use nix::sys::memfd::{MFdFlags, memfd_create};
use nix::sys::resource::{Resource, setrlimit};
use nix::sys::stat::Mode;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{chroot, dup2_stderr, dup2_stdout, execve, fchdir, fexecve};

use super::owner::Owner;
use super::rootfs::Rootfs;
use crate::sys::process::{Forked, exit_child, fork_single_threaded};

pub enum Program {
    /// The host's binary, sealed in a memfd.
    Host { fd: OwnedFd, name: String },
    /// A path inside the container.
    Container(String),
}

/// Prepare the configured ldconfig on the host side.
pub fn prepare(path: &str) -> Result<Program> {
    let Some(host) = path.strip_prefix('@') else {
        return Ok(Program::Container(path.to_owned()));
    };
    let err = |e: &dyn std::fmt::Display| anyhow!("ldcache error: {host}: {e}");
    let mut src = std::fs::File::open(host).map_err(|e| err(&e))?;
    let fd = memfd_create(
        c"nvc:[ldconfig]",
        MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
    )
    .map_err(|e| err(&e))?;
    let mut dst = std::fs::File::from(fd);
    io::copy(&mut src, &mut dst).map_err(|e| err(&e))?;
    let fd = OwnedFd::from(dst);
    let seals = SealFlag::F_SEAL_SEAL
        | SealFlag::F_SEAL_SHRINK
        | SealFlag::F_SEAL_GROW
        | SealFlag::F_SEAL_WRITE;
    fcntl(&fd, FcntlArg::F_ADD_SEALS(seals)).map_err(|e| err(&e))?;
    Ok(Program::Host {
        fd,
        name: host.to_owned(),
    })
}

/// Run it over `dirs` in the rootfs, from the child that is already in the container's mount
/// namespace. A missing ldconfig is not an error (images without one, as upstream).
/// With `owner` (a user-namespaced container), ldconfig runs as the container's root, so the
/// cache it writes belongs to it, as upstream runs it as the container's owner.
pub fn run(root: &Rootfs, program: &Program, dirs: &[String], owner: Option<Owner>) -> Result<()> {
    let name = match program {
        Program::Host { name, .. } => name.clone(),
        Program::Container(p) => p.clone(),
    };
    let devnull = nix::fcntl::open(
        "/dev/null",
        OFlag::O_WRONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| anyhow!("ldcache error: open /dev/null: {e}"))?;
    let (rd, wr) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| anyhow!("ldcache error: pipe: {e}"))?;
    match fork_single_threaded().map_err(|e| anyhow!("ldcache error: fork: {e}"))? {
        Forked::Child => {
            drop(rd);
            let Err((step, errno)) = exec_confined(root, program, dirs, &devnull, owner);
            // An image without the ldconfig it names is skipped, as upstream does.
            let code = if step == "exec" && errno == nix::errno::Errno::ENOENT {
                0
            } else {
                let msg = format!("{step}: {}", errno.desc().to_lowercase());
                let _ = std::io::Write::write_all(&mut std::fs::File::from(wr), msg.as_bytes());
                1
            };
            exit_child(code);
        }
        Forked::Parent(pid) => match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, 0)) => Ok(()),
            Ok(WaitStatus::Exited(_, n)) => {
                drop(wr);
                let mut why = String::new();
                let _ = std::io::Read::read_to_string(&mut std::fs::File::from(rd), &mut why);
                if !why.is_empty() {
                    bail!("ldcache error: process {name}: {why}");
                }
                bail!("ldcache error: process {name} failed with error code: {n}")
            }
            Ok(WaitStatus::Signaled(_, sig, _)) => {
                bail!(
                    "ldcache error: process {name} terminated with signal {}",
                    sig as i32
                )
            }
            other => bail!("ldcache error: process {name}: {other:?}"),
        },
    }
}

/// In a private copy of the namespace: chroot into the rootfs, limits, no new privileges, then
/// exec with an empty environment. Returns only on failure.
fn exec_confined(
    root: &Rootfs,
    program: &Program,
    dirs: &[String],
    devnull: &OwnedFd,
    owner: Option<Owner>,
) -> Result<std::convert::Infallible, (&'static str, nix::errno::Errno)> {
    let step = |name: &'static str| move |e| (name, e);
    unshare(CloneFlags::CLONE_NEWNS).map_err(step("unshare"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(step("make / private"))?;
    fchdir(root.fd()).map_err(step("fchdir"))?;
    chroot(".").map_err(step("chroot"))?;
    nix::unistd::chdir("/").map_err(step("chdir"))?;
    for (res, limit) in [
        (Resource::RLIMIT_CPU, 10),
        (Resource::RLIMIT_AS, 2 << 30),
        (Resource::RLIMIT_NOFILE, 64),
        (Resource::RLIMIT_FSIZE, 1 << 20),
    ] {
        setrlimit(res, limit, limit).map_err(step("setrlimit"))?;
    }
    if let Some(o) = owner {
        use nix::unistd::{Gid, Uid, setgroups, setresgid, setresuid};
        let (uid, gid) = (Uid::from_raw(o.uid), Gid::from_raw(o.gid));
        setgroups(&[]).map_err(step("setgroups"))?;
        setresgid(gid, gid, gid).map_err(step("setresgid"))?;
        setresuid(uid, uid, uid).map_err(step("setresuid"))?;
    }
    nix::sys::prctl::set_no_new_privs().map_err(step("no_new_privs"))?;
    dup2_stdout(devnull.as_fd()).map_err(step("dup2"))?;
    dup2_stderr(devnull.as_fd()).map_err(step("dup2"))?;
    let mut argv: Vec<CString> = [
        "ldconfig",
        "-f",
        "/etc/ld.so.conf",
        "-C",
        "/etc/ld.so.cache",
    ]
    .iter()
    .map(|s| CString::new(*s).expect("static"))
    .collect();
    for d in dirs {
        argv.push(CString::new(d.as_str()).map_err(|_| ("argv", nix::errno::Errno::EINVAL))?);
    }
    let env: [CString; 0] = [];
    match program {
        Program::Host { fd, .. } => fexecve(fd.as_fd(), &argv, &env).map_err(step("exec")),
        Program::Container(path) => {
            let p = CString::new(path.as_str()).map_err(|_| ("argv", nix::errno::Errno::EINVAL))?;
            execve(&p, &argv, &env).map_err(step("exec"))
        }
    }
}
