//! `nvidia-ctk cdi generate --mode csv` and the runtime's csv mode (upstream
//! `pkg/nvcdi/lib-csv.go`, `internal/platform-support/tegra/`): the CSV files' `dev` entries
//! make the devices, everything else the common edits, with upstream's hooks — library links,
//! the `sym` chains, CUDA forward compatibility (`--host-cuda-version`, Orin's
//! `compat_orin`) and the loader cache over the library directories.
//!
//! Devices: with one GPU or none listed by the driver (Orin's nvgpu lists none) a single device
//! `0` gets every `dev` entry (upstream's "pure CSV"). With an integrated and a discrete GPU
//! (Thor or IGX with a dGPU), each is its own device: the iGPU (index 0) gets the entries but
//! `/dev/nvidia1`, plus its display node `/dev/nvidia2`; the dGPU (index 1) gets its full-GPU
//! nodes plus the entries that are neither GPU nor control nodes.

use std::path::PathBuf;

use anyhow::{Result, bail};

use super::{GenerateOptions, NameStrategy, assemble_spec, push_all_device};
use crate::discover::Roots;
use crate::discover::csv::{self, CsvFiles};
use crate::discover::gpus::Gpu;
use crate::discover::tegra::Tegra;
use crate::discover::{devices, under};
use crate::spec::cdi::Mount;
use crate::spec::cdi::{ContainerEdits, Device, DeviceNode, Spec};

/// Where Orin images keep their CUDA forward-compat libraries (upstream's default).
pub const ORIN_COMPAT_ROOT: &str = "/usr/local/cuda/compat_orin";
const MOUNT_OPTIONS: [&str; 5] = ["ro", "nosuid", "nodev", "rbind", "rprivate"];
const CONTROL_NODES: &[&str] = &[
    "/dev/nvidia-modeset",
    "/dev/nvidia-uvm-tools",
    "/dev/nvidia-uvm",
    "/dev/nvidiactl",
];

#[derive(Debug, Clone, Default)]
pub struct CsvOptions {
    pub files: Vec<PathBuf>,
    /// `--csv.ignore-pattern`: `sym` entries to leave out.
    pub ignore_patterns: Vec<String>,
    /// `--csv.compat-container-root`; Orin defaults to [`ORIN_COMPAT_ROOT`].
    pub compat_container_root: Option<String>,
}

/// The spec, and the warnings upstream logs (missing files and entries).
pub fn generate_csv_spec(
    roots: &Roots,
    tegra: &Tegra,
    c: &CsvOptions,
    o: &GenerateOptions,
) -> Result<(Spec, Vec<String>)> {
    let (specs, mut warnings) = csv::load_mount_specs(&c.files)?;
    let nodes = csv::find_devices(&specs, &roots.dev);
    warnings.extend(nodes.warnings.iter().cloned());
    let files = csv::find_files(&specs, &roots.driver, &c.ignore_patterns)?;
    warnings.extend(files.warnings.iter().cloned());
    let common = common_edits(roots, tegra, c, o, &files);
    let csv_nodes: Vec<DeviceNode> = nodes
        .device_nodes
        .iter()
        .map(|n| cdi_node(roots, n))
        .collect();
    let mut devices = devices(roots, tegra, o, &csv_nodes)?;
    push_all_device(o, &mut devices);
    Ok((assemble_spec(o, common, devices), warnings))
}

/// Upstream's order: the library links, the `sym` chains, CUDA compat, then the cache update,
/// which comes last so it sees the links.
fn common_edits(
    roots: &Roots,
    tegra: &Tegra,
    c: &CsvOptions,
    o: &GenerateOptions,
    files: &CsvFiles,
) -> ContainerEdits {
    let mut e = ContainerEdits {
        mounts: files
            .mounts
            .iter()
            .map(|m| Mount {
                host_path: under(&roots.driver, &m.path).display().to_string(),
                container_path: m.path.clone(),
                r#type: None,
                options: MOUNT_OPTIONS.iter().map(|o| (*o).to_owned()).collect(),
            })
            .collect(),
        env: vec!["NVIDIA_VISIBLE_DEVICES=void".to_owned()],
        ..ContainerEdits::default()
    };
    for links in [&files.library_links, &files.links] {
        if !links.is_empty() {
            let args: Vec<String> = links
                .iter()
                .flat_map(|(link, target)| ["--link".to_owned(), format!("{target}::{link}")])
                .collect();
            o.push_hook(&mut e, "create-symlinks", &args);
        }
    }
    if let Some(cuda) = &tegra.cuda {
        let mut args = vec![format!("--host-cuda-version={cuda}")];
        let root = c
            .compat_container_root
            .clone()
            .or_else(|| tegra.orin.then(|| ORIN_COMPAT_ROOT.to_owned()));
        if let Some(root) = root.filter(|_| tegra.orin) {
            args.push(format!("--cuda-compat-container-root={root}"));
        }
        o.push_hook(&mut e, "enable-cuda-compat", &args);
    }
    let mut folders: Vec<&str> = Vec::new();
    for m in &e.mounts {
        let (dir, name) = m.container_path.rsplit_once('/').unwrap_or(("", ""));
        if is_lib_name(name) && !dir.is_empty() && !folders.contains(&dir) {
            folders.push(dir);
        }
    }
    if !folders.is_empty() {
        let mut args = Vec::new();
        if let Some(p) = &o.ldconfig_path {
            args.push("--ldconfig-path".to_owned());
            args.push(p.clone());
        }
        for f in folders {
            args.push("--folder".to_owned());
            args.push(f.to_owned());
        }
        o.push_hook(&mut e, "update-ldcache", &args);
    }
    e
}

/// `lib?*.so*` with nothing but a version after `.so` (upstream's `isLibName`).
fn is_lib_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("lib") else {
        return false;
    };
    let Some(at) = rest.get(1..).and_then(|r| r.rfind(".so")) else {
        return false;
    };
    let after = &rest[1 + at + 3..];
    after.is_empty() || after.starts_with('.')
}

/// `/dev/nvidia<N>`: a full GPU's node.
fn is_gpu_node(path: &str) -> bool {
    path.strip_prefix("/dev/nvidia")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

fn devices(
    roots: &Roots,
    tegra: &Tegra,
    o: &GenerateOptions,
    csv_nodes: &[DeviceNode],
) -> Result<Vec<Device>> {
    let ids: Vec<&str> = o
        .device_ids
        .iter()
        .flat_map(|s| s.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty() && *s != "none")
        .collect();
    // Without an integrated GPU among several (csv mode forced on a dGPU host), upstream
    // errors on the first dGPU not at index 1; here the CSV files alone decide, as pure CSV.
    let mixed = tegra.gpus.len() > 1 && tegra.gpus.iter().any(Tegra::is_integrated);
    if !mixed {
        for id in &ids {
            if *id != "all" && *id != "0" && tegra.gpus.first().is_none_or(|g| g.uuid != *id) {
                bail!("unsupported device id: {id}");
            }
        }
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let uuid = match tegra.gpus.as_slice() {
            [one] => one.uuid.as_str(),
            _ => "",
        };
        return Ok(named(o, 0, uuid, csv_nodes.to_vec()));
    }
    let mut chosen: Vec<&Gpu> = Vec::new();
    for id in &ids {
        let found: Vec<&Gpu> = if *id == "all" {
            tegra.gpus.iter().collect()
        } else {
            let gpu = tegra
                .gpus
                .iter()
                .find(|g| g.uuid == *id || id.parse::<usize>() == Ok(g.index));
            match gpu {
                Some(g) => vec![g],
                None => bail!("identifier is not a valid UUID or index: {id:?}"),
            }
        };
        for g in found {
            if !chosen.iter().any(|c| c.index == g.index) {
                chosen.push(g);
            }
        }
    }
    let mut out = Vec::new();
    for g in chosen {
        let nodes = if Tegra::is_integrated(g) {
            if g.index != 0 {
                bail!("unexpected device index for iGPU: {}", g.index);
            }
            let mut n: Vec<DeviceNode> = csv_nodes
                .iter()
                .filter(|n| n.path != "/dev/nvidia1")
                .cloned()
                .collect();
            if let Ok(display) = csv::device_node(&roots.dev, "/dev/nvidia2") {
                n.push(cdi_node(roots, &display));
            }
            n
        } else {
            if g.index != 1 {
                bail!("unexpected device index for dGPU: {}", g.index);
            }
            let mut n = Vec::new();
            let gpu_node = format!("/dev/nvidia{}", g.minor);
            for path in std::iter::once(gpu_node.as_str()).chain(CONTROL_NODES.iter().copied()) {
                if let Ok(node) = csv::device_node(&roots.dev, path) {
                    n.push(cdi_node(roots, &node));
                }
            }
            n.extend(
                csv_nodes
                    .iter()
                    .filter(|c| !is_gpu_node(&c.path) && !CONTROL_NODES.contains(&c.path.as_str()))
                    .cloned(),
            );
            n
        };
        out.extend(named(o, g.index, &g.uuid, nodes));
    }
    Ok(out)
}

/// A found node as a CDI node (its host path under the dev root).
fn cdi_node(roots: &Roots, n: &devices::DeviceNode) -> DeviceNode {
    let host = under(&roots.dev, &n.path).display().to_string();
    DeviceNode {
        host_path: (host != n.path).then_some(host),
        r#type: Some("c".to_owned()),
        major: Some(i64::from(n.major)),
        minor: Some(i64::from(n.minor)),
        path: n.path.clone(),
        ..DeviceNode::default()
    }
}

/// One device entry per naming strategy (a device without a UUID has no uuid name).
fn named(o: &GenerateOptions, index: usize, uuid: &str, nodes: Vec<DeviceNode>) -> Vec<Device> {
    let mut names: Vec<String> = Vec::new();
    for s in &o.strategies {
        let name = match s {
            NameStrategy::Index => index.to_string(),
            NameStrategy::Uuid if !uuid.is_empty() => uuid.to_owned(),
            NameStrategy::Uuid => continue,
            NameStrategy::TypeIndex => format!("gpu{index}"),
        };
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
        .into_iter()
        .map(|name| Device {
            name,
            container_edits: ContainerEdits {
                device_nodes: nodes.clone(),
                ..ContainerEdits::default()
            },
            ..Device::default()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_names_as_upstream() {
        for n in [
            "libcuda.so",
            "libcuda.so.1.1",
            "libnvrm_gpu.so",
            "libnvidia-ptxjitcompiler.so.540.4.0",
        ] {
            assert!(is_lib_name(n), "{n}");
        }
        for n in [
            "lib.so",
            "libcuda.sox",
            "nv_tegra_release",
            "cuda.so.1",
            "libfoo.so-bak",
        ] {
            assert!(!is_lib_name(n), "{n}");
        }
        assert!(is_gpu_node("/dev/nvidia1") && !is_gpu_node("/dev/nvidiactl"));
        assert!(!is_gpu_node("/dev/nvidia-uvm") && !is_gpu_node("/dev/nvidia"));
    }
}
