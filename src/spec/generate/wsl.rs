//! WSL2 edits (upstream `pkg/nvcdi/lib-wsl.go`, `driver-wsl.go`): one device, `all`, holding
//! `/dev/dxg`; every file at its host path in the common edits, a `create-symlinks` hook for
//! `/usr/bin/nvidia-smi` and an `update-ldcache` hook over the store and `/usr/lib/wsl/lib`.
//! The jit-cdi runtime mode applies the same edits, so a spec and a shim container agree.

use anyhow::Result;

use super::{FILE_OPTS, GenerateOptions, HookCommand, assemble_spec, device_node};
use crate::discover::Roots;
use crate::discover::wsl::Wsl;
use crate::plan::{Kind, Options, Plan, Root, build_wsl_plan};
use crate::spec::cdi::{ContainerEdits, Device, Mount, Spec};

/// `(device edits, common edits)` of a WSL plan. `enabled(name)` says whether a hook is wanted;
/// `ldconfig` is `--ldconfig-path`.
pub fn wsl_edits(
    plan: &Plan,
    roots: &Roots,
    hook: &HookCommand,
    enabled: &dyn Fn(&str) -> bool,
    ldconfig: Option<&str>,
) -> (ContainerEdits, ContainerEdits) {
    let mut device = ContainerEdits::default();
    let mut common = ContainerEdits::default();
    for b in &plan.binds {
        match (b.root, b.kind) {
            (Root::Dev, Kind::Device { major, minor }) => {
                device
                    .device_nodes
                    .push(device_node(b, roots, major, minor));
            }
            (Root::Driver, Kind::File) => common.mounts.push(Mount {
                host_path: crate::discover::under(&roots.driver, &b.source)
                    .display()
                    .to_string(),
                container_path: b.target.clone(),
                r#type: None,
                options: FILE_OPTS.iter().map(|o| (*o).to_owned()).collect(),
            }),
            _ => {}
        }
    }
    if enabled("create-symlinks") && !plan.symlinks.is_empty() {
        let mut args = Vec::new();
        for (link, target) in &plan.symlinks {
            args.push("--link".to_owned());
            args.push(format!("{target}::{link}"));
        }
        common.hooks.push(hook.make("create-symlinks", &args));
    }
    let mut folders: Vec<&str> = Vec::new();
    for c in &plan.cache {
        if !folders.contains(&c.dir.as_str()) {
            folders.push(&c.dir);
        }
    }
    if enabled("update-ldcache") && !folders.is_empty() {
        let mut args = Vec::new();
        if let Some(p) = ldconfig {
            args.push("--ldconfig-path".to_owned());
            args.push(p.to_owned());
        }
        for f in folders {
            args.push("--folder".to_owned());
            args.push(f.to_owned());
        }
        common.hooks.push(hook.make("update-ldcache", &args));
    }
    (device, common)
}

/// `nvidia-ctk cdi generate --mode wsl`.
pub fn generate_wsl_spec(wsl: &Wsl, roots: &Roots, o: &GenerateOptions) -> Result<Spec> {
    let plan = build_wsl_plan(wsl, &Options::default());
    let enabled = |name: &str| o.hook_enabled(name);
    let (device, mut common) =
        wsl_edits(&plan, roots, &o.hook, &enabled, o.ldconfig_path.as_deref());
    common.env.push("NVIDIA_VISIBLE_DEVICES=void".to_owned());
    let devices = vec![Device {
        name: "all".to_owned(),
        container_edits: device,
        ..Device::default()
    }];
    Ok(assemble_spec(o, common, devices))
}
