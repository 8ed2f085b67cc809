//! CDI specs in the spec directories: they parse, no device is defined twice at one priority
//! (the CDI library drops such a device: `unresolvable CDI devices`), and they still describe
//! this host — device numbers as the host has them, libraries of the loaded driver version.

use std::collections::BTreeSet;
use std::path::Path;

use nix::sys::stat::{SFlag, major, minor, stat};

use super::{Context, Finding};
use crate::discover::Roots;
use crate::discover::driver::read_driver;
use crate::discover::gpus::read_gpus;
use crate::spec::cdi::{LoadedSpec, load_registry};

pub fn check(ctx: &Context, out: &mut Vec<Finding>) {
    let dirs: Vec<String> = ctx
        .cdi_spec_dirs
        .iter()
        .map(|d| d.display().to_string())
        .collect();
    let registry = match load_registry(&ctx.cdi_spec_dirs) {
        Ok(r) => r,
        Err(e) => {
            out.push(Finding::fail(
                "CDI specs",
                format!("{e:#}"),
                "check the spec directories' permissions",
            ));
            return;
        }
    };
    let mut conflicts = BTreeSet::new();
    let mut failed = false;
    for err in registry.errors() {
        if err.message.starts_with("conflicting device") {
            // Reported once per spec of the pair: one line for the pair is enough.
            if conflicts.insert(err.message.clone()) {
                out.push(conflict_finding(&err.message, registry.specs(), &err.path));
            }
        } else {
            out.push(Finding::fail(
                format!("CDI spec {}", err.path.display()),
                format!("{}: its devices cannot be requested", err.message),
                format!(
                    "nvidia-ctk cdi generate --output={} (or delete the file)",
                    err.path.display()
                ),
            ));
        }
        failed = true;
    }
    let driver = read_driver(&ctx.roots).ok().map(|d| d.version);
    let host = HostNodes {
        majors: driver_majors(&ctx.roots),
        checked: driver_nodes(&ctx.roots),
    };
    for loaded in registry.specs() {
        if let Some(f) = check_stale(loaded, driver.as_deref(), &host) {
            out.push(f);
            failed = true;
        }
    }
    if !failed {
        out.push(Finding::ok(
            "CDI specs",
            format!(
                "{} spec(s), {} device(s) in {}, current for this host",
                registry.specs().len(),
                registry.device_names().len(),
                dirs.join(",")
            ),
        ));
    }
}

/// The pair's later file (in the library's walking order) is the one to drop.
fn conflict_finding(message: &str, specs: &[LoadedSpec], path: &Path) -> Finding {
    let mut paths: Vec<&Path> = specs
        .iter()
        .map(|s| s.path.as_path())
        .filter(|p| message.contains(&format!("\"{}\"", p.display())))
        .collect();
    paths.sort();
    let drop = paths.last().copied().unwrap_or(path);
    let name = message
        .split('"')
        .nth(1)
        .unwrap_or("the device")
        .to_string();
    Finding::fail(
        "CDI duplicate device",
        format!(
            "{message}: the device is dropped, requests fail with `unresolvable CDI devices {name}`"
        ),
        format!("rm {} (one spec per device and directory)", drop.display()),
    )
}

/// A spec written for another driver or another boot: device numbers that differ from the
/// host's nodes, or driver libraries of another version.
fn check_stale(loaded: &LoadedSpec, driver: Option<&str>, host: &HostNodes) -> Option<Finding> {
    let spec = &loaded.spec;
    let edits = std::iter::once(&spec.container_edits)
        .chain(spec.devices.iter().map(|d| &d.container_edits));
    let mut problems = Vec::new();
    for e in edits.clone() {
        for node in &e.device_nodes {
            let host_path = node.host_path.as_deref().unwrap_or(&node.path);
            let (Some(ma), Some(mi)) = (node.major, node.minor) else {
                continue;
            };
            match stat(host_path) {
                Ok(st)
                    if SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
                        == SFlag::S_IFCHR =>
                {
                    let (hma, hmi) = (major(st.st_rdev) as i64, minor(st.st_rdev) as i64);
                    // A host node with a number the driver never registered is the node's
                    // fault (the driver check says so); regenerating would copy the mistake.
                    if (hma, hmi) != (ma, mi) && host.majors.contains(&hma) {
                        problems.push(format!(
                            "{host_path} is {hma}:{hmi} on the host, {ma}:{mi} in the spec"
                        ));
                    }
                }
                // A node the driver check expects is reported there, with its own fix.
                _ if host.checked.contains(&node.path) => {}
                _ => problems.push(format!("{host_path} is not a device node on the host")),
            }
        }
    }
    if let Some(version) = driver {
        let mut libs = BTreeSet::new();
        for e in edits {
            for m in &e.mounts {
                if let Some(v) = driver_suffix(&m.host_path)
                    && v != version
                {
                    libs.insert(v.to_string());
                }
            }
        }
        if !libs.is_empty() {
            let found: Vec<String> = libs.into_iter().collect();
            problems.push(format!(
                "libraries of driver {} mounted, the loaded driver is {version}",
                found.join(", ")
            ));
        }
    }
    // A node shared by several devices (`0`, its UUID, `all`) is one problem.
    let mut seen = BTreeSet::new();
    problems.retain(|p| seen.insert(p.clone()));
    if problems.is_empty() {
        return None;
    }
    let file = loaded.path.display();
    Some(Finding::fail(
        format!("CDI spec {file}"),
        format!(
            "stale: {}; containers fail to start or get the wrong device",
            problems.join("; ")
        ),
        format!("nvidia-ctk cdi generate --output={file}"),
    ))
}

/// What the host's own nodes are judged by, so that a broken node is not blamed on the spec.
struct HostNodes {
    /// Character majors the NVIDIA modules registered.
    majors: Vec<i64>,
    /// Container paths of the nodes the driver check already verifies.
    checked: BTreeSet<String>,
}

fn driver_nodes(roots: &Roots) -> BTreeSet<String> {
    let mut nodes: BTreeSet<String> =
        ["/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools"]
            .map(String::from)
            .into();
    for gpu in read_gpus(roots).unwrap_or_default() {
        nodes.insert(format!("/dev/nvidia{}", gpu.minor));
    }
    nodes
}

/// Every character major the NVIDIA modules registered in /proc/devices.
fn driver_majors(roots: &Roots) -> Vec<i64> {
    let text = std::fs::read_to_string(roots.proc_path("/proc/devices")).unwrap_or_default();
    text.lines()
        .take_while(|l| !l.starts_with("Block"))
        .filter_map(|l| l.trim().split_once(char::is_whitespace))
        .filter(|(_, name)| name.trim().starts_with("nvidia"))
        .filter_map(|(m, _)| m.parse().ok())
        .collect()
}

/// The driver version a library file name carries (`libcuda.so.535.104.05`); versions of
/// libraries that are not the driver's (`libnvidia-egl-wayland.so.1.1.11`) have a short major.
pub fn driver_suffix(host_path: &str) -> Option<&str> {
    let name = host_path.rsplit('/').next()?;
    let (_, v) = name.split_once(".so.")?;
    let parts: Vec<&str> = v.split('.').collect();
    let digits = |p: &&str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    (parts.len() >= 2 && parts.iter().all(digits) && parts[0].len() >= 3).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_suffixes() {
        assert_eq!(
            driver_suffix("/usr/lib/libcuda.so.535.104.05"),
            Some("535.104.05")
        );
        assert_eq!(
            driver_suffix("/usr/lib/libnvidia-ml.so.570.86"),
            Some("570.86")
        );
        assert_eq!(
            driver_suffix("/usr/lib/libnvidia-egl-wayland.so.1.1.11"),
            None
        );
        assert_eq!(driver_suffix("/usr/lib/libcuda.so.1"), None);
        assert_eq!(driver_suffix("/usr/bin/nvidia-smi"), None);
    }
}
