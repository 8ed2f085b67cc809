//! Plans for hosts without the desktop driver's layout: WSL2's driver store and Tegra's CSV
//! files. Neither has procfs entries, so the plans carry none.

use super::{Kind, Options, Plan, Root, native_arch_flag};
use crate::discover::csv::CsvFiles;
use crate::discover::devices::DeviceNode;
use crate::discover::ldcache;
use crate::discover::wsl::{self as wsl_dirs, Wsl};

/// WSL2 (upstream `--mode wsl`): `/dev/dxg`, the files of the NVIDIA driver store and
/// `/usr/lib/wsl/lib` at their own paths (the loaders find the store by its path), the store's
/// `nvidia-smi` linked as `/usr/bin/nvidia-smi`, and the loader cache over the store and
/// `/usr/lib/wsl/lib`. No procfs: WSL has no `/proc/driver/nvidia`.
pub fn build_wsl_plan(wsl: &Wsl, o: &Options) -> Plan {
    let mut p = Plan::default();
    let native = ldcache::FLAG_ELF_LIBC6 | native_arch_flag();
    for f in &wsl.files {
        p.bind(Root::Driver, &f.path, &f.path, Kind::File);
    }
    for dir in [wsl.store.path.as_str(), wsl_dirs::WSL_LIB] {
        for f in wsl
            .files
            .iter()
            .filter(|f| f.path.rsplit_once('/').map(|(d, _)| d) == Some(dir))
        {
            if let Some(soname) = &f.soname {
                let name = f.path.rsplit('/').next().unwrap_or_default();
                p.add_cache(dir, soname, name, native);
            }
        }
    }
    p.cache_dirs = vec![wsl.store.path.clone(), wsl_dirs::WSL_LIB.to_owned()];
    if let Some(smi) = wsl.nvidia_smi() {
        p.symlinks
            .push(("/usr/bin/nvidia-smi".to_owned(), smi.to_owned()));
    }
    p.add_device(o, &wsl.dxg.path, wsl.dxg.major, wsl.dxg.minor);
    p
}

/// Tegra from its CSV files (libnvidia-container's Jetson support): the `dev` nodes, the files
/// and directories at their own paths, the library and `sym` links, and the loader cache for
/// the libraries. No procfs: nvgpu has no `/proc/driver/nvidia`.
pub fn build_csv_plan(nodes: &[DeviceNode], files: &CsvFiles, o: &Options) -> Plan {
    let mut p = Plan::default();
    for n in nodes {
        p.add_device(o, &n.path, n.major, n.minor);
    }
    for m in &files.mounts {
        let kind = if m.dir { Kind::Dir } else { Kind::File };
        p.bind(Root::Driver, &m.path, &m.path, kind);
    }
    for (link, target) in files.library_links.iter().chain(&files.links) {
        if !p.symlinks.iter().any(|(l, _)| l == link) {
            p.symlinks.push((link.clone(), target.clone()));
        }
    }
    let native = ldcache::FLAG_ELF_LIBC6 | native_arch_flag();
    for lib in &files.libraries {
        let (dir, file) = lib.path.rsplit_once('/').unwrap_or(("", &lib.path));
        if let Some(soname) = &lib.soname {
            p.add_cache(dir, soname, file, native);
            if !p.cache_dirs.iter().any(|d| d == dir) {
                p.cache_dirs.push(dir.to_owned());
            }
        }
    }
    p
}
