//! The kernel side of a simulated host: what the nvidia, nvidia-uvm and nvidia-caps modules
//! would publish in procfs, sysfs and /dev.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::sys::stat::{Mode, SFlag, makedev, mknod};

use super::Spec;

/// Majors the mock registers in its /proc/devices (dynamic on real hosts; these are typical).
pub const UVM_MAJOR: u32 = 505;
pub const CAPS_MAJOR: u32 = 235;
pub const IMEX_MAJOR: u32 = 234;

/// One simulated GPU.
pub struct MockGpu {
    pub minor: u32,
    pub domain: u32,
    pub bus: u8,
    pub uuid: String,
}

impl MockGpu {
    /// The `gpus/` and sysfs directory name.
    pub fn pci_name(&self) -> String {
        format!("{:04x}:{:02x}:00.0", self.domain, self.bus)
    }
}

/// Bus ids of a DGX H100 for up to 8 GPUs; beyond that a regular spread over PCI domains.
const DGX_BUSES: [u8; 8] = [0x18, 0x2a, 0x3a, 0x5d, 0x9a, 0xab, 0xba, 0xdb];

pub fn gpu_layout(spec: &Spec) -> Vec<MockGpu> {
    (0..spec.gpus)
        .map(|i| {
            let (domain, bus) = if spec.gpus <= DGX_BUSES.len() {
                (0, DGX_BUSES[i])
            } else {
                ((i / 32) as u32, (0x01 + (i % 32) * 7) as u8)
            };
            MockGpu {
                minor: i as u32,
                domain,
                bus,
                uuid: uuid_for(spec, i),
            }
        })
        .collect()
}

/// Deterministic, distinct, well-formed UUIDs (FNV-1a over the model, driver and index).
fn uuid_for(spec: &Spec, i: usize) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut next = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h
    };
    next(spec.model.name.as_bytes());
    let a = next(&(i as u64).to_le_bytes());
    let b = next(b"nvbox-mock");
    format!(
        "GPU-{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

/// The minor the nvidia-caps module gives a capability (the layout of `mig-minors`): 1 config,
/// 2 monitor, then per GPU 15 GPU instances × (1 access + 8 compute instances).
pub fn cap_minor(gpu: u32, gi: u32, ci: Option<u32>) -> u32 {
    3 + gpu * 135 + gi * 9 + ci.map_or(0, |c| c + 1)
}

pub fn write(path: &Path, contents: impl AsRef<[u8]>) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
    }
    std::fs::write(path, contents).with_context(|| format!("write {}", path.display()))
}

pub fn write_procfs(spec: &Spec, gpus: &[MockGpu]) -> Result<()> {
    let nv = spec.dir.join("proc/driver/nvidia");
    let v = &spec.driver_version;
    write(
        &nv.join("version"),
        format!(
            "NVRM version: NVIDIA UNIX x86_64 Kernel Module  {v}  Sat Aug 19 01:15:15 UTC 2023\nGCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n"
        ),
    )?;
    write(
        &nv.join("params"),
        // The node mode and group are the module's (nvidia-modprobe makes nodes to match).
        format!(
            "ResmanDebugLevel: 4294967295\nRmLogonRC: 1\nModifyDeviceFiles: 1\nDeviceFileUID: 0\nDeviceFileGID: {}\nDeviceFileMode: {}\nInitializeSystemMemoryAllocations: 1\nUsePageAttributeTable: 4294967295\nEnableMSI: 1\nEnablePCIeGen3: 0\nEnableStreamMemOPs: 0\nEnableResizableBar: 0\nEnableGpuFirmware: 18\nEnableGpuFirmwareLogs: 2\nRmProfilingAdminOnly: 1\nPreserveVideoMemoryAllocations: 0\nOpenRmEnableUnsupportedGpus: 0\n",
            spec.dev_group, spec.dev_mode
        ),
    )?;
    write(&nv.join("registry"), "Binary: \"\"\n")?;
    for gpu in gpus {
        let dir = nv.join("gpus").join(gpu.pci_name());
        write(
            &dir.join("information"),
            format!(
                "Model: \t\t {}\nIRQ:   \t\t {}\nGPU UUID: \t {}\nVideo BIOS: \t 96.00.74.00.0d\nBus Type: \t PCIe\nDMA Size: \t 52 bits\nDMA Mask: \t 0xfffffffffffff\nBus Location: \t {}\nDevice Minor: \t {}\nGPU Firmware: \t {v}\nGPU Excluded:\t No\n",
                spec.model.name,
                200 + gpu.minor,
                gpu.uuid,
                gpu.pci_name(),
                gpu.minor
            ),
        )?;
        write(&dir.join("registry"), "Binary: \"\"\n")?;
    }
    write_capabilities(spec, gpus)?;
    write(&spec.dir.join("proc/devices"), proc_devices())?;
    Ok(())
}

fn write_capabilities(spec: &Spec, gpus: &[MockGpu]) -> Result<()> {
    let caps = spec.dir.join("proc/driver/nvidia/capabilities");
    let cap_file = |minor: u32| {
        format!("DeviceFileMinor: {minor}\nDeviceFileMode: 292\nDeviceFileModify: 1\n")
    };
    if !spec.model.mig_capable {
        return Ok(());
    }
    write(&caps.join("mig/config"), cap_file(1))?;
    write(&caps.join("mig/monitor"), cap_file(2))?;
    for gpu in gpus {
        let mig = caps.join(format!("gpu{}/mig", gpu.minor));
        std::fs::create_dir_all(&mig).with_context(|| format!("create {}", mig.display()))?;
        for gi in 1..=spec.mig {
            let gi_dir = mig.join(format!("gi{gi}"));
            write(
                &gi_dir.join("access"),
                cap_file(cap_minor(gpu.minor, gi, None)),
            )?;
            write(
                &gi_dir.join("ci0/access"),
                cap_file(cap_minor(gpu.minor, gi, Some(0))),
            )?;
        }
    }
    let mut minors = String::from("config 1\nmonitor 2\n");
    for g in 0..(gpus.len().max(32) as u32) {
        for gi in 0..15 {
            let _ = writeln!(minors, "gpu{g}/gi{gi}/access {}", cap_minor(g, gi, None));
            for ci in 0..8 {
                let _ = writeln!(
                    minors,
                    "gpu{g}/gi{gi}/ci{ci}/access {}",
                    cap_minor(g, gi, Some(ci))
                );
            }
        }
    }
    write(&spec.dir.join("proc/driver/nvidia-caps/mig-minors"), minors)
}

fn proc_devices() -> String {
    format!(
        "Character devices:\n  1 mem\n  4 /dev/vc/0\n  4 tty\n  5 /dev/tty\n  5 /dev/console\n 10 misc\n195 nvidia-frontend\n195 nvidia\n195 nvidia-modeset\n226 drm\n{IMEX_MAJOR} nvidia-caps-imex-channels\n{CAPS_MAJOR} nvidia-caps\n236 nvidia-nvswitch\n237 nvidia-nvlink\n{UVM_MAJOR} nvidia-uvm\n\nBlock devices:\n  7 loop\n  8 sd\n259 blkext\n"
    )
}

pub fn write_sysfs(spec: &Spec, gpus: &[MockGpu]) -> Result<()> {
    let links = spec.dir.join("sys/bus/pci/devices");
    std::fs::create_dir_all(&links).with_context(|| format!("create {}", links.display()))?;
    for gpu in gpus {
        let name = gpu.pci_name();
        let rel = format!("devices/pci{:04x}:00/{name}", gpu.domain);
        let dev = spec.dir.join("sys").join(&rel);
        write(&dev.join("vendor"), "0x10de\n")?;
        write(
            &dev.join("device"),
            format!("0x{:04x}\n", spec.model.pci_device_id),
        )?;
        write(&dev.join("class"), format!("0x{:06x}\n", spec.model.class))?;
        write(&dev.join("subsystem_vendor"), "0x10de\n")?;
        write(&dev.join("numa_node"), "-1\n")?;
        let link = links.join(&name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(format!("../../../{rel}"), &link)
            .with_context(|| format!("symlink {}", link.display()))?;
    }
    for module in ["nvidia", "nvidia_uvm", "nvidia_modeset"] {
        write(
            &spec.dir.join(format!("sys/module/{module}/initstate")),
            "live\n",
        )?;
    }
    Ok(())
}

pub fn write_dev(spec: &Spec, gpus: &[MockGpu], notes: &mut Vec<String>) -> Result<()> {
    let dev = spec.dir.join("dev");
    std::fs::create_dir_all(dev.join("nvidia-caps"))?;
    std::fs::create_dir_all(dev.join("nvidia-caps-imex-channels"))?;
    let mut nodes = vec![
        ("nvidiactl".to_string(), 195, 255),
        ("nvidia-modeset".to_string(), 195, 254),
        ("nvidia-uvm".to_string(), UVM_MAJOR, 0),
        ("nvidia-uvm-tools".to_string(), UVM_MAJOR, 1),
        (
            "nvidia-caps-imex-channels/channel0".to_string(),
            IMEX_MAJOR,
            0,
        ),
    ];
    for gpu in gpus {
        nodes.push((format!("nvidia{}", gpu.minor), 195, gpu.minor));
    }
    if spec.model.mig_capable {
        nodes.push(("nvidia-caps/nvidia-cap1".into(), CAPS_MAJOR, 1));
        nodes.push(("nvidia-caps/nvidia-cap2".into(), CAPS_MAJOR, 2));
        for gpu in gpus {
            for gi in 1..=spec.mig {
                for ci in [None, Some(0)] {
                    let m = cap_minor(gpu.minor, gi, ci);
                    nodes.push((format!("nvidia-caps/nvidia-cap{m}"), CAPS_MAJOR, m));
                }
            }
        }
    }
    let mut denied = 0;
    for (name, major, minor) in &nodes {
        let path = dev.join(name);
        let _ = std::fs::remove_file(&path);
        match mknod(
            &path,
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            makedev(u64::from(*major), u64::from(*minor)),
        ) {
            Ok(()) => {
                // mknod's mode is cut by the umask; the driver sets mode and group itself.
                use std::os::unix::fs::PermissionsExt;
                std::os::unix::fs::chown(&path, None, Some(spec.dev_group))
                    .with_context(|| format!("chown {}", path.display()))?;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(spec.dev_mode))?;
            }
            Err(Errno::EPERM | Errno::EACCES) => denied += 1,
            Err(e) => return Err(e).with_context(|| format!("mknod {}", path.display())),
        }
    }
    if denied > 0 {
        notes.push(format!(
            "device nodes need root: {denied} /dev/nvidia* nodes were not created under {} (rerun as root for a complete host)",
            dev.display()
        ));
    }
    Ok(())
}
