//! cgroup v2: device access is decided by BPF_CGROUP_DEVICE programs. Upstream rebuilds and
//! re-attaches the program once per device; here every rule goes into one rebuild per attached
//! program, loaded and swapped in once.

use std::ffi::CStr;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};

use super::{DeviceRule, lower_io, program};
use crate::sys::bpf::{
    self, BPF_CGROUP_DEVICE, BPF_F_ALLOW_MULTI, BPF_F_REPLACE, BPF_PROG_TYPE_CGROUP_DEVICE,
};

/// Device programs need no GPL-only helpers; upstream's string, kept for identical `bpftool`
/// output.
const LICENSE: &CStr = c"Apache";

/// One program attached to the cgroup now, and its replacement.
struct Swap {
    id: u32,
    old: OwnedFd,
    new: OwnedFd,
}

pub fn allow_devices(cgroup: &Path, rules: &[DeviceRule]) -> Result<()> {
    let dir = File::open(cgroup)
        .map_err(|e| anyhow!("open failed: {}: {}", cgroup.display(), lower_io(&e)))?;
    let (flags, ids) = bpf::prog_query(dir.as_fd(), BPF_CGROUP_DEVICE)
        .map_err(|e| anyhow!("bpf_prog_query(BPF_CGROUP_DEVICE) failed: {}", lower_io(&e)))?;
    // No program here means this cgroup restricts no device, so every rule already holds at this
    // level (ancestors' programs still apply, and nothing attached here could lift them).
    // Attaching an allow-everything program would be a no-op at best; and under a parent attached
    // with BPF_F_ALLOW_OVERRIDE it would replace the parent's policy and widen access. A
    // default-deny program instead would cut the container off from every other device.
    if ids.is_empty() {
        return Ok(());
    }
    // Everything is loaded before anything is attached, so a failure leaves the cgroup as it was.
    let swaps = ids
        .iter()
        .map(|&id| rebuild_program(id, rules))
        .collect::<Result<Vec<_>>>()?;
    if flags & BPF_F_ALLOW_MULTI != 0 {
        // All attached programs must allow an access, so each one gets the allow blocks.
        for swap in &swaps {
            replace_multi(&dir, swap)?;
        }
    } else {
        // Without BPF_F_ALLOW_MULTI the cgroup holds one program, and attaching with the same
        // flags swaps it atomically (the kernel refuses a change of flags).
        let [swap] = &swaps[..] else {
            bail!(
                "{} device programs attached without BPF_F_ALLOW_MULTI",
                swaps.len()
            );
        };
        bpf::prog_attach(
            dir.as_fd(),
            swap.new.as_fd(),
            BPF_CGROUP_DEVICE,
            flags,
            None,
        )
        .map_err(|e| attach_error(swap.id, &e))?;
    }
    Ok(())
}

/// Dump program `id`, check it can be loaded again, and load it behind the allow blocks.
/// Upstream skips programs it may not open (EPERM/EACCES); such a program would keep denying
/// the new devices while we reported success, so here it is an error.
fn rebuild_program(id: u32, rules: &[DeviceRule]) -> Result<Swap> {
    let old = bpf::prog_get_fd_by_id(id)
        .map_err(|e| anyhow!("bpf_prog_get_fd_by_id({id}) failed: {}", lower_io(&e)))?;
    let dump = bpf::prog_get_xlated(old.as_fd()).map_err(|e| {
        anyhow!(
            "bpf_obj_get_info_by_fd(program {id}) failed: {}",
            lower_io(&e)
        )
    })?;
    let Some(insns) = dump else {
        bail!(
            "cannot rebuild device program {id}: the kernel withheld its instructions (constant blinding; see net.core.bpf_jit_harden)"
        );
    };
    program::check_reusable(&insns)
        .with_context(|| format!("cannot rebuild device program {id}"))?;
    let merged = program::build_program(rules, &insns)?;
    let new = bpf::prog_load(
        BPF_PROG_TYPE_CGROUP_DEVICE,
        BPF_CGROUP_DEVICE,
        &merged,
        LICENSE,
    )
    .map_err(|e| {
        anyhow!(
            "bpf_prog_load(BPF_PROG_TYPE_CGROUP_DEVICE) failed: {}",
            lower_io(&e)
        )
    })?;
    Ok(Swap { id, old, new })
}

/// Swap one program of a multi-attached cgroup. BPF_F_REPLACE (5.6+) does it atomically;
/// without it the new program goes in first, so the window only ever narrows access.
fn replace_multi(dir: &File, swap: &Swap) -> Result<()> {
    let cg = dir.as_fd();
    let replaced = bpf::prog_attach(
        cg,
        swap.new.as_fd(),
        BPF_CGROUP_DEVICE,
        BPF_F_ALLOW_MULTI | BPF_F_REPLACE,
        Some(swap.old.as_fd()),
    );
    match replaced {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            bpf::prog_attach(
                cg,
                swap.new.as_fd(),
                BPF_CGROUP_DEVICE,
                BPF_F_ALLOW_MULTI,
                None,
            )
            .map_err(|e| attach_error(swap.id, &e))?;
            bpf::prog_detach(cg, swap.old.as_fd(), BPF_CGROUP_DEVICE).map_err(|e| {
                anyhow!(
                    "bpf_prog_detach(BPF_CGROUP_DEVICE) of program {} failed: {}",
                    swap.id,
                    lower_io(&e)
                )
            })
        }
        Err(e) => Err(attach_error(swap.id, &e)),
    }
}

fn attach_error(id: u32, err: &std::io::Error) -> anyhow::Error {
    anyhow!(
        "bpf_prog_attach(BPF_CGROUP_DEVICE) replacing program {id} failed: {}",
        lower_io(err)
    )
}
