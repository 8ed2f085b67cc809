//! Least privilege: which capabilities each phase of the live path holds (SECURITY.md,
//! "Privilege model"). A privileged entry point calls `restrict` before it reads anything a
//! container controls; from then on the bounding set is libnvidia-container's, the permitted set
//! is the union of the phases below, `no_new_privs` is on, and each phase raises exactly its own
//! effective set with `enter`. The debug log states every phase's effective set as the kernel
//! reports it in /proc/self/status.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use anyhow::{Result, anyhow};

use crate::sys::caps;

// uapi capability numbers (linux/capability.h).
pub const CAP_CHOWN: u32 = 0;
pub const CAP_DAC_OVERRIDE: u32 = 1;
pub const CAP_DAC_READ_SEARCH: u32 = 2;
pub const CAP_FOWNER: u32 = 3;
pub const CAP_KILL: u32 = 5;
pub const CAP_SETGID: u32 = 6;
pub const CAP_SETUID: u32 = 7;
pub const CAP_SETPCAP: u32 = 8;
pub const CAP_NET_ADMIN: u32 = 12;
pub const CAP_SYS_MODULE: u32 = 16;
pub const CAP_SYS_CHROOT: u32 = 18;
pub const CAP_SYS_PTRACE: u32 = 19;
pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_MKNOD: u32 = 27;

/// The names of the uapi capabilities, by number, as /proc and capsh spell them.
const NAMES: [&str; 41] = [
    "cap_chown",
    "cap_dac_override",
    "cap_dac_read_search",
    "cap_fowner",
    "cap_fsetid",
    "cap_kill",
    "cap_setgid",
    "cap_setuid",
    "cap_setpcap",
    "cap_linux_immutable",
    "cap_net_bind_service",
    "cap_net_broadcast",
    "cap_net_admin",
    "cap_net_raw",
    "cap_ipc_lock",
    "cap_ipc_owner",
    "cap_sys_module",
    "cap_sys_rawio",
    "cap_sys_chroot",
    "cap_sys_ptrace",
    "cap_sys_pacct",
    "cap_sys_admin",
    "cap_sys_boot",
    "cap_sys_nice",
    "cap_sys_resource",
    "cap_sys_time",
    "cap_sys_tty_config",
    "cap_mknod",
    "cap_lease",
    "cap_audit_write",
    "cap_audit_control",
    "cap_setfcap",
    "cap_mac_override",
    "cap_mac_admin",
    "cap_syslog",
    "cap_wake_alarm",
    "cap_block_suspend",
    "cap_audit_read",
    "cap_perfmon",
    "cap_bpf",
    "cap_checkpoint_restore",
];

const fn set(caps: &[u32]) -> u64 {
    let mut m = 0u64;
    let mut i = 0;
    while i < caps.len() {
        m |= 1 << caps[i];
        i += 1;
    }
    m
}

/// libnvidia-container's bounding set: what anything we exec could ever regain.
pub const BOUNDING: u64 = set(&[CAP_DAC_OVERRIDE, CAP_SYS_MODULE]);

/// libnvidia-container's permitted set (its "pcaps"); ours is a subset of it.
pub const UPSTREAM_PERMITTED: u64 = set(&[
    CAP_CHOWN,
    CAP_DAC_OVERRIDE,
    CAP_DAC_READ_SEARCH,
    CAP_FOWNER,
    CAP_KILL,
    CAP_MKNOD,
    CAP_NET_ADMIN,
    CAP_SETGID,
    CAP_SETPCAP,
    CAP_SETUID,
    CAP_SYS_ADMIN,
    CAP_SYS_CHROOT,
    CAP_SYS_PTRACE,
]);

/// A step of the live path, each with the capabilities it needs and nothing more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Reading config files, the OCI state, config.json and the host's driver files: root's own
    /// files need no capability.
    Discover,
    /// Loading kernel modules and creating host device nodes (`--load-kmods`).
    Kmods,
    /// Looking at the container from the host: its rootfs through /proc/<pid>/root, its
    /// namespaces and id maps (a user-namespaced init is another user to us).
    Container,
    /// Detaching host sources, entering the container's mount namespace, creating placeholders
    /// as the container's owner, mounting.
    Mount,
    /// Reading the image's ld.so.cache and library headers and writing the new cache as the
    /// container's owner, who owns its /etc.
    Ldcache,
    /// Running ldconfig instead (`[nvbox] ldcache = "ldconfig"`): a private mount namespace, a
    /// chroot, the owner's ids.
    Ldconfig,
    /// Programming the device cgroup (a BPF program on v2, devices.allow on v1).
    Cgroup,
    /// An `nvidia-cdi-hook` writing into the rootfs from a createContainer hook: files as the
    /// container's owner, `chmod` of its directories, a tmpfs over /proc/driver/nvidia/params.
    Hook,
    /// Done: nothing.
    Done,
}

impl Phase {
    pub const ALL: [Phase; 9] = [
        Phase::Discover,
        Phase::Kmods,
        Phase::Container,
        Phase::Mount,
        Phase::Ldcache,
        Phase::Ldconfig,
        Phase::Cgroup,
        Phase::Hook,
        Phase::Done,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Phase::Discover => "discover",
            Phase::Kmods => "kmods",
            Phase::Container => "container",
            Phase::Mount => "mount",
            Phase::Ldcache => "ldcache",
            Phase::Ldconfig => "ldconfig",
            Phase::Cgroup => "cgroup",
            Phase::Hook => "hook",
            Phase::Done => "done",
        }
    }

    /// The effective set of this phase.
    pub fn caps(self) -> u64 {
        match self {
            Phase::Discover | Phase::Ldcache | Phase::Done => 0,
            Phase::Kmods => set(&[CAP_CHOWN, CAP_FOWNER, CAP_MKNOD, CAP_DAC_OVERRIDE]),
            Phase::Container => set(&[CAP_DAC_READ_SEARCH, CAP_SYS_PTRACE]),
            Phase::Mount => set(&[
                CAP_SYS_ADMIN,
                CAP_SYS_CHROOT,
                CAP_SETUID,
                CAP_SETGID,
                CAP_DAC_OVERRIDE,
                CAP_DAC_READ_SEARCH,
                CAP_SYS_PTRACE,
            ]),
            Phase::Ldconfig => set(&[CAP_SYS_ADMIN, CAP_SYS_CHROOT, CAP_SETUID, CAP_SETGID]),
            Phase::Cgroup => set(&[CAP_SYS_ADMIN, CAP_NET_ADMIN]),
            Phase::Hook => set(&[
                CAP_SYS_CHROOT,
                CAP_DAC_OVERRIDE,
                CAP_DAC_READ_SEARCH,
                CAP_FOWNER,
                CAP_SYS_ADMIN,
                CAP_SETUID,
                CAP_SETGID,
            ]),
        }
    }
}

/// What `restrict` keeps permitted: the live path's phases, or a CDI hook's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `configure` and the prestart hook; `kmods`: modules are loaded first (their phase
    /// leaves the permitted set with `modules_loaded`).
    Live { kmods: bool },
    /// An `nvidia-cdi-hook`.
    Hook,
    /// `info` and `list`: discovery only (and the modules with `kmods`).
    Query { kmods: bool },
}

fn permitted_for(role: Role) -> u64 {
    match role {
        Role::Live { kmods } => {
            let mut p = 0;
            for ph in [
                Phase::Container,
                Phase::Mount,
                Phase::Ldcache,
                Phase::Ldconfig,
                Phase::Cgroup,
            ] {
                p |= ph.caps();
            }
            if kmods { p | Phase::Kmods.caps() } else { p }
        }
        Role::Hook => Phase::Hook.caps(),
        Role::Query { kmods: true } => Phase::Kmods.caps(),
        Role::Query { kmods: false } => 0,
    }
}

static ACTIVE: AtomicBool = AtomicBool::new(false);
/// What stays permitted once the modules are loaded: the role's set without `kmods`.
static KEEP: AtomicU64 = AtomicU64::new(0);
static NO_NEW_PRIVS_LATER: AtomicBool = AtomicBool::new(false);

/// Shrink this process to `role`'s capabilities and enter `Phase::Discover`. Without root
/// (euid ≠ 0 in our namespace) there is nothing to give up and nothing is changed.
/// With `kmods`, `no_new_privs` waits for `modules_loaded` (modprobe must regain
/// CAP_SYS_MODULE from the bounding set, as upstream's kmods child does).
pub fn restrict(role: Role) -> Result<()> {
    if !nix::unistd::geteuid().is_root() || ACTIVE.load(Ordering::Relaxed) {
        return Ok(());
    }
    let fail = |e: std::io::Error| {
        anyhow!(
            "permission error: capability change failed: {}",
            crate::discover::files::lower_io(&e)
        )
    };
    let now = caps::get().map_err(fail)?;
    // Dropping a capability that is already gone succeeds; one past the kernel's last is
    // EINVAL, which ends the walk (about 40 prctl calls in all).
    for cap in 0..64 {
        if BOUNDING & (1 << cap) != 0 {
            continue;
        }
        match caps::drop_bounding(cap) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => break,
            Err(e) => return Err(fail(e)),
        }
    }
    caps::clear_ambient().map_err(fail)?;
    let permitted = permitted_for(role) & now.permitted;
    caps::set(caps::Sets {
        effective: 0,
        permitted,
        inheritable: 0,
    })
    .map_err(fail)?;
    KEEP.store(
        match role {
            Role::Live { .. } => permitted_for(Role::Live { kmods: false }),
            Role::Query { .. } => 0,
            Role::Hook => permitted_for(Role::Hook),
        },
        Ordering::Relaxed,
    );
    ACTIVE.store(true, Ordering::Relaxed);
    if matches!(
        role,
        Role::Live { kmods: true } | Role::Query { kmods: true }
    ) {
        NO_NEW_PRIVS_LATER.store(true, Ordering::Relaxed);
    } else {
        nix::sys::prctl::set_no_new_privs()
            .map_err(|e| anyhow!("permission error: no_new_privs: {}", e.desc()))?;
    }
    if crate::log::enabled() {
        crate::info!(
            "privileges: bounding {} permitted {} no_new_privs {}",
            names(status_value("CapBnd")),
            names(status_value("CapPrm")),
            status_value("NoNewPrivs")
        );
    }
    enter(Phase::Discover);
    Ok(())
}

/// The modules are loaded (`--load-kmods`): their capabilities go for good, and no_new_privs
/// comes, before anything of the container is read.
pub fn modules_loaded() {
    if !NO_NEW_PRIVS_LATER.swap(false, Ordering::Relaxed) {
        return;
    }
    if let Ok(now) = caps::get() {
        let _ = caps::set(caps::Sets {
            effective: 0,
            permitted: now.permitted & KEEP.load(Ordering::Relaxed),
            inheritable: 0,
        });
    }
    let _ = nix::sys::prctl::set_no_new_privs();
    if crate::log::enabled() {
        crate::info!(
            "privileges: modules loaded: permitted {} no_new_privs {}",
            names(status_value("CapPrm")),
            status_value("NoNewPrivs")
        );
    }
    enter(Phase::Discover);
}

/// Raise exactly `phase`'s effective set (within what is permitted). Does nothing unless
/// `restrict` ran: a caller without root has no capabilities to manage.
pub fn enter(phase: Phase) {
    if !ACTIVE.load(Ordering::Relaxed) {
        return;
    }
    let result = caps::get().and_then(|now| {
        caps::set(caps::Sets {
            effective: phase.caps() & now.permitted,
            permitted: now.permitted,
            inheritable: 0,
        })
    });
    if let Err(e) = result {
        crate::warn!("privileges: phase {}: capset: {e}", phase.name());
    }
    if crate::log::enabled() {
        crate::info!(
            "privileges: phase {}: effective {}",
            phase.name(),
            names(status_value("CapEff"))
        );
    }
}

/// A hex field of /proc/self/status (`CapEff:\t0000000000000000`, `NoNewPrivs:\t1`).
fn status_value(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0)
}

/// `cap_a,cap_b` (or `none`).
pub fn names(mask: u64) -> String {
    let list: Vec<String> = (0..64)
        .filter(|c| mask & (1u64 << c) != 0)
        .map(|c| {
            NAMES
                .get(c)
                .map_or_else(|| format!("cap_{c}"), |n| n.to_string())
        })
        .collect();
    if list.is_empty() {
        "none".to_owned()
    } else {
        list.join(",")
    }
}

/// Whether we run in a user namespace other than the initial one (a rootless engine, or a
/// hook the runtime started inside the container's namespace), by libnvidia-container's test.
pub fn in_user_namespace() -> bool {
    let full = |f: &str| match std::fs::read_to_string(f) {
        Ok(t) => t.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"],
        Err(_) => true,
    };
    let deny = std::fs::read_to_string("/proc/self/setgroups").is_ok_and(|s| s.starts_with("deny"));
    !(full("/proc/self/uid_map") && full("/proc/self/gid_map")) || deny
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_phase_is_within_upstreams_permitted_set() {
        for ph in Phase::ALL {
            assert_eq!(
                ph.caps() & !UPSTREAM_PERMITTED,
                0,
                "{}: {}",
                ph.name(),
                names(ph.caps() & !UPSTREAM_PERMITTED)
            );
        }
        for role in [
            Role::Live { kmods: true },
            Role::Hook,
            Role::Query { kmods: true },
        ] {
            assert_eq!(permitted_for(role) & !UPSTREAM_PERMITTED, 0);
        }
    }

    #[test]
    fn discovery_and_the_image_cache_hold_nothing() {
        assert_eq!(Phase::Discover.caps(), 0);
        assert_eq!(Phase::Ldcache.caps(), 0);
        assert_eq!(names(Phase::Discover.caps()), "none");
        assert_eq!(names(Phase::Cgroup.caps()), "cap_net_admin,cap_sys_admin");
    }
}
