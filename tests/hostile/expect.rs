//! What each path must leave in the rootfs when it succeeds (seen through a [`View`], so
//! "in the rootfs" means where the container will find it), and the guard every case runs
//! under: canaries and host state before/after, and a blocked writer on every FIFO in the
//! rootfs, which returns only if something opened the FIFO (a privileged process must never
//! open special files an image planted).

use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::thread::JoinHandle;
use std::time::Duration;

use nix::sys::stat::{SFlag, major, minor};

use super::Outcome;
use super::canary::Canaries;
use super::canary::{HostState, host_diff, host_state, snapshot_tree, tree_diff};
use super::sandbox::{Entry, View};

pub const LIBS: &str = "/usr/lib/x86_64-linux-gnu";
pub const LIB: &str = "libcuda.so.535.104.05";
pub const CHMOD_PATHS: &[&str] = &[LIBS, "/dev/nvidia1", "/etc/ld.so.cache"];
pub const PROFILE: &str = "/etc/nvidia/nvidia-application-profiles-rc.d/10-container.conf";

/// Facts about the rootfs before the run that decide what a correct result is.
pub struct Pre {
    pub debian: bool,
    pub libdir_lib: bool,
    pub compat: bool,
    pub params: bool,
    pub gpu_node: bool,
    /// The chmod paths that exist and are not symlinks themselves.
    pub chmod: Vec<&'static str>,
}

fn not_a_link(view: &View, abs: &str) -> bool {
    view.readlink(abs).is_none()
}

pub fn pre(view: &View) -> Pre {
    let compat = view
        .list("/usr/local/cuda/compat")
        .iter()
        .filter(|n| n.starts_with("libcuda.so.") && n[11..].contains('.'))
        .filter(|n| view.is_file(&format!("/usr/local/cuda/compat/{n}")))
        .count()
        == 1;
    let gpu_node = view.list("/dev").iter().any(|n| {
        let digits = n.strip_prefix("nvidia").unwrap_or("");
        let path = format!("/dev/{n}");
        !digits.is_empty()
            && digits.bytes().all(|b| b.is_ascii_digit())
            && not_a_link(view, &path)
            && view.get(&path).is_some_and(|e| e.kind() == SFlag::S_IFCHR)
    });
    let params = "/proc/driver/nvidia/params";
    Pre {
        debian: view.get("/etc/debian_version").is_some(),
        libdir_lib: view.is_file(&format!("{LIBS}/{LIB}")),
        compat,
        params: not_a_link(view, params) && view.is_file(params),
        gpu_node,
        chmod: CHMOD_PATHS
            .iter()
            .copied()
            .filter(|p| not_a_link(view, p) && view.get(p).is_some())
            .collect(),
    }
}

fn want(o: &mut Outcome, cond: bool, what: &str) {
    if !cond {
        o.problems.push(format!("succeeded but {what}"));
    }
}

fn is_node(e: Option<Entry>, ma: u64, mi: u64) -> bool {
    e.is_some_and(|e| {
        e.kind() == SFlag::S_IFCHR && major(e.stat.st_rdev) == ma && minor(e.stat.st_rdev) == mi
    })
}

/// The driver as the live backend injects it (configure and the legacy hook).
pub fn check_live(view: &View, pre: &Pre, o: &mut Outcome) {
    let libs = if pre.debian { LIBS } else { "/usr/lib64" };
    let size = std::fs::metadata(super::mock_libcuda()).unwrap().len();
    let lib = view.get(&format!("{libs}/{LIB}"));
    want(
        o,
        lib.is_some_and(|e| e.kind() == SFlag::S_IFREG && e.stat.st_size as u64 == size),
        &format!("{libs}/{LIB} is not the host's libcuda"),
    );
    check_common(view, libs, o);
    want(
        o,
        view.is_file("/usr/bin/nvidia-smi"),
        "/usr/bin/nvidia-smi is missing",
    );
    want(
        o,
        view.contains("/proc/driver/nvidia/params", b"ModifyDeviceFiles: 0"),
        "/proc/driver/nvidia/params is not masked",
    );
    want(
        o,
        view.contains(PROFILE, b"EGLVisibleDGPUDevices"),
        "the application profile is missing",
    );
}

/// The driver as jit-cdi injects it (runc mounts, then the combined hook): at the host's
/// library directory whatever the image's is, as upstream.
pub fn check_jit(view: &View, _pre: &Pre, o: &mut Outcome) {
    let libs = LIBS;
    want(
        o,
        view.is_file(&format!("{libs}/{LIB}")),
        &format!("{libs}/{LIB} is missing"),
    );
    check_common(view, libs, o);
}

fn check_common(view: &View, libs: &str, o: &mut Outcome) {
    want(
        o,
        view.readlink(&format!("{libs}/libcuda.so.1")).as_deref() == Some(LIB),
        "the libcuda.so.1 soname link is missing",
    );
    want(
        o,
        is_node(view.get("/dev/nvidia0"), 195, 0) && is_node(view.get("/dev/nvidiactl"), 195, 255),
        "/dev/nvidia0 or /dev/nvidiactl is not the GPU's node",
    );
    want(
        o,
        view.contains("/etc/ld.so.cache", b"libcuda.so.1"),
        "/etc/ld.so.cache does not list libcuda.so.1",
    );
}

pub const LINKS: &[(&str, &str)] = &[
    ("libcuda.so.1", "/usr/lib/x86_64-linux-gnu/libcuda.so"),
    ("/dev/null", "/etc/nvbox-hostile-link"),
    (
        "../lib/x86_64-linux-gnu/libcuda.so.1",
        "/usr/lib64/libcuda.so.1",
    ),
];

/// A successful `nvidia-cdi-hook HOOK`'s effect.
pub fn check_hook(hook: &str, view: &View, pre: &Pre, o: &mut Outcome) {
    match hook {
        "create-symlinks" => {
            for (target, link) in LINKS {
                want(
                    o,
                    view.readlink(link).as_deref() == Some(*target),
                    &format!("{link} is not a link to {target}"),
                );
            }
        }
        "update-ldcache" => {
            want(
                o,
                view.contains("/etc/ld.so.cache", b"glibc-ld.so.cache1.1"),
                "/etc/ld.so.cache was not written",
            );
            if pre.libdir_lib {
                want(
                    o,
                    view.contains("/etc/ld.so.cache", b"libcuda.so.1"),
                    "/etc/ld.so.cache does not list libcuda.so.1",
                );
            }
        }
        "enable-cuda-compat" if pre.compat => {
            let found = view.list("/etc/ld.so.conf.d").iter().any(|n| {
                n.starts_with("00-compat-")
                    && view.contains(&format!("/etc/ld.so.conf.d/{n}"), b"/usr/local/cuda/compat")
            });
            want(o, found, "no 00-compat-*.conf names the compat directory");
        }
        "disable-device-node-modification" if pre.params => want(
            o,
            view.contains("/proc/driver/nvidia/params", b"ModifyDeviceFiles: 0"),
            "/proc/driver/nvidia/params is not masked",
        ),
        "chmod" => {
            for p in &pre.chmod {
                let mode = view.get(p).map(|e| e.stat.st_mode & 0o7777);
                want(
                    o,
                    mode == Some(0o750),
                    &format!("{p} has mode {:o}", mode.unwrap_or(0)),
                );
            }
        }
        "update-application-profile" if pre.gpu_node => want(
            o,
            view.contains(PROFILE, b"EGLVisibleDGPUDevices"),
            "the application profile is missing",
        ),
        _ => {}
    }
}

/// A thread blocked opening a FIFO for writing: it returns once anything opens it to read.
struct Watcher {
    path: String,
    fd: std::os::fd::OwnedFd,
    thread: JoinHandle<()>,
}

/// Snapshots taken before a run, checked after it.
pub struct Guard {
    canaries: std::collections::BTreeMap<String, String>,
    host: HostState,
    watchers: Vec<Watcher>,
}

impl Guard {
    /// `rootfs`: the rootfs as the test reaches it (a sandbox's view or the plain directory).
    pub fn arm(canaries: &Canaries, rootfs: &Path) -> Guard {
        let view = View::open(rootfs);
        let mut watchers = Vec::new();
        for (rel, line) in snapshot_tree(rootfs, false) {
            let mode = line
                .split(' ')
                .next()
                .and_then(|m| u32::from_str_radix(m, 8).ok());
            if mode.is_none_or(|m| m & SFlag::S_IFMT.bits() != SFlag::S_IFIFO.bits()) {
                continue;
            }
            let Some(entry) = view.get(&rel) else {
                continue;
            };
            let fd = entry.fd;
            let reopen = format!("/proc/self/fd/{}", fd.as_raw_fd());
            let thread = std::thread::spawn(move || {
                let _ = std::fs::OpenOptions::new().write(true).open(reopen);
            });
            watchers.push(Watcher {
                path: rel,
                fd,
                thread,
            });
        }
        if !watchers.is_empty() {
            // Let every writer block in open(2) before the run starts.
            std::thread::sleep(Duration::from_millis(50));
        }
        Guard {
            canaries: canaries.snapshot(),
            host: host_state(),
            watchers,
        }
    }

    pub fn check(self, canaries: &Canaries, o: &mut Outcome) {
        o.problems.extend(tree_diff(
            "host canary",
            &self.canaries,
            &canaries.snapshot(),
        ));
        o.problems.extend(host_diff(&self.host, &host_state()));
        std::thread::sleep(Duration::from_millis(if self.watchers.is_empty() {
            0
        } else {
            20
        }));
        for w in self.watchers {
            if w.thread.is_finished() {
                o.problems
                    .push(format!("the FIFO {} in the rootfs was opened", w.path));
            } else {
                // Release the writer ourselves.
                let _ = std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NONBLOCK)
                    .open(format!("/proc/self/fd/{}", w.fd.as_raw_fd()));
            }
            let _ = w.thread.join();
        }
    }
}
