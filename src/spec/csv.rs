//! Tegra CSV mount specs (reference nvidia-container-toolkit.md §2.5 csv mode): files of
//! `<type>, <path>` lines, type one of `dev`, `dir`, `lib`, `sym`, naming what a Jetson
//! container gets from the host. Turned into CDI `ContainerEdits` the way upstream's csv
//! discoverer does: devices as nodes, dirs and libs as read-only bind mounts of the resolved
//! file, syms as mounts of their target plus a `create-symlinks` hook recreating the chain.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use nix::sys::stat::{major, minor};

use super::cdi::{ContainerEdits, DeviceNode, Hook, Mount};

/// Files read unless `NVIDIA_REQUIRE_JETPACK=csv-mounts=all` asks for every `*.csv`.
pub const DEFAULT_CSV_FILES: [&str; 3] = ["devices.csv", "drivers.csv", "l4t.csv"];
#[allow(dead_code)] // the config default names the same directory
pub const DEFAULT_MOUNT_SPEC_PATH: &str =
    "/etc/nvidia-container-runtime/host-files-for-container.d";
const MOUNT_OPTIONS: [&str; 5] = ["ro", "nosuid", "nodev", "rbind", "rprivate"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountKind {
    /// A character device.
    Dev,
    Dir,
    /// A library or other regular file.
    Lib,
    Sym,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSpec {
    pub kind: MountKind,
    pub path: String,
}

/// One file's entries, and the lines that were not entries (upstream logs and skips them, so a
/// stray line never breaks a container), each naming its line number.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedCsv {
    pub specs: Vec<MountSpec>,
    pub skipped: Vec<String>,
}

/// `dev ,/a/path` → (Dev, "/a/path"): split at the first comma, both sides trimmed, so paths
/// may contain commas.
pub fn parse_mount_spec_line(line: &str) -> Result<MountSpec> {
    let Some((kind, path)) = line.trim().split_once(',') else {
        bail!("failed to parse line: {line}");
    };
    let (kind, path) = (kind.trim(), path.trim());
    let kind = match kind {
        "dev" => MountKind::Dev,
        "dir" => MountKind::Dir,
        "lib" => MountKind::Lib,
        "sym" => MountKind::Sym,
        other => bail!("unexpected mount type: {other}"),
    };
    if path.is_empty() {
        bail!("invalid path: {path}");
    }
    Ok(MountSpec {
        kind,
        path: path.to_string(),
    })
}

/// Every line of a CSV file; blank lines and `#` comments are not reported as skipped.
pub fn parse_mount_specs(text: &str) -> ParsedCsv {
    let mut parsed = ParsedCsv::default();
    for (number, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        match parse_mount_spec_line(line) {
            Ok(spec) => parsed.specs.push(spec),
            Err(e) => parsed.skipped.push(format!("line {}: {e}", number + 1)),
        }
    }
    parsed
}

/// The CSV files to read from `dir`: the default three that exist, or with `all` every
/// `*.csv` in name order.
pub fn list_csv_files(dir: &Path, all: bool) -> Vec<PathBuf> {
    if !all {
        return DEFAULT_CSV_FILES
            .iter()
            .map(|f| dir.join(f))
            .filter(|p| p.is_file())
            .collect();
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "csv") && p.is_file())
        .collect();
    files.sort();
    files
}

/// All entries of `files`; a file that cannot be read or holds no entry is skipped with a
/// warning, as upstream does, and so is each bad line.
pub fn load_mount_specs(files: &[PathBuf]) -> (Vec<MountSpec>, Vec<String>) {
    let (mut specs, mut warnings) = (Vec::new(), Vec::new());
    for file in files {
        let shown = file.display();
        let parsed = match std::fs::read_to_string(file) {
            Ok(text) => parse_mount_specs(&text),
            Err(e) => {
                warnings.push(format!(
                    "skipping CSV file {shown}: failed to open {shown} for reading: {e}"
                ));
                continue;
            }
        };
        warnings.extend(
            parsed
                .skipped
                .iter()
                .map(|s| format!("{shown}: skipping invalid mount spec: {s}")),
        );
        if parsed.specs.is_empty() {
            warnings.push(format!("skipping CSV file {shown}: CSV file is empty"));
        }
        specs.extend(parsed.specs);
    }
    (specs, warnings)
}

/// The edits for `specs` on a host whose driver files live under `driver_root`. Entries not
/// found under the root are left out (returned as warnings), as upstream's locators do.
/// `hook_path` is the nvidia-cdi-hook (or nvidia-ctk) binary the symlink hook runs.
pub fn edits_from_mount_specs(
    specs: &[MountSpec],
    driver_root: &Path,
    hook_path: &str,
) -> (ContainerEdits, Vec<String>) {
    let mut edits = ContainerEdits::default();
    let mut warnings = Vec::new();
    let of_kind = |kind| {
        specs
            .iter()
            .filter(move |s| s.kind == kind)
            .map(|s| s.path.as_str())
    };

    for path in of_kind(MountKind::Dev) {
        match device_node(driver_root, path) {
            Ok(node) => edits.device_nodes.push(node),
            Err(e) => warnings.push(format!("{e:#}")),
        }
    }
    for path in of_kind(MountKind::Dir) {
        let host = host_path(driver_root, path);
        if host.is_dir() {
            push_mount(&mut edits, driver_root, path);
        } else {
            warnings.push(format!("could not locate directory {}", host.display()));
        }
    }
    let mut lib_mounts = Vec::new();
    for path in of_kind(MountKind::Lib) {
        match resolve_chain(driver_root, path) {
            Some((target, _)) => {
                push_mount(&mut edits, driver_root, &target);
                lib_mounts.push(target);
            }
            None => warnings.push(format!(
                "could not locate {}",
                host_path(driver_root, path).display()
            )),
        }
    }
    // Library-name links are left to the ld cache; only other links are recreated.
    let mut links = Vec::new();
    for path in of_kind(MountKind::Sym).filter(|p| !is_library_link(p)) {
        let Some((target, chain)) = resolve_chain(driver_root, path) else {
            warnings.push(format!(
                "could not locate symlink {}",
                host_path(driver_root, path).display()
            ));
            continue;
        };
        push_mount(&mut edits, driver_root, &target);
        for (link, to) in chain {
            let spec = format!("{to}::{link}");
            if !links.contains(&spec) {
                links.push(spec);
            }
        }
    }
    links.extend(compat_links(&lib_mounts));
    if !links.is_empty() {
        edits.hooks.push(create_symlinks_hook(hook_path, &links));
    }
    (edits, warnings)
}

fn host_path(driver_root: &Path, path: &str) -> PathBuf {
    driver_root.join(path.trim_start_matches('/'))
}

fn push_mount(edits: &mut ContainerEdits, driver_root: &Path, path: &str) {
    let host = host_path(driver_root, path).to_string_lossy().into_owned();
    if edits.mounts.iter().any(|m| m.container_path == path) {
        return;
    }
    let options = MOUNT_OPTIONS.iter().map(|o| o.to_string()).collect();
    edits.mounts.push(Mount {
        host_path: host,
        container_path: path.to_string(),
        r#type: None,
        options,
    });
}

/// A character device under the root; a bare name is looked up in /dev.
fn device_node(driver_root: &Path, path: &str) -> Result<DeviceNode> {
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/dev/{path}")
    };
    let host = host_path(driver_root, &path);
    let meta = std::fs::metadata(&host)
        .map_err(|e| anyhow::anyhow!("could not locate device {}: {e}", host.display()))?;
    if !meta.file_type().is_char_device() {
        bail!(
            "could not locate device {}: not a character device",
            host.display()
        );
    }
    let host = host.to_string_lossy().into_owned();
    Ok(DeviceNode {
        host_path: (host != path).then_some(host),
        r#type: Some("c".into()),
        major: Some(major(meta.rdev()) as i64),
        minor: Some(minor(meta.rdev()) as i64),
        path,
        ..Default::default()
    })
}

/// `*.so` and `*.so.[0-9]`: links the ld cache or the library packages provide.
fn is_library_link(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    if name.ends_with(".so") {
        return true;
    }
    let bytes = name.as_bytes();
    bytes.len() > 4
        && name[..bytes.len() - 1].ends_with(".so.")
        && bytes[bytes.len() - 1].is_ascii_digit()
}

/// Follow `path` (a container path) through symlinks under the root: the final container path
/// and each `(link, target as written)` on the way; `None` if anything is missing.
fn resolve_chain(driver_root: &Path, path: &str) -> Option<(String, Vec<(String, String)>)> {
    let mut current = clean(path);
    let mut chain = Vec::new();
    // The kernel's own limit on links followed in one lookup.
    for _ in 0..40 {
        let host = host_path(driver_root, &current);
        let meta = std::fs::symlink_metadata(&host).ok()?;
        if !meta.file_type().is_symlink() {
            return Some((current, chain));
        }
        let target = std::fs::read_link(&host)
            .ok()?
            .to_string_lossy()
            .into_owned();
        let next = if target.starts_with('/') {
            clean(&target)
        } else {
            let parent = current.rsplit_once('/').map_or("", |(dir, _)| dir);
            clean(&format!("{parent}/{target}"))
        };
        chain.push((current, target));
        current = next;
    }
    None
}

/// Lexically clean an absolute path (`..` at the root stays at the root).
fn clean(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            _ => parts.push(part),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Links applications expect next to some driver libraries (upstream's fixed list).
fn compat_links(lib_mounts: &[String]) -> Vec<String> {
    let mut links: Vec<String> = Vec::new();
    let mut done: Vec<&str> = Vec::new();
    for path in lib_mounts {
        let (dir, lib) = path.rsplit_once('/').unwrap_or(("", path));
        let (target, link) = if lib.starts_with("libcuda.so") {
            // dlopen("libcuda.so") is common even though only the SONAME is guaranteed.
            ("libcuda.so.1", "libcuda.so")
        } else if lib.starts_with("libGLX_nvidia.so") {
            // GLVND looks for indirect GLX under this name.
            (lib, "libGLX_indirect.so.0")
        } else if lib.starts_with("libnvidia-opticalflow.so") {
            ("libnvidia-opticalflow.so.1", "libnvidia-opticalflow.so")
        } else {
            continue;
        };
        if done.contains(&link) {
            continue;
        }
        done.push(link);
        links.push(format!("{target}::{dir}/{link}"));
    }
    links
}

/// A createContainer `create-symlinks` hook; a binary named nvidia-ctk takes the `hook`
/// subcommand first.
fn create_symlinks_hook(hook_path: &str, links: &[String]) -> Hook {
    let base = hook_path.rsplit('/').next().unwrap_or(hook_path);
    let mut args = if base == "nvidia-ctk" {
        vec!["nvidia-ctk".to_string(), "hook".to_string()]
    } else {
        vec!["nvidia-cdi-hook".to_string()]
    };
    args.push("create-symlinks".into());
    for link in links {
        args.push("--link".into());
        args.push(link.clone());
    }
    Hook {
        hook_name: "createContainer".into(),
        path: hook_path.to_string(),
        args,
        env: vec!["NVIDIA_CTK_DEBUG=false".into()],
        timeout: None,
    }
}

#[cfg(test)]
#[path = "csv_tests.rs"]
mod tests;
