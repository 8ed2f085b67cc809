//! `nvbox mock DIR`: a simulated GPU host — the only fake nvbox allows. It writes what the kernel
//! driver and the driver packages would put on a real host (procfs, sysfs, /dev nodes, driver
//! libraries as valid ELF objects, an ld.so.cache), in ONE tree that serves as all four roots.

mod driver_files;
pub mod elf;
mod gated;
pub mod graphics;
mod host;
mod layouts;
mod tegra;
mod wsl;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use lexopt::prelude::*;

use crate::report;

/// A GPU model the mock knows how to present.
#[derive(Debug, Clone, Copy)]
pub struct Model {
    pub key: &'static str,
    pub name: &'static str,
    pub pci_device_id: u16,
    /// PCI class: 3D controller (datacenter) or VGA (workstation/consumer).
    pub class: u32,
    pub mig_capable: bool,
}

/// Product names and PCI ids as the driver and the PCI ID Repository spell them.
pub const MODELS: &[Model] = &[
    Model {
        key: "h100",
        name: "NVIDIA H100 80GB HBM3",
        pci_device_id: 0x2330,
        class: 0x030200,
        mig_capable: true,
    },
    Model {
        key: "h200",
        name: "NVIDIA H200",
        pci_device_id: 0x2335,
        class: 0x030200,
        mig_capable: true,
    },
    Model {
        key: "a100",
        name: "NVIDIA A100-SXM4-80GB",
        pci_device_id: 0x20b2,
        class: 0x030200,
        mig_capable: true,
    },
    Model {
        key: "b200",
        name: "NVIDIA B200",
        pci_device_id: 0x2901,
        class: 0x030200,
        mig_capable: true,
    },
    Model {
        key: "a10",
        name: "NVIDIA A10",
        pci_device_id: 0x2236,
        class: 0x030200,
        mig_capable: false,
    },
    Model {
        key: "l4",
        name: "NVIDIA L4",
        pci_device_id: 0x27b8,
        class: 0x030200,
        mig_capable: false,
    },
    Model {
        key: "t4",
        name: "Tesla T4",
        pci_device_id: 0x1eb8,
        class: 0x030200,
        mig_capable: false,
    },
    Model {
        key: "v100",
        name: "Tesla V100-SXM2-32GB",
        pci_device_id: 0x1db5,
        class: 0x030200,
        mig_capable: false,
    },
    Model {
        key: "rtx4090",
        name: "NVIDIA GeForce RTX 4090",
        pci_device_id: 0x2684,
        class: 0x030000,
        mig_capable: false,
    },
];

/// What to simulate.
#[derive(Debug, Clone)]
pub struct Spec {
    pub dir: PathBuf,
    pub gpus: usize,
    pub model: Model,
    pub driver_version: String,
    /// GPU instances (each with one compute instance) on every MIG-capable GPU; 0 = MIG off.
    pub mig: u32,
    /// Skip libraries/binaries/firmware/ld.so.cache (for hosts built from real driver packages).
    pub driver_files: bool,
    /// Libraries and firmware of a few hundred bytes instead of their real sizes and layouts.
    pub stub_libraries: bool,
    /// Mode and group of the device nodes: the driver's 0666 root, or e.g. 0660 video (44)
    /// as `NVreg_DeviceFileMode`/`NVreg_DeviceFileGID` make them on hardened hosts.
    pub dev_mode: u32,
    pub dev_group: u32,
    /// `/var/run` as a link to `/run` (every modern distribution); without it the IPC
    /// sockets are only under `/run`.
    pub var_run_link: bool,
    /// A graphics host: DRM nodes, loader config files, X.Org modules, EGL platform libraries.
    pub graphics: bool,
    /// The GPUDirect Storage, GDRCopy, MOFED and NVSwitch nodes of an HPC node.
    pub gated: bool,
    pub platform: Platform,
}

/// Which kind of host: a PCIe GPU server, or a WSL2 distribution.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Platform {
    #[default]
    Dgpu,
    Wsl,
    Tegra,
    Thor,
}

pub const DEFAULT_DRIVER_VERSION: &str = "535.104.05";

pub fn main(_name: &str, args: Vec<OsString>) -> ExitCode {
    report::finish("nvbox mock", run(args))
}

fn run(args: Vec<OsString>) -> Result<ExitCode> {
    let Some(spec) = parse_args(args)? else {
        return Ok(ExitCode::SUCCESS);
    };
    let notes = write_host(&spec)?;
    for note in &notes {
        eprintln!("nvbox mock: {note}");
    }
    print!("{}", config_snippet(&spec));
    Ok(ExitCode::SUCCESS)
}

/// lexopt's errors repeat their cause in `source()`; flatten them so the one line says it once.
fn flat(e: lexopt::Error) -> anyhow::Error {
    anyhow!("{e}")
}

fn parse_args(args: Vec<OsString>) -> Result<Option<Spec>> {
    let mut parser = lexopt::Parser::from_args(args);
    let mut dir = None;
    let mut gpus = 8usize;
    let mut model = MODELS[0];
    let mut version = None;
    let mut platform = Platform::Dgpu;
    let mut mig = 0u32;
    let mut driver_files = true;
    let mut stub_libraries = false;
    let mut dev_mode = 0o666;
    let mut dev_group = 0;
    let mut var_run_link = true;
    let mut graphics = false;
    let mut gated = false;
    while let Some(arg) = parser.next().map_err(flat)? {
        match arg {
            Long("gpus") => gpus = parser.value()?.parse().map_err(flat)?,
            Long("model") => model = find_model(&parser.value()?.string()?)?,
            Long("driver-version") => version = Some(parser.value()?.string()?),
            Long("wsl") => platform = Platform::Wsl,
            Long("tegra") => platform = Platform::Tegra,
            Long("thor") => platform = Platform::Thor,
            Long("mig") => mig = parser.value()?.parse().map_err(flat)?,
            Long("no-driver-files") => driver_files = false,
            Long("stub-libraries") => stub_libraries = true,
            Long("dev-mode") => {
                let v = parser.value()?.string()?;
                dev_mode = u32::from_str_radix(&v, 8)
                    .ok()
                    .filter(|m| *m <= 0o777)
                    .ok_or_else(|| {
                        anyhow!("--dev-mode {v:?}: expected octal permissions like 0660")
                    })?;
            }
            Long("dev-group") => dev_group = parser.value()?.parse().map_err(flat)?,
            Long("no-var-run-link") => var_run_link = false,
            Long("graphics") => graphics = true,
            Long("gated") => gated = true,
            Short('h') | Long("help") => {
                print!("{HELP}");
                return Ok(None);
            }
            Short('V') | Long("version") => {
                println!("nvbox mock {}", crate::version::describe());
                return Ok(None);
            }
            Value(v) if dir.is_none() => dir = Some(PathBuf::from(v)),
            other => return Err(flat(other.unexpected())),
        }
    }
    let dir = dir.ok_or_else(|| anyhow!("missing DIR (see nvbox mock --help)"))?;
    let version = version.unwrap_or_else(|| match platform {
        Platform::Wsl => wsl::DEFAULT_WSL_DRIVER_VERSION.to_owned(),
        Platform::Tegra => tegra::DEFAULT_TEGRA_DRIVER_VERSION.to_owned(),
        Platform::Thor => tegra::DEFAULT_THOR_DRIVER_VERSION.to_owned(),
        Platform::Dgpu => DEFAULT_DRIVER_VERSION.to_owned(),
    });
    if gpus > 64 {
        bail!("--gpus {gpus}: at most 64 GPUs (NVML's device table size)");
    }
    if !version
        .split('.')
        .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        || !version.contains('.')
    {
        bail!("--driver-version {version:?}: expected digits and dots, like 535.104.05");
    }
    if mig > 7 {
        bail!("--mig {mig}: a GPU has at most 7 GPU instances");
    }
    if mig > 0 && !model.mig_capable {
        bail!("--mig: {} is not MIG-capable", model.name);
    }
    Ok(Some(Spec {
        dir,
        gpus,
        model,
        driver_version: version,
        mig,
        driver_files,
        stub_libraries,
        dev_mode,
        dev_group,
        var_run_link,
        graphics,
        platform,
        gated,
    }))
}

fn find_model(s: &str) -> Result<Model> {
    MODELS
        .iter()
        .find(|m| m.key.eq_ignore_ascii_case(s) || m.name.eq_ignore_ascii_case(s))
        .copied()
        .ok_or_else(|| {
            let keys: Vec<&str> = MODELS.iter().map(|m| m.key).collect();
            anyhow!("--model {s:?}: unknown model (one of: {})", keys.join(", "))
        })
}

/// Write the whole simulated host. Returns notes for the operator (e.g. nodes skipped).
pub fn write_host(spec: &Spec) -> Result<Vec<String>> {
    std::fs::create_dir_all(&spec.dir).with_context(|| format!("create {}", spec.dir.display()))?;
    let dir = spec
        .dir
        .canonicalize()
        .with_context(|| format!("resolve {}", spec.dir.display()))?;
    let spec = Spec {
        dir,
        ..spec.clone()
    };
    let mut notes = Vec::new();
    match spec.platform {
        Platform::Wsl => {
            wsl::write_wsl_host(&spec, &mut notes)?;
            return Ok(notes);
        }
        Platform::Thor => {
            tegra::write_thor_host(&spec, &mut notes)?;
            return Ok(notes);
        }
        Platform::Tegra => {
            tegra::write_tegra_host(&spec, &mut notes)?;
            return Ok(notes);
        }
        Platform::Dgpu => {}
    }
    let gpus = host::gpu_layout(&spec);
    host::write_procfs(&spec, &gpus)?;
    host::write_sysfs(&spec, &gpus)?;
    host::write_dev(&spec, &gpus, &mut notes)?;
    if spec.gated {
        gated::write_gated(&spec, &mut notes)?;
    }
    if spec.driver_files {
        driver_files::write_driver_files(&spec, &gpus)?;
    }
    if spec.graphics {
        graphics::write_graphics(&spec, &gpus, &mut notes)?;
    }
    Ok(notes)
}

/// The config.toml that points every applet at this host.
pub fn config_snippet(spec: &Spec) -> String {
    let dir = spec.dir.canonicalize().unwrap_or_else(|_| spec.dir.clone());
    let d = toml_string(&dir);
    format!(
        "# nvbox mock host: {}, driver {}{}\n# Use it: save this as config.toml and export NVIDIA_CTK_CONFIG_FILE_PATH=<that file>\n[nvidia-container-cli]\nroot = {d}\n\n[nvbox]\ndev-root = {d}\nproc-root = {d}\nsys-root = {d}\n{}",
        match spec.platform {
            Platform::Wsl => "WSL2 (GPUs behind /dev/dxg)".to_owned(),
            Platform::Tegra => "Jetson AGX Orin, L4T R36.4.0 (integrated GPU)".to_owned(),
            Platform::Thor => "IGX Thor, L4T R38.2.0 (integrated GPU and a dGPU)".to_owned(),
            Platform::Dgpu => format!("{} x {}", spec.gpus, spec.model.name),
        },
        spec.driver_version,
        if spec.mig > 0 {
            format!(", MIG {} instances per GPU", spec.mig)
        } else {
            String::new()
        },
        match spec.platform {
            Platform::Tegra | Platform::Thor => tegra::config_lines(&dir),
            _ => String::new(),
        },
    )
}

fn toml_string(p: &Path) -> String {
    toml::Value::String(p.to_string_lossy().into_owned()).to_string()
}

const HELP: &str = "Usage: nvbox mock DIR [OPTION...]
Write a simulated GPU host into DIR: procfs (/proc/driver/nvidia, /proc/devices), sysfs
(/sys/bus/pci/devices), device nodes (/dev/nvidia*, needs root), driver libraries as valid ELF
shared objects at their real sizes and layouts (sparse) with their soname links, an ld.so.cache, driver binaries and GSP firmware.
DIR serves as the driver, dev, proc and sys root at once. Prints the config.toml that points
nvbox at it.

  --gpus N                 number of GPUs (default 8, at most 64)
  --model M                h100 (default), h200, a100, b200, a10, l4, t4, v100, rtx4090,
                           or the full product name
  --driver-version V       NVRM version (default 535.104.05)
  --mig N                  enable MIG with N GPU instances (one compute instance each)
                           on every GPU (MIG-capable models only)
  --wsl                    a WSL2 distribution instead: /dev/dxg, /usr/lib/wsl/lib and
                           the driver stores under /usr/lib/wsl/drivers (driver 560.94)
  --tegra                  a Jetson AGX Orin (L4T R36.4) instead: nvhost/nvmap/nvgpu nodes,
                           the tegra libraries and the CSV files naming them
  --gated                  also the nodes of GPUDirect Storage (/dev/nvidia-fs*), GDRCopy
                           (/dev/gdrdrv), MOFED (/dev/infiniband/*) and NVSwitch
                           (/dev/nvidia-nvswitch*), /etc/cufile.json and /run/udev
  --thor                   an IGX Thor instead: the OpenRM driver's procfs listing the iGPU
                           (0000:01:00.0) and a discrete GPU, /dev/nvidia0-2, the CSV files
  --no-driver-files        only the kernel side (procfs, sysfs, /dev): for a driver root
                           made from real driver packages
  --stub-libraries         driver libraries and firmware of a few hundred bytes instead of
                           their real sizes and layouts (sparse files, no disk used)
  --dev-mode MODE          octal mode of the device nodes (default 0666, the driver's)
  --dev-group GID          group of the device nodes (default 0; 44 is video on Debian)
  --no-var-run-link        no /var/run -> /run link: IPC sockets only under /run
  --graphics               a graphics host: nvidia-drm's card and render nodes per GPU
                           (sysfs, /dev/dri, by-path links; a BMC holds card0), the Vulkan,
                           EGL, GLVND and OpenCL loader files, nvoptix.bin, xorg.conf.d, the
                           X.Org modules, nvidia-xconfig and the EGL platform libraries
  -h, --help               this help
";
