//! Requirement expressions (temporary stub until the requirement work lands).
#![allow(dead_code)]
use anyhow::Result;
pub struct HostFacts {
    pub cuda: Option<String>,
    pub driver: Option<String>,
}
pub struct DeviceFacts {
    pub arch: Option<String>,
    pub brand: Option<String>,
}
pub fn check_requirements(_p: &[String], _h: &HostFacts, _d: &[DeviceFacts]) -> Result<()> {
    Ok(())
}
