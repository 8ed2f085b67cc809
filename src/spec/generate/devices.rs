//! The device entries of a generated spec: which devices, their names, and their nodes.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use anyhow::{Result, bail};

use super::{GenerateOptions, NameStrategy, build, chmod_args, device_node, edits_from_binds};
use crate::discover::Roots;
use crate::discover::host::Host;
use crate::plan::{Bind, Kind, Root};
use crate::request::Caps;
use crate::select::{Selection, select_devices};
use crate::spec::cdi::{Device, DeviceNode};

/// A device to name: a full GPU or a MIG device, by position in the host's lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Gpu(usize),
    Mig(usize, usize),
}

/// The requested devices, in request order, without duplicates. MIG-enabled GPUs get no
/// full-GPU entry.
fn targets(host: &Host, ids: &[String]) -> Result<Vec<Target>> {
    let mut out = Vec::new();
    let mut add = |t: Target| {
        if !out.contains(&t) {
            out.push(t);
        }
    };
    for id in ids.iter().flat_map(|s| s.split(',')).map(str::trim) {
        if id.is_empty() || id == "none" {
            continue;
        }
        let sel = select_devices(&host.gpus, id)?;
        if sel.all {
            for (g, gpu) in host.gpus.iter().enumerate() {
                if gpu.mig.devices.is_empty() {
                    add(Target::Gpu(g));
                }
                for m in 0..gpu.mig.devices.len() {
                    add(Target::Mig(g, m));
                }
            }
        } else if let Some(&(g, m)) = sel.migs.first() {
            add(Target::Mig(g, m));
        } else if let Some(&g) = sel.gpus.first() {
            if !host.gpus[g].mig.devices.is_empty() {
                bail!("device {id} has MIG enabled: name its MIG devices instead");
            }
            add(Target::Gpu(g));
        }
    }
    Ok(out)
}

fn names(host: &Host, t: Target, strategies: &[NameStrategy]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in strategies {
        let name = match (s, t) {
            (NameStrategy::Index, Target::Gpu(g)) => Some(g.to_string()),
            (NameStrategy::Index, Target::Mig(g, m)) => Some(format!("{g}:{m}")),
            (NameStrategy::TypeIndex, Target::Gpu(g)) => Some(format!("gpu{g}")),
            (NameStrategy::TypeIndex, Target::Mig(g, m)) => Some(format!("mig{g}:{m}")),
            (NameStrategy::Uuid, Target::Gpu(g)) => Some(host.gpus[g].uuid.clone()),
            (NameStrategy::Uuid, Target::Mig(..)) => None,
        };
        if let Some(n) = name.filter(|n| !out.contains(n)) {
            out.push(n);
        }
    }
    out
}

/// One entry per device and naming strategy: the nodes a plan for that device alone has (the
/// control nodes are removed later as common), which with `graphics` includes a full GPU's DRM
/// nodes and the by-path links that point at them (upstream gives MIG devices DRM nodes only
/// for `+gfx` profiles, which procfs does not show: nvbox gives them none).
pub(super) fn gpu_devices(host: &Host, o: &GenerateOptions) -> Result<Vec<Device>> {
    let mut devices = Vec::new();
    for t in targets(host, &o.device_ids)? {
        let sel = match t {
            Target::Gpu(g) => Selection {
                gpus: vec![g],
                ..Selection::default()
            },
            Target::Mig(g, m) => Selection {
                gpus: vec![g],
                migs: vec![(g, m)],
                all: false,
            },
        };
        let p = build(host, &sel, Caps::GRAPHICS)?;
        let nodes: Vec<Bind> = p
            .binds
            .iter()
            .filter(|b| b.root == Root::Dev)
            .cloned()
            .collect();
        let mut e = edits_from_binds(&nodes, &host.roots);
        let links: Vec<String> = p
            .symlinks
            .iter()
            .filter(|(link, _)| link.starts_with("/dev/dri/"))
            .flat_map(|(link, target)| ["--link".to_owned(), format!("{target}::{link}")])
            .collect();
        if !links.is_empty() {
            o.push_hook(&mut e, "create-symlinks", &links);
        }
        if nodes.iter().any(|b| b.target.starts_with("/dev/dri/")) {
            o.push_hook(&mut e, "chmod", &chmod_args("/dev/dri"));
        }
        for name in names(host, t, &o.strategies) {
            devices.push(Device {
                name,
                container_edits: e.clone(),
                ..Device::default()
            });
        }
    }
    Ok(devices)
}

fn char_device(path: &Path) -> Option<(u32, u32)> {
    let m = std::fs::metadata(path).ok()?;
    m.file_type().is_char_device().then(|| {
        let rdev = m.rdev();
        (
            nix::sys::stat::major(rdev) as u32,
            nix::sys::stat::minor(rdev) as u32,
        )
    })
}

/// Management mode: every driver device node under the dev root, sorted.
pub(super) fn management_nodes(roots: &Roots) -> Vec<DeviceNode> {
    let mut paths: Vec<String> = Vec::new();
    let list = |dir: &str, keep: &dyn Fn(&str) -> bool, paths: &mut Vec<String>| {
        let Ok(entries) = std::fs::read_dir(roots.dev_path(dir)) else {
            return;
        };
        for name in entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
        {
            if keep(&name) {
                paths.push(format!("{dir}/{name}"));
            }
        }
    };
    list(
        "/dev",
        &|n| {
            n.starts_with("nvidia")
                && !["nvidia-fs", "nvidia-nvswitch", "nvidia-nvlink"]
                    .iter()
                    .any(|p| n.starts_with(p))
        },
        &mut paths,
    );
    list(
        "/dev/nvidia-caps",
        &|n| n.starts_with("nvidia-cap"),
        &mut paths,
    );
    list(
        "/dev/nvidia-caps-imex-channels",
        &|n| n.starts_with("channel"),
        &mut paths,
    );
    paths.sort();
    paths
        .into_iter()
        .filter_map(|path| {
            let (major, minor) = char_device(&roots.dev_path(&path))?;
            let b = Bind {
                root: Root::Dev,
                source: path.clone(),
                target: path,
                kind: Kind::Device { major, minor },
            };
            Some(device_node(&b, roots, major, minor))
        })
        .collect()
}
