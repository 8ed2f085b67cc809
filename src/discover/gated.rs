//! The gated devices: GPUDirect Storage (`nvidia-fs`), MOFED (InfiniBand verbs and RDMA CM),
//! GDRCopy and NVSwitch nodes, which a container gets only when it asks (`NVIDIA_GDS=enabled`
//! …), and the IMEX channel nodes. Found as upstream finds them: the character devices under
//! the dev root whose paths match fixed patterns (a node whose driver is not loaded is not
//! there, as the drivers create their nodes when they register their majors in /proc/devices).

use super::devices::{DeviceNode, find_node};
use super::{Roots, under};

/// One kind of gated device, named as its `cdi generate` mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Gated {
    Gds,
    Mofed,
    Gdrcopy,
    Nvswitch,
}

/// In upstream's order (the order of its modifier's checks).
pub const ALL_GATED: [Gated; 4] = [Gated::Gds, Gated::Mofed, Gated::Gdrcopy, Gated::Nvswitch];

pub const IMEX_CHANNEL_DIR: &str = "/dev/nvidia-caps-imex-channels";
/// IMEX channel ids are minors: 20 bits.
pub const IMEX_CHANNEL_MAX: u32 = (1 << 20) - 1;

/// GPUDirect Storage's configuration and the udev database cuFile reads, mounted with the
/// nvidia-fs nodes when there are any.
const GDS_FILE: &str = "/etc/cufile.json";
const GDS_DIR: &str = "/run/udev";

impl Gated {
    /// The `cdi generate` mode, and the default CDI class of its spec.
    pub fn name(self) -> &'static str {
        match self {
            Gated::Gds => "gds",
            Gated::Mofed => "mofed",
            Gated::Gdrcopy => "gdrcopy",
            Gated::Nvswitch => "nvswitch",
        }
    }

    /// The variable that asks for it, with the value `enabled`.
    pub fn env(self) -> &'static str {
        match self {
            Gated::Gds => "NVIDIA_GDS",
            Gated::Mofed => "NVIDIA_MOFED",
            Gated::Gdrcopy => "NVIDIA_GDRCOPY",
            Gated::Nvswitch => "NVIDIA_NVSWITCH",
        }
    }

    pub fn from_mode(mode: &str) -> Option<Gated> {
        ALL_GATED.into_iter().find(|g| g.name() == mode)
    }

    /// Node paths; a trailing `*` matches any rest of the file name (upstream's globs).
    pub fn patterns(self) -> &'static [&'static str] {
        match self {
            Gated::Gds => &["/dev/nvidia-fs*"],
            Gated::Mofed => &["/dev/infiniband/uverbs*", "/dev/infiniband/rdma_cm"],
            Gated::Gdrcopy => &["/dev/gdrdrv"],
            Gated::Nvswitch => &["/dev/nvidia-nvswitchctl", "/dev/nvidia-nvswitch*"],
        }
    }
}

/// What the requested kinds found on this host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GatedDevices {
    pub nodes: Vec<DeviceNode>,
    /// Driver-root regular files to bind read-only at the same path.
    pub files: Vec<String>,
    /// Driver-root directories to bind read-only (recursively) at the same path.
    pub dirs: Vec<String>,
}

impl GatedDevices {
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

/// The nodes (and GDS's files) of `kinds`; a kind with no node adds nothing.
pub fn find_gated(roots: &Roots, kinds: &[Gated]) -> GatedDevices {
    let mut found = GatedDevices::default();
    for &kind in kinds {
        let nodes = find_nodes(roots, kind.patterns());
        if kind == Gated::Gds && !nodes.is_empty() {
            if under(&roots.driver, GDS_DIR).is_dir() {
                found.dirs.push(GDS_DIR.to_owned());
            }
            if under(&roots.driver, GDS_FILE).is_file() {
                found.files.push(GDS_FILE.to_owned());
            }
        }
        for node in nodes {
            if !found.nodes.iter().any(|n| n.path == node.path) {
                found.nodes.push(node);
            }
        }
    }
    found
}

/// Character devices matching `patterns`, each pattern's matches in name order (as a glob
/// lists them), without repeats.
pub fn find_nodes(roots: &Roots, patterns: &[&str]) -> Vec<DeviceNode> {
    let mut nodes: Vec<DeviceNode> = Vec::new();
    for pattern in patterns {
        let paths = match pattern.strip_suffix('*') {
            None => vec![(*pattern).to_owned()],
            Some(prefix) => list_prefixed(roots, prefix),
        };
        for path in paths {
            if nodes.iter().any(|n| n.path == path) {
                continue;
            }
            if let Some(node) = find_node(roots, &path) {
                nodes.push(node);
            }
        }
    }
    nodes
}

/// `/dev/dir/name…` entries of the dev root whose name starts with the prefix's last part.
fn list_prefixed(roots: &Roots, prefix: &str) -> Vec<String> {
    let (dir, start) = prefix.rsplit_once('/').unwrap_or(("", prefix));
    let Ok(entries) = std::fs::read_dir(roots.dev_path(dir)) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(start))
        .collect();
    names.sort();
    names.into_iter().map(|n| format!("{dir}/{n}")).collect()
}

/// Every IMEX channel node, by channel id.
pub fn find_imex_channels(roots: &Roots) -> Vec<(u32, DeviceNode)> {
    let mut channels: Vec<(u32, DeviceNode)> =
        find_nodes(roots, &["/dev/nvidia-caps-imex-channels/channel*"])
            .into_iter()
            .filter_map(|n| {
                let id = n.path.rsplit_once("/channel")?.1.parse().ok()?;
                Some((id, n))
            })
            .collect();
    channels.sort_by_key(|(id, _)| *id);
    channels
}

/// A channel id as upstream's generator takes it: `N` or `channelN`, N at most 2^20−1.
pub fn parse_imex_id(id: &str) -> Option<u32> {
    let digits = id.strip_prefix("channel").unwrap_or(id);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|&n| n <= IMEX_CHANNEL_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_variables_are_upstreams() {
        let names: Vec<_> = ALL_GATED.iter().map(|g| (g.name(), g.env())).collect();
        assert_eq!(
            names,
            [
                ("gds", "NVIDIA_GDS"),
                ("mofed", "NVIDIA_MOFED"),
                ("gdrcopy", "NVIDIA_GDRCOPY"),
                ("nvswitch", "NVIDIA_NVSWITCH")
            ]
        );
        assert_eq!(Gated::from_mode("gdrcopy"), Some(Gated::Gdrcopy));
        assert_eq!(Gated::from_mode("imex"), None);
    }

    #[test]
    fn imex_ids() {
        assert_eq!(parse_imex_id("0"), Some(0));
        assert_eq!(parse_imex_id("channel7"), Some(7));
        assert_eq!(parse_imex_id("1048575"), Some(IMEX_CHANNEL_MAX));
        for bad in [
            "1048576",
            "",
            "channel",
            "-1",
            "+1",
            "all",
            "0x1",
            "channel 1",
        ] {
            assert_eq!(parse_imex_id(bad), None, "{bad}");
        }
    }

    /// Regular files and directories that match a pattern are not device nodes.
    #[test]
    fn only_character_devices_match() {
        let dir = std::env::temp_dir().join(format!("nvbox-gated-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("dev/infiniband/uverbs1")).unwrap();
        std::fs::write(dir.join("dev/gdrdrv"), "").unwrap();
        std::fs::write(dir.join("dev/nvidia-fs0"), "").unwrap();
        let roots = Roots::new(Some(&dir), Some(&dir), Some(&dir), Some(&dir));
        assert!(find_gated(&roots, &ALL_GATED).is_empty());
        assert_eq!(find_gated(&roots, &ALL_GATED), GatedDevices::default());
        assert!(find_imex_channels(&roots).is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
