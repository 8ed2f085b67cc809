//! Applying a plan to a live container: sources are opened on the host, then a forked child of
//! this single-threaded process enters the container's mount namespace, opens the rootfs there
//! and attaches everything fd to fd. On any failure the child undoes what it mounted and created
//! and reports the step; the parent programs the device cgroup only after the child succeeded.

pub mod cgroup;
mod layout;
pub mod ldcache;
pub mod ldconfig;
mod mount;
pub mod owner;
mod procfs;
pub mod rootfs;

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use nix::fcntl::OFlag;
use nix::sched::{CloneFlags, setns};
use nix::sys::stat::{SFlag, major, minor};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{UnlinkatFlags, unlinkat};

pub use layout::probe_layout;

use crate::discover::Roots;
use crate::discover::files::lower_io;
use crate::discover::host::Host;
use crate::discover::root::{RootDir, file_type};
use crate::plan::{APP_PROFILE, APP_PROFILE_DIR, Bind, Kind, Plan, Root};
use crate::privilege::{self, Phase};
use crate::sys::process::{Forked, fork_single_threaded};
use mount::Source;
use owner::Owner;
use rootfs::{Created, Rootfs, kind};

/// The container to configure.
#[derive(Debug, Clone)]
pub struct Target {
    /// The container's init (supervised), or the caller's parent (standalone).
    pub pid: i32,
    /// The rootfs path as the runtime gave it; it is opened inside the container's namespace.
    pub rootfs: PathBuf,
    /// `--pid` given: the rootfs is probed through the process's root.
    pub supervised: bool,
}

impl Target {
    /// The rootfs as the host sees it, for probing before entering the namespace.
    pub fn host_view(&self) -> PathBuf {
        if !self.supervised {
            return self.rootfs.clone();
        }
        let rel = self.rootfs.strip_prefix("/").unwrap_or(&self.rootfs);
        PathBuf::from(format!("/proc/{}/root", self.pid)).join(rel)
    }
}

/// A bind whose source was opened on the host.
struct Prepared<'a> {
    bind: &'a Bind,
    source: Option<Source>,
    is_dir: bool,
}

/// Apply `plan` to the container.
/// `ldconfig`: run this program over the cache directories instead of writing the cache
/// ourselves.
pub fn apply(
    host: &Host,
    plan: &Plan,
    t: &Target,
    ldconfig: Option<&ldconfig::Program>,
) -> Result<()> {
    apply_from(&host.roots, plan, t, ldconfig)
}

/// [`apply`] for a plan whose sources are under `host` (a WSL2 plan has no [`Host`]).
pub fn apply_from(
    host: &Roots,
    plan: &Plan,
    t: &Target,
    ldconfig: Option<&ldconfig::Program>,
) -> Result<()> {
    if !plan.cgroup.is_empty() && privilege::in_user_namespace() {
        // A rootless engine: the device cgroup belongs to a more privileged namespace.
        bail!(
            "cgroup error: cannot program the device cgroup from a user namespace (rootless \
             engine); set no-cgroups = true in [nvidia-container-cli] and let the engine own \
             device access"
        );
    }
    privilege::enter(Phase::Container);
    let owner = owner::container_owner(t.pid)?;
    if let Some(o) = owner {
        crate::info!("user namespace: creating files as {}:{}", o.uid, o.gid);
    }
    let use_new = mount::new_api();
    let proc_files = read_proc_files(host, plan);
    privilege::enter(Phase::Mount);
    let mut prepared = Vec::with_capacity(plan.binds.len());
    let mut roots: [Option<RootDir>; 3] = [None, None, None];
    for bind in &plan.binds {
        prepared.push(open_source(host, bind, use_new, &mut roots).map_err(|e| {
            anyhow!(
                "mount error: {}: {e}",
                bind.target.rsplit('/').next().unwrap_or("")
            )
        })?);
    }
    let ns = nix::fcntl::open(
        format!("/proc/{}/ns/mnt", t.pid).as_str(),
        OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| {
        anyhow!(
            "container error: open /proc/{}/ns/mnt: {}",
            t.pid,
            e.desc().to_lowercase()
        )
    })?;
    crate::info!("prepared {} mount sources", prepared.len());
    let (rd, wr) = nix::unistd::pipe2(OFlag::O_CLOEXEC).context("pipe")?;
    let parent = nix::unistd::getpid();
    match fork_single_threaded().context("fork")? {
        Forked::Child => {
            drop(rd);
            // A hook killed mid-configure (runc's hook timeout, an OOM kill) must not leave its
            // child mounting into a container that runc is tearing down, or racing a retry on
            // the same rootfs. The ppid check covers a parent that died before the prctl.
            let orphaned = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .is_err()
                || nix::unistd::getppid() != parent;
            if orphaned {
                crate::sys::process::exit_child(1);
            }
            let result = enter_and_apply(
                Entry { mnt: &ns, owner },
                t,
                plan,
                &proc_files,
                &prepared,
                use_new,
                ldconfig,
            );
            let code = match result {
                Ok(()) => 0,
                Err(e) => {
                    let _ = std::fs::File::from(wr).write_all(format!("{e:#}").as_bytes());
                    1
                }
            };
            crate::sys::process::exit_child(code);
        }
        Forked::Parent(child) => {
            drop(wr);
            drop(prepared);
            let mut msg = String::new();
            let _ = std::fs::File::from(rd).read_to_string(&mut msg);
            let status = waitpid(child, None).context("wait")?;
            crate::info!("container configured");
            match status {
                WaitStatus::Exited(_, 0) => {}
                WaitStatus::Exited(..) if !msg.is_empty() => bail!("{msg}"),
                WaitStatus::Exited(_, code) => {
                    bail!("mount error: child exited with status {code}")
                }
                WaitStatus::Signaled(_, sig, _) => {
                    bail!("mount error: child killed by {}", sig.as_str())
                }
                other => bail!("mount error: child failed: {other:?}"),
            }
        }
    }
    if !plan.cgroup.is_empty() {
        privilege::enter(Phase::Cgroup);
        let rules: Vec<cgroup::DeviceRule> = plan
            .cgroup
            .iter()
            .map(|&(major, minor)| cgroup::DeviceRule { major, minor })
            .collect();
        let cg = cgroup::find_device_cgroup(Path::new("/"), t.pid).context("cgroup error")?;
        cgroup::allow_devices(&cg, &rules).context("cgroup error")?;
        crate::info!("allowed {} devices in {}", rules.len(), cg.path.display());
    }
    privilege::enter(Phase::Done);
    Ok(())
}

/// `params` (rewritten), `version`, `registry` from the host's procfs; absent ones are skipped.
fn read_proc_files(host: &Roots, plan: &Plan) -> Vec<(&'static str, Vec<u8>)> {
    let mut files = Vec::new();
    for name in &plan.proc_files {
        let path = host.proc_path(&format!("{}/{name}", crate::plan::PROC_NVIDIA));
        match std::fs::read(&path) {
            Ok(data) if *name == "params" => files.push((
                *name,
                procfs::container_params(&String::from_utf8_lossy(&data)).into_bytes(),
            )),
            Ok(data) => files.push((*name, data)),
            Err(_) => crate::warn!("missing {}", path.display()),
        }
    }
    files
}

/// Open and check a source on the host. Rootfs sources are opened later, inside the container.
fn open_source<'a>(
    host: &Roots,
    bind: &'a Bind,
    use_new: bool,
    roots: &mut [Option<RootDir>; 3],
) -> Result<Prepared<'a>> {
    let (slot, base): (usize, &Path) = match bind.root {
        Root::Driver => (0, &host.driver),
        Root::Dev => (1, &host.dev),
        Root::Proc => (2, &host.proc),
        Root::Rootfs => {
            return Ok(Prepared {
                bind,
                source: None,
                is_dir: false,
            });
        }
    };
    if roots[slot].is_none() {
        roots[slot] = Some(
            RootDir::open(base)
                .map_err(|e| anyhow!("open {}: {}", base.display(), lower_io(&e)))?,
        );
    }
    let root = roots[slot].as_ref().expect("opened above");
    let (fd, stat) = root
        .find_fd(&bind.source)
        .map_err(|e| anyhow!("openat2 {}: {}", bind.source, lower_io(&e)))?
        .ok_or_else(|| anyhow!("{}: no such file or directory", bind.source))?;
    let ty = file_type(&stat);
    let ok = match bind.kind {
        Kind::File => ty == SFlag::S_IFREG,
        Kind::Ipc => ty == SFlag::S_IFSOCK || ty == SFlag::S_IFDIR,
        Kind::Device {
            major: ma,
            minor: mi,
        } => {
            ty == SFlag::S_IFCHR
                && major(stat.st_rdev) as u32 == ma
                && minor(stat.st_rdev) as u32 == mi
        }
        Kind::DeviceDir | Kind::Dir => ty == SFlag::S_IFDIR,
        Kind::Proc => ty == SFlag::S_IFREG || ty == SFlag::S_IFDIR,
    };
    if !ok {
        if matches!(bind.kind, Kind::Device { .. }) {
            bail!("invalid device node: {}", bind.source);
        }
        bail!(
            "unexpected source file mode {:o} for {}",
            stat.st_mode,
            bind.source
        );
    }
    let is_dir = ty == SFlag::S_IFDIR;
    let reopen = Some((base.to_path_buf(), bind.source.clone()));
    let source = mount::prepare(fd, bind.kind, use_new, reopen)?;
    Ok(Prepared {
        bind,
        source: Some(source),
        is_dir,
    })
}

/// The child: enter, apply, and on failure undo.
/// What the child needs to become a writer in the container: its mount namespace, and the
/// ids of its root when those are not ours.
struct Entry<'a> {
    mnt: &'a OwnedFd,
    owner: Option<Owner>,
}

fn enter_and_apply(
    entry: Entry,
    t: &Target,
    plan: &Plan,
    proc_files: &[(&str, Vec<u8>)],
    prepared: &[Prepared],
    use_new: bool,
    ldconfig: Option<&ldconfig::Program>,
) -> Result<()> {
    setns(entry.mnt.as_fd(), CloneFlags::CLONE_NEWNS)
        .map_err(|e| anyhow!("container error: setns: {}", e.desc().to_lowercase()))?;
    let owner = entry.owner;
    if let Some(o) = owner {
        owner::become_owner(o)?;
        privilege::enter(Phase::Mount);
    }
    let root = Rootfs::open(&t.rootfs)
        .map_err(|e| anyhow!("container error: {}: {e}", t.rootfs.display()))?;
    let mut mounted: Vec<OwnedFd> = Vec::new();
    let mut created: Vec<Created> = Vec::new();
    let result = apply_all(
        &root,
        plan,
        proc_files,
        prepared,
        use_new,
        &mut mounted,
        &mut created,
    )
    .and_then(|()| match ldconfig {
        Some(program) => {
            privilege::enter(Phase::Ldconfig);
            ldconfig::run(&root, program, &plan.cache_dirs, owner)
        }
        None if plan.cache.is_empty() => Ok(()),
        None => {
            // The image's cache is parsed with no capability at all.
            privilege::enter(Phase::Ldcache);
            ldcache::update_cache_tracked(&root, &plan.cache, &mut created)
                .map_err(|e| anyhow!("ldcache error: {e}"))
        }
    });
    if result.is_err() {
        // Undoing needs what doing needed.
        privilege::enter(Phase::Mount);
    }
    if result.is_err() {
        for m in mounted.iter().rev() {
            mount::detach(m);
        }
        for c in created.iter().rev() {
            let flag = if c.is_dir {
                UnlinkatFlags::RemoveDir
            } else {
                UnlinkatFlags::NoRemoveDir
            };
            let _ = unlinkat(&c.dir, c.name.as_str(), flag);
        }
    }
    result
}

fn apply_all(
    root: &Rootfs,
    plan: &Plan,
    proc_files: &[(&str, Vec<u8>)],
    prepared: &[Prepared],
    use_new: bool,
    mounted: &mut Vec<OwnedFd>,
    created: &mut Vec<Created>,
) -> Result<()> {
    // A plan without procfs files (WSL2, which has no /proc/driver/nvidia) gets no tmpfs there.
    if !plan.proc_files.is_empty() {
        let m = procfs::mount_proc(root, proc_files, created)
            .map_err(|e| anyhow!("mount error: tmpfs on {}: {e}", crate::plan::PROC_NVIDIA))?;
        mounted.push(m);
    }
    if let Some(mask) = plan.app_profile {
        let text = crate::plan::app_profile_text(mask);
        let m = procfs::mount_tmpfs(
            root,
            APP_PROFILE_DIR,
            &[(APP_PROFILE, text.into_bytes())],
            created,
        )
        .map_err(|e| anyhow!("mount error: tmpfs on {APP_PROFILE_DIR}: {e}"))?;
        mounted.push(m);
    }
    for p in prepared {
        bind_one(root, p, use_new, mounted, created).map_err(|e| {
            let (dir, name) = rootfs::split(&p.bind.target).unwrap_or(("/", &p.bind.target));
            anyhow!("mount error: mount {name} into {dir}: {e}")
        })?;
    }
    for (link, target) in &plan.symlinks {
        let made = rootfs::split(link).and_then(|(dir, name)| {
            let dirfd = root.mkdir_all(dir, created)?;
            match nix::unistd::symlinkat(target.as_str(), &dirfd, name) {
                Ok(()) => {
                    created.push(Created {
                        dir: dirfd,
                        name: name.to_owned(),
                        is_dir: false,
                    });
                    Ok(())
                }
                Err(nix::errno::Errno::EEXIST) => Ok(()),
                Err(e) => Err(std::io::Error::from(e)),
            }
        });
        made.map_err(|e| anyhow!("mount error: symlink {link}: {}", lower_io(&e)))?;
    }
    Ok(())
}

fn bind_one(
    root: &Rootfs,
    p: &Prepared,
    use_new: bool,
    mounted: &mut Vec<OwnedFd>,
    created: &mut Vec<Created>,
) -> std::io::Result<()> {
    let b = p.bind;
    let own;
    let source = match &p.source {
        Some(s) => s,
        None => {
            // From the image itself: resolved in the rootfs, regular files only.
            let fd = root
                .resolve(&b.source, OFlag::O_PATH)
                .map_err(|e| mount::errno_err(&format!("openat2 {}", b.source), e))?;
            let st = nix::sys::stat::fstat(&fd).map_err(std::io::Error::from)?;
            if kind(&st) != SFlag::S_IFREG {
                return Err(std::io::Error::other(format!(
                    "unexpected source file mode {:o} for {}",
                    st.st_mode, b.source
                )));
            }
            own = mount::prepare(fd, b.kind, use_new, None)?;
            &own
        }
    };
    let target = if p.is_dir {
        root.placeholder_dir(&b.target, created)?
    } else {
        root.placeholder(&b.target, 0o644, created)?
    };
    mount::attach(source, &target, b.kind)?;
    let now = match source {
        // After move_mount the tree's fd is the attached mount: rollback and the device check
        // act on it, never on whatever the target path names by now.
        Source::Tree(tree) => tree.try_clone()?,
        Source::Path { .. } => {
            let flags = if p.is_dir {
                OFlag::O_PATH | OFlag::O_DIRECTORY
            } else {
                OFlag::O_PATH
            };
            root.resolve(&b.target, flags)
                .map_err(|e| mount::errno_err("reopen", e))?
        }
    };
    mounted.push(now.try_clone()?);
    if matches!(source, Source::Path { .. }) {
        mount::remount_legacy(&now, b.kind)?;
    }
    if let Kind::Device {
        major: ma,
        minor: mi,
    } = b.kind
    {
        let st = nix::sys::stat::fstat(&now).map_err(std::io::Error::from)?;
        if kind(&st) != SFlag::S_IFCHR
            || major(st.st_rdev) as u32 != ma
            || minor(st.st_rdev) as u32 != mi
        {
            return Err(std::io::Error::other(format!(
                "{} is not the device {ma}:{mi} after mounting",
                b.target
            )));
        }
    }
    Ok(())
}
