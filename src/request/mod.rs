//! What a container asks for: devices, driver capabilities, requirements, MIG and IMEX requests
//! (reference nvidia-container-toolkit.md §3). Pure: the inputs are an OCI spec (as JSON), the
//! OCI state and the config; nothing here touches the host.

mod env;
mod oci;

pub use env::{request_for_runtime, request_from_container};
pub use oci::{Container, read_container, read_state};

use anyhow::{Result, bail};

use crate::discover::gated::Gated;

/// Driver capabilities as a bit set. Bits follow the alphabetical order of the names, so iterating
/// bits low to high lists names the way nvidia-container-cli's flags are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Caps(u8);

/// (name, bit) in alphabetical order.
const CAP_NAMES: [(&str, Caps); 7] = [
    ("compat32", Caps::COMPAT32),
    ("compute", Caps::COMPUTE),
    ("display", Caps::DISPLAY),
    ("graphics", Caps::GRAPHICS),
    ("ngx", Caps::NGX),
    ("utility", Caps::UTILITY),
    ("video", Caps::VIDEO),
];

impl Caps {
    pub const COMPAT32: Caps = Caps(1 << 0);
    pub const COMPUTE: Caps = Caps(1 << 1);
    pub const DISPLAY: Caps = Caps(1 << 2);
    pub const GRAPHICS: Caps = Caps(1 << 3);
    pub const NGX: Caps = Caps(1 << 4);
    pub const UTILITY: Caps = Caps(1 << 5);
    pub const VIDEO: Caps = Caps(1 << 6);
    pub const ALL: Caps = Caps((1 << 7) - 1);
    /// What a modern image gets when it does not say.
    pub const DEFAULT: Caps = Caps(Caps::COMPUTE.0 | Caps::UTILITY.0);

    pub fn contains(self, other: Caps) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn union(self, o: Caps) -> Caps {
        Caps(self.0 | o.0)
    }

    pub fn intersection(self, o: Caps) -> Caps {
        Caps(self.0 & o.0)
    }

    #[cfg(test)]
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// One capability by its exact (lower-case) name; `all` is not a name.
    pub fn from_name(name: &str) -> Option<Caps> {
        CAP_NAMES.iter().find(|(n, _)| *n == name).map(|&(_, c)| c)
    }

    /// `compute,utility` or `all`; entries are trimmed and empty ones skipped. An unknown name is
    /// an error naming it.
    pub fn parse_list(s: &str) -> Result<Caps> {
        let mut caps = Caps::default();
        for name in split_list(s) {
            if name == "all" {
                caps = caps.union(Caps::ALL);
                continue;
            }
            match Caps::from_name(name) {
                Some(c) => caps = caps.union(c),
                None => bail!("unknown driver capability {name:?}"),
            }
        }
        Ok(caps)
    }

    /// The names of the set, alphabetical.
    pub fn names(self) -> Vec<&'static str> {
        CAP_NAMES
            .iter()
            .filter(|(_, c)| self.contains(*c))
            .map(|&(n, _)| n)
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Devices {
    /// Not a GPU container: behave like runc (unset on a modern image, "", "void").
    Unrequested,
    /// `none`: driver files and control nodes, no GPU.
    DriverOnly,
    All,
    /// The literal ids, in order, each trimmed, duplicates removed (upstream turns a duplicate
    /// into an empty slot, which reads as `none` downstream and drops every GPU).
    Ids(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub devices: Devices,
    pub caps: Caps,
    /// One entry per predicate: each NVIDIA_REQUIRE_* value (except NVIDIA_REQUIRE_JETPACK*),
    /// sorted by variable name (upstream iterates a Go map, so its order is random), then the
    /// legacy `cuda>=X.Y` last. Empty when requirements are disabled.
    pub requirements: Vec<String>,
    pub mig_config: Option<String>,
    pub mig_monitor: Option<String>,
    /// Decimal channel ids (each below 2^20), from NVIDIA_IMEX_CHANNELS or imex/<id> mounts.
    pub imex_channels: Vec<u32>,
    /// Gated device kinds asked for with `NVIDIA_GDS=enabled` and the like.
    pub gated: Vec<Gated>,
}

impl Request {
    /// The request of a container that asks for nothing.
    pub fn unrequested() -> Request {
        Request {
            devices: Devices::Unrequested,
            caps: Caps::default(),
            requirements: Vec::new(),
            mig_config: None,
            mig_monitor: None,
            imex_channels: Vec::new(),
            gated: Vec::new(),
        }
    }

    pub fn is_gpu_container(&self) -> bool {
        self.devices != Devices::Unrequested
    }

    /// The `--device` value for selection: All → "all", DriverOnly → "", Ids → joined with ',';
    /// None when nothing is requested.
    pub fn device_spec(&self) -> Option<String> {
        match &self.devices {
            Devices::Unrequested => None,
            Devices::DriverOnly => Some(String::new()),
            Devices::All => Some("all".to_owned()),
            Devices::Ids(ids) => Some(ids.join(",")),
        }
    }
}

/// A comma list: entries trimmed, empty entries dropped.
fn split_list(s: &str) -> impl Iterator<Item = &str> {
    s.split(',').map(str::trim).filter(|e| !e.is_empty())
}

#[cfg(test)]
#[path = "caps_tests.rs"]
mod caps_tests;
