//! The gated devices' nodes (GDS, MOFED, GDRCopy, NVSwitch) and the IMEX channels: each node
//! there must carry a major its driver registered in /proc/devices. gdrcopy's and nvidia-fs's
//! install scripts make their nodes by hand and unloading leaves them behind, so after a reload
//! with another dynamic major an old node names whatever driver holds its major now — and a
//! container asking for `NVIDIA_GDRCOPY=enabled` would get that device.

use super::{Context, Finding};
use crate::discover::gated::{ALL_GATED, find_nodes};

/// Node patterns and the /proc/devices name of the driver that owns their major.
const OWNERS: &[(&str, &str)] = &[
    ("/dev/nvidia-fs*", "nvidia-fs"),
    ("/dev/infiniband/uverbs*", "infiniband_verbs"),
    ("/dev/infiniband/rdma_cm", "misc"),
    ("/dev/gdrdrv", "gdrdrv"),
    ("/dev/nvidia-nvswitchctl", "nvidia-nvswitch"),
    ("/dev/nvidia-nvswitch*", "nvidia-nvswitch"),
    (
        "/dev/nvidia-caps-imex-channels/channel*",
        "nvidia-caps-imex-channels",
    ),
];

pub fn check(ctx: &Context, out: &mut Vec<Finding>) {
    let roots = &ctx.roots;
    let Ok(text) = std::fs::read_to_string(roots.proc_path("/proc/devices")) else {
        // The driver check already says /proc/devices cannot be read.
        return;
    };
    let mut fine = 0;
    let mut seen: Vec<String> = Vec::new();
    for (pattern, owner) in OWNERS {
        for node in find_nodes(roots, &[pattern]) {
            if seen.contains(&node.path) {
                continue;
            }
            seen.push(node.path.clone());
            if majors_named(&text, owner).contains(&node.major) {
                fine += 1;
                continue;
            }
            let holder = holders(&text, node.major);
            let now = if holder.is_empty() {
                format!("/proc/devices lists no driver with major {}", node.major)
            } else {
                format!(
                    "/proc/devices gives major {} to {}, not {owner}",
                    node.major,
                    holder.join(", ")
                )
            };
            let host = roots.dev_path(&node.path);
            out.push(Finding::warn(
                format!("device node {}", node.path),
                format!(
                    "{} is {}:{} but {now}: a stale node from an earlier load, which a container asking for {} gets",
                    host.display(),
                    node.major,
                    node.minor,
                    asked_by(&node.path),
                ),
                format!(
                    "rm {}, then load {owner} again (its install script or udev makes the node)",
                    host.display()
                ),
            ));
        }
    }
    if fine > 0 {
        out.push(Finding::ok(
            "gated devices",
            format!("{fine} GDS, MOFED, GDRCopy, NVSwitch or IMEX nodes with the majors of /proc/devices"),
        ));
    }
}

/// The variable (or IMEX request) that brings a node into containers.
fn asked_by(path: &str) -> String {
    ALL_GATED
        .into_iter()
        .find(|g| {
            g.patterns().iter().any(|p| match p.strip_suffix('*') {
                Some(prefix) => path.starts_with(prefix),
                None => path == *p,
            })
        })
        .map(|g| format!("{}=enabled", g.env()))
        .unwrap_or_else(|| "its IMEX channel".to_owned())
}

/// Majors of the character section registered under `name` (a driver may hold several).
fn majors_named(text: &str, name: &str) -> Vec<u32> {
    char_lines(text)
        .filter(|(_, n)| *n == name)
        .map(|(m, _)| m)
        .collect()
}

fn holders(text: &str, major: u32) -> Vec<&str> {
    char_lines(text)
        .filter(|(m, _)| *m == major)
        .map(|(_, n)| n)
        .collect()
}

fn char_lines(text: &str) -> impl Iterator<Item = (u32, &str)> {
    text.lines()
        .skip_while(|l| l.trim() != "Character devices:")
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| {
            let (m, n) = l.trim().split_once(char::is_whitespace)?;
            Some((m.parse().ok()?, n.trim()))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEVICES: &str = "Character devices:\n 10 misc\n231 infiniband_verbs\n231 infiniband_mad\n240 gdrdrv\n505 nvidia-uvm\n\nBlock devices:\n240 decoy\n";

    #[test]
    fn owners_from_the_character_section() {
        assert_eq!(majors_named(DEVICES, "gdrdrv"), [240]);
        assert_eq!(majors_named(DEVICES, "decoy"), Vec::<u32>::new());
        assert_eq!(
            holders(DEVICES, 231),
            ["infiniband_verbs", "infiniband_mad"]
        );
        assert!(holders(DEVICES, 241).is_empty());
        assert_eq!(asked_by("/dev/gdrdrv"), "NVIDIA_GDRCOPY=enabled");
        assert_eq!(
            asked_by("/dev/nvidia-nvswitchctl"),
            "NVIDIA_NVSWITCH=enabled"
        );
        assert_eq!(
            asked_by("/dev/nvidia-caps-imex-channels/channel0"),
            "its IMEX channel"
        );
    }
}
