//! Device cgroup programming (temporary stub until the cgroup work lands).
use std::path::{Path, PathBuf};

use anyhow::Result;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceRule {
    pub major: u32,
    pub minor: u32,
}
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceCgroup {
    pub version: Version,
    pub path: PathBuf,
}
pub fn find_device_cgroup(_proc_root: &Path, _pid: i32) -> Result<DeviceCgroup> {
    anyhow::bail!("not yet")
}
pub fn allow_devices(_cg: &DeviceCgroup, _rules: &[DeviceRule]) -> Result<()> {
    anyhow::bail!("not yet")
}
