//! Device cgroup programming: find the container's device cgroup (v1 `devices` hierarchy or the
//! v2 unified one) and allow the plan's device nodes in it.

pub mod program;
mod v1;
mod v2;

#[cfg(test)]
mod live_tests;
#[cfg(test)]
mod parse_tests;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};

/// One device to allow: always a char device with access "rw", as upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceRule {
    pub major: u32,
    pub minor: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceCgroup {
    pub version: Version,
    pub path: PathBuf,
}

/// Find the device cgroup of `pid`: its /proc/<pid>/cgroup, and our own /proc/self/mountinfo (we
/// run in the host mount namespace). `proc_root` prefixes both (normally "/").
pub fn find_device_cgroup(proc_root: &Path, pid: i32) -> Result<DeviceCgroup> {
    let cgroup_file = proc_root.join(format!("proc/{pid}/cgroup"));
    let text = fs::read_to_string(&cgroup_file)
        .map_err(|e| anyhow!("open failed: {}: {}", cgroup_file.display(), lower_io(&e)))
        .context("failed to get device cgroup version")?;
    let (version, cgroup_path) =
        parse_cgroup_file(&text).context("failed to get device cgroup version")?;
    let mountinfo_file = proc_root.join("proc/self/mountinfo");
    let mountinfo = fs::read_to_string(&mountinfo_file)
        .map_err(|e| {
            anyhow!(
                "open failed: {}: {}",
                mountinfo_file.display(),
                lower_io(&e)
            )
        })
        .context("failed to get device cgroup mount path")?;
    let (root, mountpoint) =
        find_cgroup_mount(&mountinfo, version).context("failed to get device cgroup mount path")?;
    let relative =
        strip_mount_root(&cgroup_path, &root).context("failed to get device cgroup root path")?;
    let mut path = proc_root.join(mountpoint.strip_prefix("/").unwrap_or(&mountpoint));
    if !relative.as_os_str().is_empty() {
        path.push(relative);
    }
    Ok(DeviceCgroup { version, path })
}

/// Version and cgroup path from a /proc/<pid>/cgroup text (`id:controllers:path` lines). A v1
/// `devices` line wins over the unified (empty controller list) line, so hybrid hosts are v1:
/// that is where runtimes put the device policy there.
pub fn parse_cgroup_file(text: &str) -> Result<(Version, String)> {
    let mut v1 = None;
    let mut v2 = None;
    for line in text.lines().filter(|l| !l.is_empty()) {
        let fields: Vec<&str> = line.splitn(3, ':').collect();
        let [_, controllers, path] = fields[..] else {
            bail!("malformed cgroup line: {line}");
        };
        if controllers.split(',').any(|c| c == "devices") {
            v1.get_or_insert(path);
        } else if controllers.is_empty() {
            v2.get_or_insert(path);
        }
    }
    match (v1, v2) {
        (Some(path), _) => Ok((Version::V1, path.to_owned())),
        (None, Some(path)) => Ok((Version::V2, path.to_owned())),
        (None, None) => bail!("no devices or unified cgroup entries found"),
    }
}

/// (mount root, mount point) of the first mount of the hierarchy `version` names: a `cgroup`
/// filesystem carrying the devices controller, or the `cgroup2` filesystem.
pub fn find_cgroup_mount(mountinfo: &str, version: Version) -> Result<(String, PathBuf)> {
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        // id parent dev root mountpoint options [optional…] - fstype source superoptions
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        if sep < 5 || fields.len() < sep + 4 {
            continue;
        }
        let fstype = fields[sep + 1];
        let found = match version {
            Version::V1 => fstype == "cgroup" && fields[sep + 3].split(',').any(|o| o == "devices"),
            Version::V2 => fstype == "cgroup2",
        };
        if !found {
            continue;
        }
        let root = unescape_mountinfo(fields[3]);
        if root.starts_with("/..") {
            bail!("cgroup mount root {root} lies outside our cgroup namespace");
        }
        return Ok((root, PathBuf::from(unescape_mountinfo(fields[4]))));
    }
    match version {
        Version::V1 => bail!("no cgroup filesystem with the devices controller in mountinfo file"),
        Version::V2 => bail!("no cgroup2 filesystem in mountinfo file"),
    }
}

/// The cgroup path relative to the mount: a mount of a subtree (root other than "/") shows
/// only what lies below that root.
fn strip_mount_root(cgroup_path: &str, root: &str) -> Result<PathBuf> {
    let path = Path::new(cgroup_path);
    let relative = path
        .strip_prefix(root)
        .map_err(|_| anyhow!("cgroup {cgroup_path} is not below the mount root {root}"))?;
    Ok(relative.to_path_buf())
}

/// Mountinfo escapes space, tab, newline and backslash as \ooo.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                let value = d.iter().fold(0u32, |v, c| v * 8 + u32::from(c - b'0'));
                out.push(value as u8);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Allow every rule: v1 appends "c MAJ:MIN rw" to devices.allow (one write each); v2 builds one
/// program and attaches it (replacing the existing device program(s) of that cgroup).
pub fn allow_devices(cg: &DeviceCgroup, rules: &[DeviceRule]) -> Result<()> {
    if rules.is_empty() {
        return Ok(());
    }
    match cg.version {
        Version::V1 => v1::allow_devices(&cg.path, rules),
        Version::V2 => v2::allow_devices(&cg.path, rules),
    }
    .context("failed to add device rules")
}

/// errno text the way upstream prints it: lower case, without Rust's " (os error N)".
fn lower_io(err: &io::Error) -> String {
    let mut text = err.to_string();
    if let Some(start) = text.find(" (os error ") {
        let end = text[start..]
            .find(')')
            .map_or(text.len(), |e| start + e + 1);
        text.replace_range(start..end, "");
    }
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}
