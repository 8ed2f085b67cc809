//! cgroups: which hierarchy governs device access (v1's devices controller, or v2's eBPF
//! programs), and a rootless engine without `no-cgroups` (nvidia-container-cli cannot write a
//! cgroup it does not own, and the container fails to start).

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
    out.push(match detect_hierarchy(&mountinfo) {
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
