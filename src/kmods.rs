//! `--load-kmods`: load the NVIDIA kernel modules and create the host's device nodes, as
//! nvidia-modprobe does for libnvidia-container (reference libnvidia-container.md §5.1).
//! Every failure here is only logged: the command that follows reports what is really missing.

use std::path::Path;
use std::process::{Command, Stdio};

use nix::sys::stat::{Mode, SFlag, makedev, mknod, stat};
use nix::unistd::{Gid, Uid, chown, geteuid};

use crate::discover::Roots;
use crate::discover::devices::Majors;
use crate::{info, warn};

/// What the driver's `params` say about node creation.
struct NodeAttrs {
    modify: bool,
    uid: u32,
    gid: u32,
    mode: u32,
}

impl NodeAttrs {
    fn read(roots: &Roots) -> NodeAttrs {
        let text = std::fs::read_to_string(roots.proc_path("/proc/driver/nvidia/params"))
            .unwrap_or_default();
        let get = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
                .and_then(|v| v.trim().parse::<u32>().ok())
        };
        NodeAttrs {
            modify: get("ModifyDeviceFiles").unwrap_or(1) == 1,
            uid: get("DeviceFileUID").unwrap_or(0),
            gid: get("DeviceFileGID").unwrap_or(0),
            mode: get("DeviceFileMode").unwrap_or(0o666),
        }
    }
}

/// Load `nvidia`, `nvidia-uvm`, `nvidia-modeset` when missing, then create their nodes under
/// the dev root. `minors` are the GPUs' minors when the driver already lists them. True when
/// `nvidia` was not loaded before: GPUs read earlier may then be out of date.
pub fn load_kernel_modules(roots: &Roots, minors: &[u32]) -> bool {
    if crate::privilege::in_user_namespace() {
        warn!("skipping kernel modules load due to user namespace");
        return false;
    }
    if !geteuid().is_root() {
        info!("not root: skipping kernel modules load");
        return false;
    }
    // The PCI walk decides whether to load `nvidia` and how many GPU nodes to make; a loaded
    // driver that lists its GPUs answers both, so the walk (two sysfs reads a PCI device) is
    // skipped on every container start of a healthy host.
    let pci = if !minors.is_empty() && module_loaded(roots, "nvidia") {
        minors.len() as u32
    } else {
        count_nvidia_pci_devices(roots)
    };
    if pci == 0 {
        warn!("failed to detect NVIDIA devices");
    }
    let loaded_nvidia = pci > 0 && modprobe(roots, "nvidia");
    modprobe(roots, "nvidia-uvm");
    modprobe(roots, "nvidia-modeset");
    let attrs = NodeAttrs::read(roots);
    if !attrs.modify {
        info!("ModifyDeviceFiles is 0: leaving device nodes alone");
        return loaded_nvidia;
    }
    let majors = Majors::read(roots).unwrap_or_default();
    let mut nodes: Vec<(String, u32, u32)> = vec![("/dev/nvidiactl".into(), 195, 255)];
    let gpu_minors: Vec<u32> = if minors.is_empty() {
        (0..pci).collect()
    } else {
        minors.to_vec()
    };
    for m in gpu_minors {
        nodes.push((format!("/dev/nvidia{m}"), 195, m));
    }
    if let Some(uvm) = majors.uvm {
        nodes.push(("/dev/nvidia-uvm".into(), uvm, 0));
        nodes.push(("/dev/nvidia-uvm-tools".into(), uvm, 1));
    }
    if module_loaded(roots, "nvidia-modeset") {
        nodes.push(("/dev/nvidia-modeset".into(), 195, 254));
    }
    for (path, major, minor) in nodes {
        create_node(&roots.dev_path(&path), major, minor, &attrs);
    }
    loaded_nvidia
}

fn count_nvidia_pci_devices(roots: &Roots) -> u32 {
    let Ok(entries) = std::fs::read_dir(roots.sys_path("/sys/bus/pci/devices")) else {
        return 0;
    };
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    entries
        .flatten()
        .filter(|e| {
            read(&e.path().join("vendor")).trim() == "0x10de"
                && read(&e.path().join("class")).trim().starts_with("0x03")
        })
        .count() as u32
}

fn module_loaded(roots: &Roots, name: &str) -> bool {
    let dir = name.replace('-', "_");
    roots
        .sys_path(&format!("/sys/module/{dir}/initstate"))
        .exists()
}

/// Load `name` unless loaded; true when it was not loaded (whether or not loading worked).
fn modprobe(roots: &Roots, name: &str) -> bool {
    if module_loaded(roots, name) {
        return false;
    }
    let path = std::fs::read_to_string(roots.proc_path("/proc/sys/kernel/modprobe"))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "/sbin/modprobe".into());
    let ok = Command::new(&path)
        .arg(name)
        .env_clear()
        .env("PATH", "/sbin")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok && module_loaded(roots, name) {
        info!("loaded kernel module {name}");
    } else {
        warn!("could not load kernel module {name} with {path}");
    }
    true
}

/// Make `path` the character device `major:minor` with the driver's mode and owner (from
/// `params`), as nvidia-modprobe would; errors if it is not that node afterwards.
pub fn ensure_node(roots: &Roots, path: &Path, major: u32, minor: u32) -> std::io::Result<()> {
    create_node(path, major, minor, &NodeAttrs::read(roots));
    let st = stat(path).map_err(std::io::Error::from)?;
    let rdev = makedev(u64::from(major), u64::from(minor));
    if SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) != SFlag::S_IFCHR
        || st.st_rdev != rdev
    {
        return Err(std::io::Error::other("not the expected character device"));
    }
    Ok(())
}

/// Keep a node of the right type and number; replace anything else; then set mode and owner.
fn create_node(path: &Path, major: u32, minor: u32, attrs: &NodeAttrs) {
    let rdev = makedev(u64::from(major), u64::from(minor));
    let mode = Mode::from_bits_truncate(attrs.mode & 0o777);
    let before = stat(path).ok().filter(|st| {
        SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFCHR
            && st.st_rdev == rdev
    });
    // A node already as the driver wants it is left alone: chmod and chown would still dirty
    // its inode on every container start.
    if before.is_some_and(|st| {
        st.st_mode & 0o7777 == attrs.mode & 0o777
            && st.st_uid == attrs.uid
            && st.st_gid == attrs.gid
    }) {
        return;
    }
    if before.is_none() {
        let _ = std::fs::remove_file(path);
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if let Err(e) = mknod(path, SFlag::S_IFCHR, mode, rdev) {
            warn!("mknod {}: {e}", path.display());
            return;
        }
        info!("created device node {} ({major}:{minor})", path.display());
    }
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(attrs.mode & 0o777));
    let _ = chown(
        path,
        Some(Uid::from_raw(attrs.uid)),
        Some(Gid::from_raw(attrs.gid)),
    );
}
