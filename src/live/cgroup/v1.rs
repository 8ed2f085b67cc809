//! cgroup v1: the devices controller takes one rule per write to `devices.allow`.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

use anyhow::{Result, anyhow};

use super::{DeviceRule, lower_io};

/// Append `c MAJ:MIN rw` for each rule. Only ever allows: a rule the cgroup already has is a
/// no-op for the kernel, and nothing is denied or removed.
pub fn allow_devices(cgroup: &Path, rules: &[DeviceRule]) -> Result<()> {
    let allow = cgroup.join("devices.allow");
    let mut file = OpenOptions::new()
        .append(true)
        .open(&allow)
        .map_err(|e| anyhow!("open failed: {}: {}", allow.display(), lower_io(&e)))?;
    for rule in rules {
        // The kernel parses each write as one rule, so each goes out in a single write(2).
        let line = format!("c {}:{} rw", rule.major, rule.minor);
        file.write_all(line.as_bytes()).map_err(|e| {
            anyhow!(
                "write failed: {}: {line}: {}",
                allow.display(),
                lower_io(&e)
            )
        })?;
    }
    Ok(())
}
