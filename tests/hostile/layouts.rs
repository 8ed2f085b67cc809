//! The hostile layouts: each plants its trap in a fresh rootfs (already holding the base
//! contents) and aims it at the case's host canaries (`@H` is their directory). Some also need
//! a mount in the rootfs, made in the case's own namespace (or, under runc, by the spec).

use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;

use super::canary::Canaries;

/// A mount the layout needs inside the rootfs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Ns {
    Plain,
    /// The whole rootfs bind-mounted read-only onto itself (runc: `root.readonly`).
    ReadOnly,
    /// A tmpfs at this rootfs path.
    Tmpfs(&'static str),
    /// A read-only tmpfs at this rootfs path.
    RoTmpfs(&'static str),
    /// A real procfs at /proc, so `/proc/self/root` and friends are magic links (runc always
    /// has one).
    Proc,
    /// The canaries' device node bind-mounted at /dev/null, as runc binds the host's.
    HostNode,
}

pub struct Layout {
    pub name: &'static str,
    pub plant: fn(&Path, &Canaries),
    pub ns: Ns,
    /// Also run through real runc (legacy hook and jit-cdi).
    pub runc: bool,
}

impl Ns {
    /// Shell lines for the case's namespace (`root`: the rootfs).
    pub fn setup(self, root: &Path, h: &Canaries) -> String {
        let r = root.display();
        match self {
            Ns::Plain => String::new(),
            Ns::ReadOnly => format!("mount --bind {r} {r}; mount -o remount,bind,ro {r}"),
            Ns::Tmpfs(p) => format!("mount -t tmpfs tmpfs {r}/{p}"),
            Ns::RoTmpfs(p) => format!("mount -t tmpfs -o ro tmpfs {r}/{p}"),
            Ns::Proc => format!("mount -t proc proc {r}/proc"),
            Ns::HostNode => format!(
                "touch {r}/dev/null; mount --bind {} {r}/dev/null",
                h.node().display()
            ),
        }
    }
}

/// Replace whatever is at `rel` with a symlink to `target` (`@H` filled in).
fn link(root: &Path, rel: &str, target: &str, h: &Canaries) {
    let p = root.join(rel);
    remove(&p);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    symlink(h.fill(target), &p).unwrap();
}

fn remove(p: &Path) {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p).unwrap(),
        Ok(_) => std::fs::remove_file(p).unwrap(),
        Err(_) => {}
    }
}

fn mknod(p: &Path, kind: &str, major: u32, minor: u32) {
    remove(p);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    let mut c = Command::new("mknod");
    c.arg(p).arg(kind);
    if kind != "p" {
        c.args([major.to_string(), minor.to_string()]);
    }
    assert!(c.status().unwrap().success(), "mknod {}", p.display());
}

fn socket(p: &Path) {
    remove(p);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    drop(std::os::unix::net::UnixListener::bind(p).unwrap());
}

fn file(p: &Path, data: &str) {
    remove(p);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

const LIBS: &str = "usr/lib/x86_64-linux-gnu";
const DOTS: &str = "../../../../../../../../../../../..";

/// A path of `n` components of `len` bytes each.
fn long_path(c: char, len: usize, n: usize) -> String {
    let comp: String = std::iter::repeat_n(c, len).collect();
    (0..n).map(|_| format!("/{comp}")).collect()
}

pub const LAYOUTS: &[Layout] = &[
    Layout {
        name: "benign",
        plant: |_, _| {},
        ns: Ns::Plain,
        runc: true,
    },
    Layout {
        name: "libdir->host-dir",
        plant: |r, h| link(r, LIBS, "@H/dir", h),
        ns: Ns::Plain,
        runc: true,
    },
    Layout {
        name: "libdir->../..host-dir",
        plant: |r, h| link(r, LIBS, &format!("{DOTS}@H/dir"), h),
        ns: Ns::Plain,
        runc: true,
    },
    Layout {
        name: "libdir->/",
        plant: |r, h| link(r, LIBS, "/", h),
        ns: Ns::Plain,
        runc: false,
    },
    Layout {
        name: "usr->host",
        plant: |r, h| link(r, "usr", "@H", h),
        ns: Ns::Plain,
        runc: false,
    },
    Layout {
        name: "bin->../..host-dir",
        plant: |r, h| link(r, "usr/bin", &format!("../{DOTS}@H/dir"), h),
        ns: Ns::Plain,
        runc: false,
    },
    Layout {
        name: "etc->host-etc",
        plant: |r, h| link(r, "etc", "@H/etc", h),
        ns: Ns::Plain,
        runc: true,
    },
    Layout {
        name: "etc->../..host-etc",
        plant: |r, h| link(r, "etc", &format!("{DOTS}@H/etc"), h),
        ns: Ns::Plain,
        runc: false,
    },
    Layout {
        name: "etc->/",
        plant: |r, h| link(r, "etc", "/", h),
        ns: Ns::Plain,
        runc: false,
    },
    Layout {
        name: "ldcache->host-file",
        plant: |r, h| link(r, "etc/ld.so.cache", "@H/etc/ld.so.cache", h),
        ns: Ns::Plain,
        runc: true,
    },
    Layout {
        name: "ldcache->../..host-file",
        plant: |r, h| {
            link(
                r,
                "etc/ld.so.cache",
                &format!("{DOTS}@H/etc/ld.so.cache"),
                h,
            )
        },
        ns: Ns::Plain,
        runc: false,
    },
    Layout {
        name: "ldconf->host",
        plant: |r, h| {
            link(r, "etc/ld.so.conf.d", "@H/etc/ld.so.conf.d", h);
            link(r, "etc/ld.so.conf", "@H/etc/ld.so.conf", h);
        },
        ns: Ns::Plain,
        runc: true,
    },
    Layout {
        name: "proc/driver->host-dir",
        plant: |r, h| link(r, "proc/driver", "@H/dir", h),
        ns: Ns::Plain,
        runc: false,
    },
    Layout {
        name: "proc/driver/nvidia->host-dir",
        plant: |r, h| link(r, "proc/driver/nvidia", "@H/dir", h),
        ns: Ns::Plain,
        runc: false,
    },
    // Not under runc: runc 1.1.5 itself (no hook at all) makes its /dev/fd, /dev/ptmx, … links
    // through an image's `dev` symlink on the host.
    Layout {
        name: "dev->host-dev",
        plant: |r, h| link(r, "dev", "@H/dev", h),
        ns: Ns::Plain,
        runc: false,
    },
    Layout {
        name: "dev->../..host-dev",
        plant: |r, h| link(r, "dev", &format!("{DOTS}@H/dev"), h),
        ns: Ns::Plain,
        runc: false,
    },
    Layout {
        name: "dev-nodes->host-nodes",
        plant: |r, h| {
            link(r, "dev/nvidia0", "@H/dev/null", h);
            link(r, "dev/nvidiactl", "/dev/null", h);
            link(r, "dev/nvidia-uvm", &format!("{DOTS}@H/dev/null"), h);
        },
        ns: Ns::Plain,
        runc: false,
    },
    Layout {
        name: "links->bound-host-node",
        plant: |r, h| {
            link(r, "dev/nvidia1", "/dev/null", h);
            link(r, "etc/ld.so.cache", "/dev/null", h);
            link(
                r,
                "usr/local/cuda/compat/libcuda.so.600.1.1",
                "/dev/null",
                h,
            );
        },
        ns: Ns::HostNode,
        runc: false,
    },
    Layout {
        name: "magic:/proc/self/root",
        plant: |r, h| {
            link(r, LIBS, "/proc/self/root@H/dir", h);
            link(r, "etc", "/proc/self/root@H/etc", h);
        },
        ns: Ns::Proc,
        runc: true,
    },
    Layout {
        name: "magic:/proc/1/root",
        plant: |r, h| {
            link(r, "dev", "/proc/1/root@H/dev", h);
            link(r, "usr/local/cuda", "/proc/1/root@H/dir", h);
            link(r, "etc/ld.so.cache", "/proc/1/root@H/etc/ld.so.cache", h);
        },
        ns: Ns::Proc,
        runc: true,
    },
    Layout {
        name: "magic:/proc/self/{cwd,fd}",
        plant: |r, h| {
            link(
                r,
                "etc/ld.so.conf.d",
                "/proc/self/cwd@H/etc/ld.so.conf.d",
                h,
            );
            link(r, "usr/bin", "/proc/thread-self/cwd@H/dir", h);
            link(r, LIBS, "/proc/self/fd/0", h);
        },
        ns: Ns::Proc,
        runc: true,
    },
    Layout {
        name: "dir-at-binary-target",
        plant: |r, _| file(&r.join("usr/bin/nvidia-smi/keep"), "x"),
        ns: Ns::Plain,
        runc: true,
    },
    Layout {
        // Fails at the last step of configure, after mounts and links were made.
        name: "dir-at-ld.so.cache",
        plant: |r, _| file(&r.join("etc/ld.so.cache/keep"), "x"),
        ns: Ns::Plain,
        runc: true,
    },
    Layout {
        name: "fifos-at-targets",
        plant: |r, _| {
            for p in [
                "etc/ld.so.cache",
                "etc/ld.so.conf",
                "usr/lib/x86_64-linux-gnu/libfifo.so.1",
                "usr/lib/x86_64-linux-gnu/libnvidia-ml.so.535.104.05",
                "usr/local/cuda/compat/libcuda.so.600.1.1",
                "usr/bin/nvidia-smi",
            ] {
                mknod(&r.join(p), "p", 0, 0);
            }
        },
        ns: Ns::Plain,
        runc: true,
    },
    Layout {
        name: "sockets-at-targets",
        plant: |r, _| {
            for p in [
                "dev/nvidia1",
                "usr/lib/x86_64-linux-gnu/libcuda.so.535.104.05",
                "etc/ld.so.cache",
            ] {
                socket(&r.join(p));
            }
        },
        ns: Ns::Plain,
        runc: false,
    },
    Layout {
        name: "nodes-at-targets",
        plant: |r, _| {
            mknod(
                &r.join("usr/lib/x86_64-linux-gnu/libnvidia-ml.so.535.104.05"),
                "c",
                1,
                3,
            );
            mknod(&r.join("dev/nvidiactl"), "c", 1, 3);
            mknod(&r.join("etc/ld.so.cache"), "c", 1, 5);
            mknod(&r.join("usr/lib/x86_64-linux-gnu/libnode.so.1"), "c", 1, 5);
        },
        ns: Ns::Plain,
        runc: true,
    },
    Layout {
        name: "read-only-rootfs",
        plant: |_, _| {},
        ns: Ns::ReadOnly,
        runc: true,
    },
    Layout {
        name: "nested-tmpfs-usr/lib",
        plant: |_, _| {},
        ns: Ns::Tmpfs("usr/lib"),
        runc: true,
    },
    Layout {
        name: "nested-ro-etc",
        plant: |_, _| {},
        ns: Ns::RoTmpfs("etc"),
        runc: true,
    },
    Layout {
        name: "long-components",
        plant: |r, h| link(r, LIBS, &long_path('l', 255, 14), h),
        ns: Ns::Plain,
        runc: true,
    },
    Layout {
        name: "beyond-PATH_MAX",
        plant: |r, h| {
            let dirs = long_path('d', 250, 12);
            std::fs::create_dir_all(r.join(dirs.trim_start_matches('/'))).unwrap();
            link(r, LIBS, &format!("{dirs}/L"), h);
            let rel = long_path('e', 250, 12);
            link(
                r,
                &format!("{}/L", dirs.trim_start_matches('/')),
                rel.trim_start_matches('/'),
                h,
            );
        },
        ns: Ns::Plain,
        runc: false,
    },
    Layout {
        name: "name-too-long",
        plant: |r, h| link(r, LIBS, &long_path('n', 256, 1), h),
        ns: Ns::Plain,
        runc: true,
    },
    Layout {
        name: "symlink-loops",
        plant: |r, h| {
            link(r, LIBS, "x86_64-linux-gnu", h);
            link(r, "etc/ld.so.conf.d", "/etc/ld.so.conf.d", h);
        },
        ns: Ns::Plain,
        runc: true,
    },
    Layout {
        name: "dangling-chain",
        plant: |r, h| {
            link(r, LIBS, "/opt/a/libs", h);
            link(r, "opt/a", "../srv/b", h);
            link(r, "srv/b", &format!("{DOTS}@H/dir"), h);
        },
        ns: Ns::Plain,
        runc: true,
    },
    Layout {
        name: "etc-is-a-file",
        plant: |r, _| file(&r.join("etc"), "not a directory"),
        ns: Ns::Plain,
        runc: true,
    },
    Layout {
        name: "libdir-is-a-file",
        plant: |r, _| file(&r.join(LIBS), "not a directory"),
        ns: Ns::Plain,
        runc: false,
    },
    Layout {
        name: "cuda-compat->host-dir",
        plant: |r, h| link(r, "usr/local/cuda/compat", "@H/dir", h),
        ns: Ns::Plain,
        runc: false,
    },
    Layout {
        name: "etc/nvidia->host-dir",
        plant: |r, h| link(r, "etc/nvidia", "@H/dir", h),
        ns: Ns::Plain,
        runc: true,
    },
    Layout {
        name: "run->host-dir",
        plant: |r, h| link(r, "run", "@H/dir", h),
        ns: Ns::Plain,
        runc: false,
    },
];
