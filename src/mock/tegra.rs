//! `nvbox mock --tegra`: a Jetson AGX Orin on JetPack 6.1 (L4T R36.4.0). The GPU is the SoC's
//! (nvgpu): no `/proc/driver/nvidia`, no `/dev/nvidia*`; the nodes are nvhost/nvmap/nvgpu ones,
//! the driver libraries live in `/usr/lib/aarch64-linux-gnu/nvidia`, and what a container gets
//! is listed in the CSV files of `/etc/nvidia-container-runtime/host-files-for-container.d`,
//! which name some entries this board lacks (they serve every Jetson), as the real ones do.
//! Library files have their real names and about their real sizes (sparse); their ELF machine
//! is the one nvbox runs on, so a container's loader here accepts them.

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::sys::stat::{Mode, SFlag, makedev, mknod};

use super::Spec;
use super::elf::{Layout, Machine, library_image};
use super::host::write;

pub const CSV_DIR: &str = "/etc/nvidia-container-runtime/host-files-for-container.d";
pub const LIB_DIR: &str = "/usr/lib/aarch64-linux-gnu/nvidia";
pub const DEFAULT_TEGRA_DRIVER_VERSION: &str = "540.4.0";
pub const DEFAULT_THOR_DRIVER_VERSION: &str = "580.00";
const NVIDIA_MAJOR: u64 = 195;
const UVM_MAJOR: u64 = 511;
const NVGPU_MAJOR: u64 = 497;
const HOST1X_MAJOR: u64 = 496;
const MISC_MAJOR: u64 = 10;
const NVMAP_MINOR: u64 = 120;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;

/// (file, soname, size); `{v}` is the driver version.
const LIBRARIES: &[(&str, &str, u64)] = &[
    ("libcuda.so.1.1", "libcuda.so.1", 36 * MIB),
    ("libnvcucompat.so", "libnvcucompat.so", 158 * KIB),
    (
        "libnvidia-ptxjitcompiler.so.{v}",
        "libnvidia-ptxjitcompiler.so.1",
        29 * MIB,
    ),
    ("libnvidia-nvvm.so.{v}", "libnvidia-nvvm.so.4", 39 * MIB),
    ("libnvrm_gpu.so", "libnvrm_gpu.so", 312 * KIB),
    ("libnvrm_mem.so", "libnvrm_mem.so", 71 * KIB),
    ("libnvrm_host1x.so", "libnvrm_host1x.so", 60 * KIB),
    ("libnvrm_sync.so", "libnvrm_sync.so", 27 * KIB),
    ("libnvrm_surface.so", "libnvrm_surface.so", 118 * KIB),
    ("libnvrm_chip.so", "libnvrm_chip.so", 19 * KIB),
    ("libnvos.so", "libnvos.so", 80 * KIB),
    ("libnvsocsys.so", "libnvsocsys.so", 15 * KIB),
    ("libnvtegrahv.so", "libnvtegrahv.so", 15 * KIB),
    ("libnvsciipc.so", "libnvsciipc.so", 88 * KIB),
    ("libnvdla_runtime.so", "libnvdla_runtime.so", 8 * MIB),
    ("libnvcudla.so", "libnvcudla.so", 1285 * KIB),
];

/// (link, target) next to the libraries, as the L4T packages install them.
const LINKS: &[(&str, &str)] = &[
    ("libcuda.so.1", "libcuda.so.1.1"),
    ("libcuda.so", "libcuda.so.1"),
    (
        "libnvidia-ptxjitcompiler.so.1",
        "libnvidia-ptxjitcompiler.so.{v}",
    ),
];

/// (node, major, minor); the CSV also names nodes of other Jetsons that this board lacks.
const NODES: &[(&str, u64, u64)] = &[
    ("nvmap", MISC_MAJOR, NVMAP_MINOR),
    ("nvhost-ctrl-gpu", NVGPU_MAJOR, 0),
    ("nvhost-gpu", NVGPU_MAJOR, 1),
    ("nvhost-as-gpu", NVGPU_MAJOR, 2),
    ("nvhost-dbg-gpu", NVGPU_MAJOR, 3),
    ("nvhost-prof-gpu", NVGPU_MAJOR, 4),
    ("nvhost-tsg-gpu", NVGPU_MAJOR, 5),
    ("nvhost-ctxsw-gpu", NVGPU_MAJOR, 6),
    ("nvhost-sched-gpu", NVGPU_MAJOR, 7),
    ("nvhost-nvsched-gpu", NVGPU_MAJOR, 8),
    ("nvhost-power-gpu", NVGPU_MAJOR, 9),
    ("nvgpu/igpu0/ctrl", NVGPU_MAJOR, 10),
    ("nvgpu/igpu0/channel", NVGPU_MAJOR, 11),
    ("nvgpu/igpu0/as", NVGPU_MAJOR, 12),
    ("nvgpu/igpu0/tsg", NVGPU_MAJOR, 13),
    ("nvgpu/igpu0/power", NVGPU_MAJOR, 14),
    ("host1x-fence", HOST1X_MAJOR, 0),
];
const ABSENT_NODES: &[&str] = &["/dev/nvhost-nvdec1", "/dev/nvhost-ctrl-pva1"];

pub fn write_tegra_host(spec: &Spec, notes: &mut Vec<String>) -> Result<()> {
    let dir = &spec.dir;
    let v = &spec.driver_version;
    write_libraries(dir, v)?;
    write_nodes(dir, NODES, notes)?;
    let mut devices = String::new();
    for (name, _, _) in NODES {
        devices.push_str(&format!("dev, /dev/{name}\n"));
    }
    for name in ABSENT_NODES {
        devices.push_str(&format!("dev, {name}\n"));
    }
    write_csv(dir, v, &devices)
}

/// IGX Thor: OpenRM lists the integrated GPU (always at 0000:01:00.0) and a discrete RTX card in
/// procfs; `/dev/nvidia2` is the iGPU's display node; the CSV names the GPU and control nodes.
pub fn write_thor_host(spec: &Spec, notes: &mut Vec<String>) -> Result<()> {
    let dir = &spec.dir;
    let v = &spec.driver_version;
    write_libraries(dir, v)?;
    write(
        &dir.join("etc/nv_tegra_release"),
        "# R38 (release), REVISION: 2.0, GCID: 41844464, BOARD: generic, EABI: aarch64, DATE: Fri Aug 22 00:00:00 UTC 2025\n# KERNEL_VARIANT: oot\n",
    )?;
    write(&dir.join("sys/devices/soc0/soc_id"), "38\n")?;
    write(
        &dir.join("sys/devices/soc0/machine"),
        "NVIDIA IGX Thor Developer Kit\n",
    )?;
    let nv = dir.join("proc/driver/nvidia");
    write(
        &nv.join("version"),
        format!(
            "NVRM version: NVIDIA UNIX Open Kernel Module for aarch64  {v}  Release Build  (dvs-builder@U22-I3-AM02-11-1)  Thu Aug 14 00:00:00 UTC 2025\nGCC version:  gcc version 13.2.0 (Ubuntu 13.2.0-23ubuntu4)\n"
        ),
    )?;
    for (bus, minor, model, uuid) in THOR_GPUS {
        write(
            &nv.join("gpus").join(bus).join("information"),
            format!(
                "Model: \t\t {model}\nIRQ:   \t\t 0\nGPU UUID: \t {uuid}\nVideo BIOS: \t ??.??.??.??.??\nBus Type: \t PCIe\nDMA Size: \t 40 bits\nDMA Mask: \t 0xffffffffff\nBus Location: \t {bus}\nDevice Minor: \t {minor}\nGPU Excluded:\t No\n"
            ),
        )?;
    }
    write(
        &dir.join("proc/devices"),
        format!(
            "Character devices:\n  1 mem\n 10 misc\n{NVIDIA_MAJOR} nvidia-frontend\n{NVIDIA_MAJOR} nvidia\n{NVIDIA_MAJOR} nvidia-modeset\n{HOST1X_MAJOR} host1x-fence\n{UVM_MAJOR} nvidia-uvm\n\nBlock devices:\n259 blkext\n"
        ),
    )?;
    write_nodes(dir, THOR_NODES, notes)?;
    let mut devices = String::new();
    for (name, _, _) in THOR_NODES {
        devices.push_str(&format!("dev, /dev/{name}\n"));
    }
    write_csv(dir, v, &devices)
}

/// (bus, minor, model, UUID): the iGPU first (NVML index 0), the dGPU second.
pub const THOR_GPUS: &[(&str, u32, &str, &str)] = &[
    (
        "0000:01:00.0",
        0,
        "NVIDIA Thor",
        "GPU-8a1e0a4b-5d0c-4f3e-9b7a-6c2d1e0f3a41",
    ),
    (
        "0000:09:00.0",
        1,
        "NVIDIA RTX 6000 Ada Generation",
        "GPU-3f6b9c2e-1a7d-4e58-b0c4-9d8e7f6a5b43",
    ),
];

const THOR_NODES: &[(&str, u64, u64)] = &[
    ("nvidia0", NVIDIA_MAJOR, 0),
    ("nvidia1", NVIDIA_MAJOR, 1),
    ("nvidia2", NVIDIA_MAJOR, 2),
    ("nvidiactl", NVIDIA_MAJOR, 255),
    ("nvidia-modeset", NVIDIA_MAJOR, 254),
    ("nvidia-uvm", UVM_MAJOR, 0),
    ("nvidia-uvm-tools", UVM_MAJOR, 1),
    ("host1x-fence", HOST1X_MAJOR, 0),
];

/// What both boards share: the L4T release (Orin's; Thor overwrites it), the SoC, the tegra
/// libraries with their links, firmware and the Vulkan ICD.
fn write_libraries(dir: &Path, v: &str) -> Result<()> {
    write(
        &dir.join("etc/nv_tegra_release"),
        "# R36 (release), REVISION: 4.0, GCID: 37537400, BOARD: generic, EABI: aarch64, DATE: Fri Sep 13 04:36:44 UTC 2024\n# KERNEL_VARIANT: oot\nTARGET_USERSPACE_LIB_DIR=nvidia\nTARGET_USERSPACE_LIB_DIR_PATH=usr/lib/aarch64-linux-gnu/nvidia\n",
    )?;
    let soc = dir.join("sys/devices/soc0");
    write(&soc.join("family"), "Tegra\n")?;
    write(&soc.join("soc_id"), "35\n")?;
    write(
        &soc.join("machine"),
        "NVIDIA Jetson AGX Orin Developer Kit\n",
    )?;
    write(
        &dir.join("proc/devices"),
        format!(
            "Character devices:\n  1 mem\n  4 tty\n 10 misc\n{HOST1X_MAJOR} host1x-fence\n{NVGPU_MAJOR} nvgpu\n\nBlock devices:\n259 blkext\n"
        ),
    )?;
    let libs = dir.join(&LIB_DIR[1..]);
    for (file, soname, size) in LIBRARIES {
        let file = file.replace("{v}", v);
        let path = libs.join(&file);
        std::fs::create_dir_all(&libs)?;
        let layout = Layout::like_nvidia(*size);
        library_image(
            native_machine(),
            soname,
            &["libc.so.6"],
            None,
            Some(&layout),
        )
        .write_to(&path)
        .with_context(|| format!("write {}", path.display()))?;
    }
    for (link, target) in LINKS {
        let at = libs.join(link);
        let _ = std::fs::remove_file(&at);
        symlink(target.replace("{v}", v), &at)
            .with_context(|| format!("symlink {}", at.display()))?;
    }
    let fw = dir.join("usr/lib/firmware/tegra23x");
    write(&fw.join("nvhost_nvdec050.fw"), vec![0u8; 4096])?;
    write(&dir.join("etc/vulkan/icd.d/nvidia_icd.json"), ICD)?;
    Ok(())
}

fn write_nodes(dir: &Path, nodes: &[(&str, u64, u64)], notes: &mut Vec<String>) -> Result<()> {
    let mut denied = 0;
    for (name, major, minor) in nodes {
        let path = dir.join("dev").join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let _ = std::fs::remove_file(&path);
        match mknod(
            &path,
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o660),
            makedev(*major, *minor),
        ) {
            Ok(()) => std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))?,
            Err(Errno::EPERM) => denied += 1,
            Err(e) => return Err(e).with_context(|| format!("mknod {}", path.display())),
        }
    }
    if denied > 0 {
        notes.push(format!("not root: {denied} device nodes not created"));
    }
    Ok(())
}

/// devices.csv and drivers.csv as JetPack 6 lays them out (l4t.csv went away in JetPack 5).
fn write_csv(dir: &Path, v: &str, devices: &str) -> Result<()> {
    let csv = dir.join(&CSV_DIR[1..]);
    write(&csv.join("devices.csv"), devices)?;
    let mut drivers = String::new();
    for (file, _, _) in LIBRARIES {
        drivers.push_str(&format!("lib, {LIB_DIR}/{}\n", file.replace("{v}", v)));
    }
    for (link, _) in LINKS {
        drivers.push_str(&format!("sym, {LIB_DIR}/{link}\n"));
    }
    drivers.push_str("dir, /usr/lib/firmware/tegra23x\nlib, /etc/vulkan/icd.d/nvidia_icd.json\n");
    write(&csv.join("drivers.csv"), drivers)?;
    // An extra file the runtime reads only with NVIDIA_REQUIRE_JETPACK=csv-mounts=all.
    write(&csv.join("cudnn.csv"), "dir, /usr/include/cudnn\n")?;
    std::fs::create_dir_all(dir.join("usr/include/cudnn"))?;
    Ok(())
}

fn native_machine() -> Machine {
    if std::env::consts::ARCH == "aarch64" {
        Machine::Aarch64
    } else {
        Machine::X86_64
    }
}

const ICD: &str = "{\n    \"file_format_version\" : \"1.0.0\",\n    \"ICD\": {\n        \"library_path\": \"libGLX_nvidia.so.0\",\n        \"api_version\" : \"1.3.278\"\n    }\n}\n";

/// The config lines that point the runtime's csv mode at this host's CSV files.
pub fn config_lines(dir: &Path) -> String {
    let csv = toml::Value::String(dir.join(&CSV_DIR[1..]).to_string_lossy().into_owned());
    format!("\n[nvidia-container-runtime.modes.csv]\nmount-spec-path = {csv}\n")
}
