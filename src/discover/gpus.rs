//! GPUs from `/proc/driver/nvidia/gpus/*/information` and sysfs, MIG instances from
//! `/proc/driver/nvidia/capabilities`. Index order is PCI bus order, as NVML enumerates.

use std::fmt;

use anyhow::{Context, Result, anyhow};

use super::{Roots, tables};

pub const GPUS_DIR: &str = "/proc/driver/nvidia/gpus";
pub const CAPS_DIR: &str = "/proc/driver/nvidia/capabilities";
pub const MIG_MINORS: &str = "/proc/driver/nvidia-caps/mig-minors";

/// A PCI address. NVML prints it with an 8-digit domain and function `.0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BusId {
    pub domain: u32,
    pub bus: u8,
    pub device: u8,
    pub function: u8,
}

impl BusId {
    /// `0000:18:00.0` or `00000000:18:00.0` (function optional, hex, case-insensitive).
    pub fn parse(s: &str) -> Option<BusId> {
        let s = s.trim();
        let (rest, function) = match s.rsplit_once('.') {
            Some((r, f)) => (r, u8::from_str_radix(f, 16).ok()?),
            None => (s, 0),
        };
        let mut parts = rest.split(':');
        let (d, b, v) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || b.len() > 2 || v.len() > 2 || d.len() > 8 {
            return None;
        }
        Some(BusId {
            domain: u32::from_str_radix(d, 16).ok()?,
            bus: u8::from_str_radix(b, 16).ok()?,
            device: u8::from_str_radix(v, 16).ok()?,
            function,
        })
    }
}

impl fmt::Display for BusId {
    /// NVML's form, as every upstream output prints it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:08x}:{:02x}:{:02x}.0",
            self.domain, self.bus, self.device
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gpu {
    /// NVML index: position in bus order.
    pub index: usize,
    /// Minor of `/dev/nvidia<minor>`.
    pub minor: u32,
    pub uuid: String,
    pub bus_id: BusId,
    pub model: String,
    /// The `gpus/` directory name (`0000:18:00.0`), needed to expose it in a container.
    pub proc_dir: String,
    pub pci_device_id: Option<u16>,
    /// CUDA compute capability.
    pub arch: Option<(u32, u32)>,
    pub brand: &'static str,
    pub mig: Mig,
}

impl Gpu {
    pub fn arch_string(&self) -> String {
        self.arch
            .map(|(a, b)| format!("{a}.{b}"))
            .unwrap_or_default()
    }
}

/// MIG state of one GPU.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mig {
    /// The driver exposes MIG capabilities for this GPU.
    pub capable: bool,
    /// GPU instance / compute instance pairs, in NVML order (by GI, then CI).
    pub devices: Vec<MigDevice>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigDevice {
    pub gi: u32,
    pub ci: u32,
    /// `/proc/driver/nvidia/capabilities/gpu<m>/mig/gi<g>/access`
    pub gi_access: String,
    /// `…/gi<g>/ci<c>/access`
    pub ci_access: String,
}

/// Every GPU the driver knows, sorted by bus id.
pub fn read_gpus(roots: &Roots) -> Result<Vec<Gpu>> {
    let dir = roots.proc_path(GPUS_DIR);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        // The version file exists but no GPU was probed: a host with zero GPUs.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(anyhow!("read {}: {e}", dir.display())),
    };
    let mut gpus = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("read {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let info_path = entry.path().join("information");
        let text = std::fs::read_to_string(&info_path)
            .map_err(|e| anyhow!("read {}: {e}", info_path.display()))?;
        let info =
            parse_information(&text).with_context(|| format!("parse {}", info_path.display()))?;
        let pci_device_id = read_pci_device_id(roots, &name);
        let arch = pci_device_id.and_then(tables::arch_for_device_id);
        gpus.push(Gpu {
            index: 0,
            minor: info.minor,
            brand: tables::brand_for_model(&info.model, arch),
            arch,
            uuid: info.uuid,
            bus_id: info.bus_id,
            model: info.model,
            mig: Mig::default(),
            proc_dir: name,
            pci_device_id,
        });
    }
    gpus.sort_by_key(|g| g.bus_id);
    for (i, gpu) in gpus.iter_mut().enumerate() {
        gpu.index = i;
        gpu.mig = read_mig(roots, gpu.minor)?;
    }
    Ok(gpus)
}

/// The fields of an `information` file that NVML would have given us.
#[derive(Debug, PartialEq, Eq)]
pub struct Information {
    pub model: String,
    pub uuid: String,
    pub bus_id: BusId,
    pub minor: u32,
}

/// `Key:  value` lines; the keys are the driver's and have been stable since the 2010s.
pub fn parse_information(text: &str) -> Result<Information> {
    let mut model = None;
    let mut uuid = None;
    let mut bus = None;
    let mut minor = None;
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key.trim() {
            "Model" => model = Some(value.to_string()),
            "GPU UUID" => uuid = Some(value.to_string()),
            "Bus Location" => bus = Some(value.to_string()),
            "Device Minor" => minor = Some(value.to_string()),
            _ => {}
        }
    }
    let bus = bus.ok_or_else(|| anyhow!("no Bus Location"))?;
    let minor = minor.ok_or_else(|| anyhow!("no Device Minor"))?;
    Ok(Information {
        model: model.ok_or_else(|| anyhow!("no Model"))?,
        uuid: uuid.ok_or_else(|| anyhow!("no GPU UUID"))?,
        bus_id: BusId::parse(&bus).ok_or_else(|| anyhow!("bad Bus Location {bus:?}"))?,
        minor: minor
            .parse()
            .map_err(|_| anyhow!("bad Device Minor {minor:?}"))?,
    })
}

/// The PCI device id from sysfs (`0x2330`); absent sysfs only costs the architecture.
fn read_pci_device_id(roots: &Roots, bus: &str) -> Option<u16> {
    let path = roots.sys_path(&format!("/sys/bus/pci/devices/{bus}/device"));
    let text = std::fs::read_to_string(path).ok()?;
    let hex = text.trim().trim_start_matches("0x");
    u16::from_str_radix(hex, 16).ok()
}

/// MIG devices of the GPU with this minor: `capabilities/gpu<minor>/mig/gi<G>/ci<C>/access`.
fn read_mig(roots: &Roots, minor: u32) -> Result<Mig> {
    let rel = format!("{CAPS_DIR}/gpu{minor}/mig");
    let dir = roots.proc_path(&rel);
    let gis = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Mig::default()),
        Err(e) => return Err(anyhow!("read {}: {e}", dir.display())),
    };
    let mut devices = Vec::new();
    for gi_entry in gis.flatten() {
        let Some(gi) = numbered(&gi_entry.file_name().to_string_lossy(), "gi") else {
            continue;
        };
        let Ok(cis) = std::fs::read_dir(gi_entry.path()) else {
            continue;
        };
        for ci_entry in cis.flatten() {
            if let Some(ci) = numbered(&ci_entry.file_name().to_string_lossy(), "ci") {
                devices.push(MigDevice {
                    gi,
                    ci,
                    gi_access: format!("{rel}/gi{gi}/access"),
                    ci_access: format!("{rel}/gi{gi}/ci{ci}/access"),
                });
            }
        }
    }
    devices.sort_by_key(|d| (d.gi, d.ci));
    Ok(Mig {
        capable: true,
        devices,
    })
}

/// `gi12` → 12 for prefix `gi`.
fn numbered(name: &str, prefix: &str) -> Option<u32> {
    let digits = name.strip_prefix(prefix)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// `DeviceFileMinor: M` of a capability file: the minor of `/dev/nvidia-caps/nvidia-cap<M>`.
pub fn parse_cap_minor(text: &str) -> Option<u32> {
    text.lines()
        .find_map(|l| l.strip_prefix("DeviceFileMinor:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Minors from `/proc/driver/nvidia-caps/mig-minors` whose capability path starts with `prefix`
/// (`gpu3/` for every instance of GPU 3; `config`; `monitor`), in file order.
pub fn mig_minors_with_prefix(text: &str, prefix: &str) -> Vec<u32> {
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .filter(|(name, _)| name.starts_with(prefix))
        .filter_map(|(_, m)| m.trim().parse().ok())
        .collect()
}

#[cfg(test)]
#[path = "gpus_tests.rs"]
mod tests;
