//! The loaded kernel driver: its version, from `/proc/driver/nvidia/version`.

use anyhow::{Context, Result, anyhow};

use super::{Roots, tables};

pub const VERSION_FILE: &str = "/proc/driver/nvidia/version";

/// The driver as the kernel module reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Driver {
    /// NVRM version, e.g. `535.104.05`.
    pub version: String,
    /// CUDA driver API version (major, minor), from the driver-branch table.
    pub cuda: Option<(u32, u32)>,
}

impl Driver {
    /// `12.2`, or empty when the branch predates every table row (as NVML would fail there).
    pub fn cuda_string(&self) -> String {
        self.cuda
            .map(|(a, b)| format!("{a}.{b}"))
            .unwrap_or_default()
    }
}

/// Read the driver version. A missing file means the kernel module is not loaded, which is what
/// users need to hear (NVML says "driver not loaded" for the same condition).
pub fn read_driver(roots: &Roots) -> Result<Driver> {
    let path = roots.proc_path(VERSION_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            anyhow!("driver not loaded: {}: no such file", path.display())
        }
        _ => anyhow!("read {}: {e}", path.display()),
    })?;
    let version =
        parse_version(&text).with_context(|| format!("{}: no NVRM version", path.display()))?;
    let branch = version.split('.').next().and_then(|b| b.parse().ok());
    Ok(Driver {
        cuda: branch.and_then(tables::cuda_version_for_branch),
        version,
    })
}

/// The version from the `NVRM version:` line. Its wording differs between the proprietary and
/// the open kernel module and between architectures, but the version is always the first word
/// after "Module" made of digits and dots.
pub fn parse_version(text: &str) -> Option<String> {
    let line = text.lines().find(|l| l.starts_with("NVRM version:"))?;
    let after = line.split_once("Module").map(|(_, rest)| rest)?;
    after
        .split_whitespace()
        .find(|w| is_version(w))
        .map(str::to_string)
}

fn is_version(word: &str) -> bool {
    word.contains('.')
        && word
            .split('.')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proprietary_module() {
        let t = "NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat Aug 19 01:15:15 UTC 2023\nGCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n";
        assert_eq!(parse_version(t).as_deref(), Some("535.104.05"));
    }

    #[test]
    fn open_module() {
        let t = "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  550.54.14  Release Build  (dvs-builder@U16-I3-B03-4-3)  Thu Feb 22 01:25:25 UTC 2024\nGCC version:  gcc version 12.3.0\n";
        assert_eq!(parse_version(t).as_deref(), Some("550.54.14"));
        let arm = "NVRM version: NVIDIA UNIX Open Kernel Module for aarch64  580.65.06  Release Build  (dvs-builder@U22)  Sun Jul 27 2025\n";
        assert_eq!(parse_version(arm).as_deref(), Some("580.65.06"));
    }

    #[test]
    fn two_component_versions_and_garbage() {
        let t = "NVRM version: NVIDIA UNIX x86_64 Kernel Module  570.86  Wed Jan  1 00:00:00 UTC 2025\n";
        assert_eq!(parse_version(t).as_deref(), Some("570.86"));
        assert_eq!(parse_version("GCC version: 12.2\n"), None);
        assert_eq!(
            parse_version("NVRM version: NVIDIA UNIX Kernel Module\n"),
            None
        );
        assert_eq!(parse_version(""), None);
    }

    #[test]
    fn cuda_string_format() {
        let d = Driver {
            version: "535.104.05".into(),
            cuda: Some((12, 2)),
        };
        assert_eq!(d.cuda_string(), "12.2");
    }
}
