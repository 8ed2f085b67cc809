//! `nvbox mock --gated`: the nodes of an HPC node's other drivers, as they register them —
//! nvidia-fs (GPUDirect Storage), gdrdrv (GDRCopy), the InfiniBand verbs, MAD and RDMA CM nodes
//! of MOFED, and the NVSwitch nodes of an HGX board — with their /proc/devices lines, GDS's
//! /etc/cufile.json and the udev database under /run/udev that cuFile reads.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::sys::stat::{Mode, SFlag, makedev, mknod};

use super::Spec;
use super::host::write;

/// Dynamic majors as the modules typically get them (nvidia-nvswitch is already listed by the
/// nvidia module); InfiniBand's are fixed, RDMA CM is a misc device.
pub const NVFS_MAJOR: u32 = 241;
pub const GDRDRV_MAJOR: u32 = 240;
pub const IB_MAJOR: u32 = 231;
pub const MISC_MAJOR: u32 = 10;
pub const RDMA_CM_MINOR: u32 = 121;
pub const NVSWITCH_MAJOR: u32 = 236;

/// nvidia-fs creates 16 nodes; an HGX H100 board has 4 NVSwitch chips; one ConnectX port.
const NVFS_NODES: u32 = 16;
const NVSWITCHES: u32 = 4;

/// `(path under /dev, major, minor, mode)`: the modes the drivers and rdma-core's udev rules set
/// (MAD nodes stay root-only, which is why MOFED's pattern leaves them out).
fn nodes() -> Vec<(String, u32, u32, u32)> {
    let mut n = Vec::new();
    for i in 0..NVFS_NODES {
        n.push((format!("nvidia-fs{i}"), NVFS_MAJOR, i, 0o666));
    }
    n.push(("gdrdrv".into(), GDRDRV_MAJOR, 0, 0o666));
    n.push(("infiniband/umad0".into(), IB_MAJOR, 0, 0o600));
    n.push(("infiniband/issm0".into(), IB_MAJOR, 64, 0o600));
    n.push(("infiniband/uverbs0".into(), IB_MAJOR, 192, 0o666));
    n.push((
        "infiniband/rdma_cm".into(),
        MISC_MAJOR,
        RDMA_CM_MINOR,
        0o666,
    ));
    n.push(("nvidia-nvswitchctl".into(), NVSWITCH_MAJOR, 255, 0o666));
    for i in 0..NVSWITCHES {
        n.push((format!("nvidia-nvswitch{i}"), NVSWITCH_MAJOR, i, 0o666));
    }
    n
}

const PROC_DEVICES: &[(u32, &str)] = &[
    (IB_MAJOR, "infiniband_verbs"),
    (IB_MAJOR, "infiniband_mad"),
    (GDRDRV_MAJOR, "gdrdrv"),
    (NVFS_MAJOR, "nvidia-fs"),
];

/// cuFile's configuration, trimmed from the one GDS installs.
const CUFILE_JSON: &str = r#"{
    "logging": {
        "level": "ERROR"
    },
    "profile": {
        "nvtx": false,
        "cufile_stats": 0
    },
    "execution": {
        "max_io_queue_depth": 128,
        "max_io_threads": 4,
        "parallel_io": true,
        "min_io_threshold_size_kb": 8192,
        "max_request_parallelism": 4
    },
    "properties": {
        "max_direct_io_size_kb": 16384,
        "max_device_cache_size_kb": 131072,
        "max_device_pinned_mem_size_kb": 33554432,
        "use_poll_mode": false,
        "poll_mode_max_size_kb": 4,
        "allow_compat_mode": true,
        "gds_rdma_write_support": true,
        "rdma_dev_addr_list": []
    },
    "fs": {
        "generic": {
            "posix_unaligned_writes": false
        }
    },
    "denylist": {
        "drivers": [],
        "devices": [],
        "mounts": [],
        "filesystems": []
    }
}
"#;

/// The udev record of the NVMe namespace GDS reads from.
const UDEV_NVME: &str = "S:disk/by-id/nvme-SAMSUNG_MZWLR3T8HBLS-00007_S6EXNE0T600123\nI:8123456\nE:ID_SERIAL_SHORT=S6EXNE0T600123\nE:ID_MODEL=SAMSUNG MZWLR3T8HBLS-00007\nE:ID_WWN=eui.36455830542001230025384500000001\nG:systemd\nQ:systemd\nV:1\n";

pub fn write_gated(spec: &Spec, notes: &mut Vec<String>) -> Result<()> {
    add_proc_devices(&spec.dir.join("proc/devices"))?;
    write(&spec.dir.join("etc/cufile.json"), CUFILE_JSON)?;
    write(&spec.dir.join("run/udev/data/b259:0"), UDEV_NVME)?;
    std::fs::create_dir_all(spec.dir.join("run/udev/tags/systemd"))?;
    let dev = spec.dir.join("dev");
    std::fs::create_dir_all(dev.join("infiniband"))?;
    let mut denied = 0;
    for (name, major, minor, mode) in nodes() {
        let path = dev.join(&name);
        let _ = std::fs::remove_file(&path);
        match mknod(
            &path,
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(mode),
            makedev(u64::from(major), u64::from(minor)),
        ) {
            // mknod's mode is cut by the umask.
            Ok(()) => std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?,
            Err(Errno::EPERM | Errno::EACCES) => denied += 1,
            Err(e) => return Err(e).with_context(|| format!("mknod {}", path.display())),
        }
    }
    if denied > 0 {
        notes.push(format!(
            "device nodes need root: {denied} gated nodes were not created under {}",
            dev.display()
        ));
    }
    Ok(())
}

/// The drivers' lines in the character section, in major order as the kernel lists them.
fn add_proc_devices(path: &Path) -> Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    let (chars, rest) = text.split_once("\n\n").unwrap_or((&text, ""));
    let mut lines: Vec<(u32, String)> = chars
        .lines()
        .skip(1)
        .filter_map(|l| {
            let (m, name) = l.trim().split_once(' ')?;
            Some((m.parse().ok()?, name.to_owned()))
        })
        .collect();
    for (major, name) in PROC_DEVICES {
        if !lines.iter().any(|(_, n)| n == name) {
            lines.push((*major, (*name).to_owned()));
        }
    }
    lines.sort_by_key(|(m, _)| *m);
    let mut out = String::from("Character devices:\n");
    for (m, name) in lines {
        out.push_str(&format!("{m:>3} {name}\n"));
    }
    out.push('\n');
    out.push_str(rest);
    write(path, out)
}
