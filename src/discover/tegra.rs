//! Tegra (Jetson, IGX, Thor): the facts the CSV mode needs beyond the CSV files themselves.
//! Upstream asks NVML for the GPUs, their names and the CUDA version; nvbox reads the same from
//! files: the L4T release in `/etc/nv_tegra_release` (its CUDA version from the JetPack table),
//! the SoC in `/sys/devices/soc0` (Orin is T234), and any GPUs the OpenRM driver lists in
//! `/proc/driver/nvidia/gpus` (Thor's iGPU, an IGX dGPU) with the driver's CUDA version.

use super::Roots;
use super::driver::read_driver;
use super::gpus::{Gpu, read_gpus};
use super::tables::{cuda_version_for_branch, cuda_version_for_l4t};

pub const TEGRA_RELEASE: &str = "/etc/nv_tegra_release";
/// `/sys/devices/soc0/soc_id` of Orin (Tegra234); upstream spots Orin by the NVML name
/// "Orin (nvgpu)".
const ORIN_SOC_ID: &str = "35";
/// On Thor the iGPU is always at this PCI address (upstream's `isIntegratedGPU`).
pub const THOR_IGPU_BUS: &str = "0000:01:00.0";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tegra {
    /// `(major, revision)` of the L4T release, e.g. (36, 4).
    pub release: Option<(u32, u32)>,
    pub orin: bool,
    /// The host's CUDA version (`12.6`): the driver's if it has procfs, else the release's.
    pub cuda: Option<String>,
    /// GPUs in `/proc/driver/nvidia/gpus`, in NVML index order (none with nvgpu, Orin's driver).
    pub gpus: Vec<Gpu>,
}

impl Tegra {
    pub fn is_integrated(gpu: &Gpu) -> bool {
        gpu.proc_dir.eq_ignore_ascii_case(THOR_IGPU_BUS)
    }

    /// Upstream's auto mode picks csv on a Tegra host whose GPUs are all integrated (or that
    /// NVML cannot list): a discrete GPU (IGX) means the ordinary modes.
    pub fn only_integrated(&self) -> bool {
        self.gpus.iter().all(Tegra::is_integrated)
    }
}

/// Is this a Tegra host: the L4T release file under the driver root, or a Tegra SoC family.
pub fn is_tegra(roots: &Roots) -> bool {
    let family =
        std::fs::read_to_string(roots.sys_path("/sys/devices/soc0/family")).unwrap_or_default();
    super::under(&roots.driver, TEGRA_RELEASE).exists()
        || family.to_lowercase().starts_with("tegra")
}

pub fn read_tegra(roots: &Roots) -> Tegra {
    let release = std::fs::read_to_string(super::under(&roots.driver, TEGRA_RELEASE))
        .ok()
        .and_then(|t| parse_release(&t));
    let soc =
        std::fs::read_to_string(roots.sys_path("/sys/devices/soc0/soc_id")).unwrap_or_default();
    let driver_cuda = read_driver(roots).ok().and_then(|d| {
        let branch = d.version.split('.').next()?.parse().ok()?;
        cuda_version_for_branch(branch)
    });
    let cuda = driver_cuda
        .or_else(|| release.and_then(|(a, b)| cuda_version_for_l4t(a, b)))
        .map(|(a, b)| format!("{a}.{b}"));
    let mut gpus = read_gpus(roots).unwrap_or_default();
    gpus.sort_by_key(|g| g.index);
    Tegra {
        release,
        orin: soc.trim() == ORIN_SOC_ID,
        cuda,
        gpus,
    }
}

/// The DT_SONAME of a library file on the host (its name when it has none); `None` when it is
/// not an ELF object. Only the head is read.
pub fn soname_of(path: &std::path::Path) -> Option<String> {
    let file = std::fs::File::open(path).ok()?;
    let name = path.file_name()?.to_str()?;
    super::wsl::read_soname(file.into(), name)
}

/// `# R36 (release), REVISION: 4.0, GCID: …` → (36, 4).
pub fn parse_release(text: &str) -> Option<(u32, u32)> {
    let line = text
        .lines()
        .find(|l| l.trim_start_matches('#').trim_start().starts_with('R'))?;
    let line = line.trim_start_matches('#').trim_start();
    let major: u32 = line[1..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()?;
    let (_, rev) = line.split_once("REVISION:")?;
    let minor: u32 = rev
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()?;
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_line() {
        let text = "# R36 (release), REVISION: 4.0, GCID: 37537400, BOARD: generic, EABI: aarch64, DATE: Fri Sep 13 04:36:44 UTC 2024\n# KERNEL_VARIANT: oot\n";
        assert_eq!(parse_release(text), Some((36, 4)));
        assert_eq!(
            parse_release("# R32 (release), REVISION: 7.1, GCID: 1\n"),
            Some((32, 7))
        );
        assert_eq!(parse_release("garbage\n"), None);
        assert_eq!(parse_release(""), None);
    }
}
