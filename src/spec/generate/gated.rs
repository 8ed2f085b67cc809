//! Specs of `cdi generate --mode gds|mofed|gdrcopy|nvswitch|imex`: no driver files, only the
//! nodes of one kind (upstream's `gatedlib` and `imexlib`). A gated kind is one `all` device; an
//! IMEX spec has one device per channel, named by its id, and the merged `all`. The driver is
//! not read: a storage or fabric node needs no GPU driver to be listed.

use anyhow::{Result, bail};

use super::{GenerateOptions, assemble_spec, edits_from_binds, push_all_device};
use crate::discover::Roots;
use crate::discover::gated::{
    Gated, IMEX_CHANNEL_DIR, IMEX_CHANNEL_MAX, find_gated, find_imex_channels, parse_imex_id,
};
use crate::plan::{self, Options, Plan};
use crate::spec::cdi::{ContainerEdits, Device, Spec};

/// One `all` device with every node of `kind` (and GDS's files). A host without any is an
/// error: upstream writes a spec whose only device is empty, which no CDI consumer accepts.
pub fn generate_gated_spec(roots: &Roots, kind: Gated, o: &GenerateOptions) -> Result<Spec> {
    let found = find_gated(roots, &[kind]);
    if found.is_empty() {
        bail!(
            "no {} device nodes under {}: none of {} exists",
            kind.name(),
            roots.dev.display(),
            kind.patterns().join(", ")
        );
    }
    let mut p = Plan::default();
    plan::add_gated(&mut p, &Options::default(), &found);
    let edits = edits_from_binds(&p.binds, roots);
    finish(
        o,
        vec![Device {
            name: "all".to_owned(),
            container_edits: edits,
            ..Device::default()
        }],
    )
}

/// One device per requested channel (`all`: every channel node there is), named by its id.
pub fn generate_imex_spec(roots: &Roots, o: &GenerateOptions) -> Result<Spec> {
    let present = find_imex_channels(roots);
    let mut wanted: Vec<u32> = Vec::new();
    for id in &o.device_ids {
        if id == "all" || id == "channelall" {
            wanted.extend(present.iter().map(|(n, _)| *n));
            continue;
        }
        let Some(n) = parse_imex_id(id) else {
            bail!("invalid channel ID {id}: must be a number in the range [0, {IMEX_CHANNEL_MAX}]");
        };
        wanted.push(n);
    }
    let mut devices: Vec<Device> = Vec::new();
    for n in wanted {
        let name = n.to_string();
        if devices.iter().any(|d| d.name == name) {
            continue;
        }
        let Some((_, node)) = present.iter().find(|(id, _)| *id == n) else {
            bail!(
                "IMEX channel {n} not found at {}",
                roots
                    .dev_path(&format!("{IMEX_CHANNEL_DIR}/channel{n}"))
                    .display()
            );
        };
        let mut p = Plan::default();
        let found = crate::discover::gated::GatedDevices {
            nodes: vec![node.clone()],
            ..Default::default()
        };
        plan::add_gated(&mut p, &Options::default(), &found);
        devices.push(Device {
            name,
            container_edits: edits_from_binds(&p.binds, roots),
            ..Device::default()
        });
    }
    if devices.is_empty() {
        bail!(
            "no IMEX channels under {}",
            roots.dev_path(IMEX_CHANNEL_DIR).display()
        );
    }
    push_all_device(o, &mut devices);
    finish(o, devices)
}

/// Node modes and groups from the host, upstream's order, and the spec around the devices;
/// the only common edit is the `NVIDIA_VISIBLE_DEVICES=void` every generated spec carries.
fn finish(o: &GenerateOptions, mut devices: Vec<Device>) -> Result<Spec> {
    let common = ContainerEdits {
        env: vec!["NVIDIA_VISIBLE_DEVICES=void".to_owned()],
        ..ContainerEdits::default()
    };
    for d in &mut devices {
        for m in &mut d.container_edits.mounts {
            m.r#type = None;
        }
    }
    Ok(assemble_spec(o, common, devices))
}
