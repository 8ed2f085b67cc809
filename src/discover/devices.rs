//! Character device majors from `/proc/devices`, and the driver's device nodes under the dev root.

use anyhow::{Result, anyhow};
use nix::sys::stat::{SFlag, major, minor, stat};

use super::Roots;

/// Dynamic majors the driver registers; `None` when the module is not loaded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Majors {
    pub uvm: Option<u32>,
    pub caps: Option<u32>,
    pub imex_channels: Option<u32>,
}

impl Majors {
    pub fn read(roots: &Roots) -> Result<Majors> {
        let path = roots.proc_path("/proc/devices");
        let text =
            std::fs::read_to_string(&path).map_err(|e| anyhow!("read {}: {e}", path.display()))?;
        Ok(Majors::parse(&text))
    }

    pub fn parse(text: &str) -> Majors {
        Majors {
            uvm: char_major(text, "nvidia-uvm"),
            caps: char_major(text, "nvidia-caps"),
            imex_channels: char_major(text, "nvidia-caps-imex-channels"),
        }
    }
}

/// The major of the character device named exactly `name` (the block section is not searched:
/// it starts after the first empty line).
pub fn char_major(text: &str, name: &str) -> Option<u32> {
    let mut lines = text.lines();
    lines.find(|l| l.trim() == "Character devices:")?;
    lines
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.trim().split_once(char::is_whitespace))
        .find(|(_, n)| n.trim() == name)
        .and_then(|(m, _)| m.parse().ok())
}

/// A device node as found on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceNode {
    /// Path as the container sees it (`/dev/nvidia-uvm`).
    pub path: String,
    pub major: u32,
    pub minor: u32,
}

/// Stat `/dev/<name>` under the dev root; `Some` only for a character device.
pub fn find_node(roots: &Roots, abs: &str) -> Option<DeviceNode> {
    let st = stat(&roots.dev_path(abs)).ok()?;
    if SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) != SFlag::S_IFCHR {
        return None;
    }
    Some(DeviceNode {
        path: abs.to_string(),
        major: major(st.st_rdev) as u32,
        minor: minor(st.st_rdev) as u32,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEVICES: &str = "Character devices:
  1 mem
  4 /dev/vc/0
195 nvidia-frontend
195 nvidia
195 nvidia-modeset
226 drm
234 nvidia-caps-imex-channels
235 nvidia-caps
236 nvidia-nvswitch
237 nvidia-nvlink
505 nvidia-uvm

Block devices:
  8 sd
507 nvidia-uvm-block-decoy
";

    #[test]
    fn majors_from_proc_devices() {
        let m = Majors::parse(DEVICES);
        assert_eq!(m.uvm, Some(505));
        assert_eq!(m.caps, Some(235));
        assert_eq!(m.imex_channels, Some(234));
        assert_eq!(char_major(DEVICES, "nvidia"), Some(195));
        // Exact names only; block devices are never matched.
        assert_eq!(char_major(DEVICES, "nvidia-uvm-block-decoy"), None);
        assert_eq!(char_major(DEVICES, "nvidia-cap"), None);
    }

    #[test]
    fn no_driver_loaded() {
        let m = Majors::parse("Character devices:\n  1 mem\n\nBlock devices:\n");
        assert_eq!(m, Majors::default());
        assert_eq!(Majors::parse(""), Majors::default());
    }
}
