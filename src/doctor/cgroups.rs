//! cgroups: which hierarchy governs device access (v1's devices controller, or v2's eBPF
//! programs), whether this kernel and these capabilities can load a device program when v2
//! rules, and a rootless engine without `no-cgroups` (nvidia-container-cli cannot write a
//! cgroup it does not own, and the container fails to start).
//!
//! The eBPF probe is the one thing the doctor asks the kernel to create: a two-instruction
//! program, closed at once and never attached, so nothing on the host changes.

use std::path::Path;

use super::{Context, Finding};
use crate::config::Config;

/// How device access is controlled on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hierarchy {
    /// A v1 `devices` controller is mounted (legacy or hybrid).
    V1,
    /// Only the unified hierarchy: device rules are eBPF programs.
    V2,
    Unknown,
}

pub fn check(ctx: &Context, out: &mut Vec<Finding>) {
    let mountinfo = std::fs::read_to_string(ctx.procs.join("self/mountinfo")).unwrap_or_default();
    let hierarchy = detect_hierarchy(&mountinfo);
    out.push(match hierarchy {
        Hierarchy::V1 => Finding::ok(
            "cgroups",
            "v1 devices controller: device rules go to devices.allow",
        ),
        Hierarchy::V2 => Finding::ok(
            "cgroups",
            "v2 only: device rules are eBPF programs on the container's cgroup",
        ),
        Hierarchy::Unknown => Finding::warn(
            "cgroups",
            "no cgroup hierarchy mounted: device access cannot be restricted",
            "mount -t cgroup2 none /sys/fs/cgroup",
        ),
    });
    let cfg = Config::load_from(&ctx.config_path, false).unwrap_or_default();
    if hierarchy == Hierarchy::V2 {
        out.push(check_bpf(
            probe_device_program(),
            cfg.cli.no_cgroups,
            &ctx.config_path,
        ));
    }
    if let Some(f) = check_rootless(
        cfg.cli.no_cgroups,
        find_rootless(&ctx.procs),
        &ctx.config_path,
    ) {
        out.push(f);
    }
}

pub fn detect_hierarchy(mountinfo: &str) -> Hierarchy {
    let mut v2 = false;
    for line in mountinfo.lines() {
        let Some((_, after)) = line.split_once(" - ") else {
            continue;
        };
        let mut f = after.split_whitespace();
        let fstype = f.next().unwrap_or("");
        let options = f.nth(1).unwrap_or("");
        if fstype == "cgroup" && options.split(',').any(|o| o == "devices") {
            return Hierarchy::V1;
        }
        v2 |= fstype == "cgroup2";
    }
    if v2 {
        Hierarchy::V2
    } else {
        Hierarchy::Unknown
    }
}

/// Load (and drop) the smallest device program: `r0 = 1; exit`, allow everything.
fn probe_device_program() -> std::io::Result<()> {
    use crate::sys::bpf::{BPF_CGROUP_DEVICE, BPF_PROG_TYPE_CGROUP_DEVICE, Insn, prog_load};
    const BPF_ALU64_MOV_K: u8 = 0xb7;
    const BPF_JMP_EXIT: u8 = 0x95;
    let insns = [
        Insn::new(BPF_ALU64_MOV_K, 0, 0, 0, 1),
        Insn::new(BPF_JMP_EXIT, 0, 0, 0, 0),
    ];
    prog_load(
        BPF_PROG_TYPE_CGROUP_DEVICE,
        BPF_CGROUP_DEVICE,
        &insns,
        c"Apache-2.0",
    )
    .map(drop)
}

pub fn check_bpf(probe: std::io::Result<()>, no_cgroups: bool, config: &Path) -> Finding {
    match probe {
        Ok(()) => Finding::ok(
            "bpf",
            "device-cgroup eBPF programs load: GPU device rules can be set",
        ),
        Err(e) if no_cgroups => Finding::ok(
            "bpf",
            format!(
                "device programs do not load ({e}), and no-cgroups is set: GPU containers get no device rules"
            ),
        ),
        Err(e) => Finding::fail(
            "bpf",
            format!(
                "bpf(BPF_PROG_LOAD) of a device program: {e}: on cgroup v2 every GPU container fails (`bpf_prog_load(BPF_PROG_TYPE_CGROUP_DEVICE) failed`)"
            ),
            format!(
                "run the engine with CAP_BPF or CAP_SYS_ADMIN on a kernel with CONFIG_CGROUP_BPF, or leave device rules to the engine: nvidia-ctk config --config-file={} --in-place --set nvidia-container-cli.no-cgroups",
                config.display()
            ),
        ),
    }
}

/// A rootless engine's pid: rootlesskit, or a container daemon running as a non-root user.
fn find_rootless(procs: &Path) -> Option<u32> {
    for e in std::fs::read_dir(procs).ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        let comm = comm.trim();
        if comm == "rootlesskit" {
            return Some(pid);
        }
        if matches!(comm, "dockerd" | "containerd") {
            let status = std::fs::read_to_string(e.path().join("status")).unwrap_or_default();
            let uid = status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().nth(1));
            if uid.is_some_and(|u| u != "0") {
                return Some(pid);
            }
        }
    }
    None
}

pub fn check_rootless(no_cgroups: bool, rootless: Option<u32>, config: &Path) -> Option<Finding> {
    let pid = rootless?;
    let shown = config.display();
    Some(if no_cgroups {
        Finding::ok(
            "rootless",
            format!("engine pid {pid} is rootless and no-cgroups is set"),
        )
    } else {
        Finding::warn(
            "rootless",
            format!(
                "engine pid {pid} runs rootless but {shown} leaves nvidia-container-cli.no-cgroups false: GPU containers fail to start (the cgroup is not the engine's to write)"
            ),
            format!(
                "nvidia-ctk config --config-file={shown} --in-place --set nvidia-container-cli.no-cgroups"
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "30 23 0:26 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw\n\
        31 23 0:27 / /sys/fs/cgroup/devices rw,nosuid - cgroup cgroup rw,devices\n";
    const UNIFIED: &str = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";

    #[test]
    fn hierarchies() {
        assert_eq!(detect_hierarchy(HYBRID), Hierarchy::V1);
        assert_eq!(detect_hierarchy(UNIFIED), Hierarchy::V2);
        assert_eq!(
            detect_hierarchy("1 0 8:1 / / rw - ext4 /dev/sda1 rw\n"),
            Hierarchy::Unknown
        );
    }

    #[test]
    fn rootless_needs_no_cgroups() {
        let cfg = Path::new("/etc/nvidia-container-runtime/config.toml");
        assert_eq!(check_rootless(false, None, cfg), None);
        let ok = check_rootless(true, Some(42), cfg).unwrap();
        assert_eq!(ok.status, super::super::Status::Ok);
        let warn = check_rootless(false, Some(42), cfg).unwrap();
        assert_eq!(warn.status, super::super::Status::Warn);
        assert!(
            warn.fix.ends_with("--set nvidia-container-cli.no-cgroups"),
            "{}",
            warn.fix
        );
    }
}
