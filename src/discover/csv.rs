//! Tegra CSV mount specs (reference nvidia-container-toolkit.md §2.5 csv mode): files of
//! `<type>, <path>` lines, type one of `dev`, `dir`, `lib`, `sym`, naming what a Jetson
//! container gets from the host, found on the host the way upstream's csv discoverer finds
//! them: devices as nodes, dirs and libs at the real path their symlinks end at, syms as their
//! target plus each link of the chain. The plan and the CDI generator make mounts and hooks.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow, bail};
use nix::sys::stat::{major, minor};

use super::devices::DeviceNode;
use super::root::RootDir;
use super::tegra::TEGRA_RELEASE;

/// Files read unless `NVIDIA_REQUIRE_JETPACK=csv-mounts=all` asks for every `*.csv`.
pub const DEFAULT_CSV_FILES: [&str; 3] = ["devices.csv", "drivers.csv", "l4t.csv"];
pub const DEFAULT_MOUNT_SPEC_PATH: &str =
    "/etc/nvidia-container-runtime/host-files-for-container.d";

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

/// A CSV file larger than this is refused: the real ones are a few kilobytes, and a CSV path
/// pointed at a huge file (or at /dev/zero) must not make the runtime read it all.
pub const MAX_CSV_SIZE: u64 = 1 << 20;

/// All entries of `files`. A file that does not exist or holds no entry is skipped with a
/// warning, as upstream does, and so is each bad line; a file that is not a regular file, is
/// larger than [`MAX_CSV_SIZE`], or names a path with a `..` component is an error.
pub fn load_mount_specs(files: &[PathBuf]) -> Result<(Vec<MountSpec>, Vec<String>)> {
    let (mut specs, mut warnings) = (Vec::new(), Vec::new());
    for file in files {
        let shown = file.display();
        let text = match read_csv_file(file) {
            Ok(Some(text)) => text,
            Ok(None) => {
                warnings.push(format!(
                    "skipping CSV file {shown}: failed to open {shown} for reading: no such file"
                ));
                continue;
            }
            Err(e) => bail!("CSV file {shown}: {e}"),
        };
        let parsed = parse_mount_specs(&text);
        warnings.extend(
            parsed
                .skipped
                .iter()
                .map(|s| format!("{shown}: skipping invalid mount spec: {s}")),
        );
        if parsed.specs.is_empty() {
            warnings.push(format!("skipping CSV file {shown}: CSV file is empty"));
        }
        for spec in &parsed.specs {
            check_path(&spec.path).map_err(|e| anyhow!("CSV file {shown}: {e}"))?;
        }
        specs.extend(parsed.specs);
    }
    Ok((specs, warnings))
}

/// `Ok(None)` when missing; the text of a small regular file; an error for anything else.
fn read_csv_file(file: &Path) -> Result<Option<String>> {
    use std::io::Read;
    let f = match std::fs::File::open(file) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => bail!("open: {e}"),
    };
    let meta = f.metadata()?;
    if !meta.is_file() {
        bail!("not a regular file");
    }
    if meta.len() > MAX_CSV_SIZE {
        bail!(
            "{} bytes, more than the {MAX_CSV_SIZE} a CSV file may have",
            meta.len()
        );
    }
    let mut text = String::new();
    f.take(MAX_CSV_SIZE)
        .read_to_string(&mut text)
        .map_err(|e| anyhow!("read: {e}"))?;
    Ok(Some(text))
}

/// An entry's path may not climb: `..` in a CSV path is never needed, and refusing it keeps
/// every entry inside the driver root by construction.
fn check_path(path: &str) -> Result<()> {
    if path.split('/').any(|c| c == "..") {
        bail!("path {path:?} has a '..' component");
    }
    Ok(())
}

/// What the entries of a set of CSV files give a container, found on the host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CsvFiles {
    /// `dev` entries found as character devices under the dev root.
    pub device_nodes: Vec<DeviceNode>,
    /// `dir`, `lib` and the targets of `sym` entries, at their real paths in the driver root
    /// (which are the container paths).
    pub mounts: Vec<CsvMount>,
    /// `(link, target)`: the links upstream adds next to some driver libraries (`libcuda.so`),
    /// and each link of every `sym` chain.
    pub library_links: Vec<(String, String)>,
    pub links: Vec<(String, String)>,
    /// The mounted libraries with their sonames (for the loader cache).
    pub libraries: Vec<CsvLibrary>,
    /// Entries not found (upstream's locators skip them with a warning).
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvMount {
    pub path: String,
    pub dir: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvLibrary {
    pub path: String,
    /// `None` when the file is not an ELF shared object.
    pub soname: Option<String>,
}

/// The `dev` entries as device nodes under `dev_root` (a bare name is looked up in /dev).
pub fn find_devices(specs: &[MountSpec], dev_root: &Path) -> CsvFiles {
    let mut out = CsvFiles::default();
    for s in specs.iter().filter(|s| s.kind == MountKind::Dev) {
        match device_node(dev_root, &s.path) {
            Ok(node) if !out.device_nodes.iter().any(|n| n.path == node.path) => {
                out.device_nodes.push(node)
            }
            Ok(_) => {}
            Err(e) => out.warnings.push(format!("{e:#}")),
        }
    }
    out
}

/// The `dir`, `lib` and `sym` entries under `driver_root`; `sym` entries whose path matches an
/// ignore pattern (`--csv.ignore-pattern`: a glob on the path, or with `**/` on the file name)
/// are left out. A symlink leaving the driver root is an error.
pub fn find_files(specs: &[MountSpec], driver_root: &Path, ignore: &[String]) -> Result<CsvFiles> {
    let mut out = CsvFiles::default();
    let root = RootDir::open(driver_root)
        .map_err(|e| anyhow!("open driver root {}: {e}", driver_root.display()))?;
    let of_kind = |kind| {
        specs
            .iter()
            .filter(move |s| s.kind == kind)
            .map(|s| s.path.as_str())
    };
    for path in of_kind(MountKind::Dir) {
        match root.find(path) {
            Ok(Some(f)) if f.is_dir() => push_mount(&mut out, &f.path, true),
            _ => out.warnings.push(format!(
                "could not locate directory {}",
                host_path(driver_root, path).display()
            )),
        }
    }
    for path in of_kind(MountKind::Lib) {
        match resolve_chain(&root, driver_root, path)? {
            Some((target, _)) => {
                push_mount(&mut out, &target, false);
                if !out.libraries.iter().any(|l| l.path == target) {
                    let soname = super::tegra::soname_of(&host_path(driver_root, &target));
                    out.libraries.push(CsvLibrary {
                        path: target,
                        soname,
                    });
                }
            }
            None => out.warnings.push(format!(
                "could not locate {}",
                host_path(driver_root, path).display()
            )),
        }
    }
    let mut chain_links = Vec::new();
    for path in of_kind(MountKind::Sym).filter(|p| !ignored(p, ignore)) {
        let Some((target, chain)) = resolve_chain(&root, driver_root, path)? else {
            out.warnings.push(format!(
                "could not locate symlink {}",
                host_path(driver_root, path).display()
            ));
            continue;
        };
        let dir = host_path(driver_root, &target).is_dir();
        push_mount(&mut out, &target, dir);
        for pair in chain {
            if !chain_links.contains(&pair) {
                chain_links.push(pair);
            }
        }
    }
    out.links = chain_links;
    let paths: Vec<String> = out.libraries.iter().map(|l| l.path.clone()).collect();
    out.library_links = compat_links(&paths);
    // Upstream mounts the L4T release file with every CSV discoverer.
    if host_path(driver_root, TEGRA_RELEASE).is_file() {
        push_mount(&mut out, TEGRA_RELEASE, false);
    }
    Ok(out)
}

/// Upstream's ignore patterns: `**/NAME-GLOB` matches the file name, anything else the path.
fn ignored(path: &str, patterns: &[String]) -> bool {
    patterns.iter().any(|p| match p.strip_prefix("**/") {
        Some(name) => glob_match(
            name.as_bytes(),
            path.rsplit('/').next().unwrap_or(path).as_bytes(),
        ),
        None => glob_match(p.as_bytes(), path.as_bytes()),
    })
}

/// `*` (not across `/`), `?` and literal bytes, as Go's filepath.Match without classes.
fn glob_match(p: &[u8], s: &[u8]) -> bool {
    match (p.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            glob_match(&p[1..], s) || (!s.is_empty() && s[0] != b'/' && glob_match(p, &s[1..]))
        }
        (Some(b'?'), Some(c)) if *c != b'/' => glob_match(&p[1..], &s[1..]),
        (Some(a), Some(b)) if a == b => glob_match(&p[1..], &s[1..]),
        _ => false,
    }
}

fn host_path(driver_root: &Path, path: &str) -> PathBuf {
    driver_root.join(path.trim_start_matches('/'))
}

fn push_mount(out: &mut CsvFiles, path: &str, dir: bool) {
    if !out.mounts.iter().any(|m| m.path == path) {
        out.mounts.push(CsvMount {
            path: path.to_owned(),
            dir,
        });
    }
}

/// A character device under the dev root; a bare name is looked up in /dev.
pub fn device_node(dev_root: &Path, path: &str) -> Result<DeviceNode> {
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/dev/{path}")
    };
    let host = host_path(dev_root, &path);
    let meta = std::fs::metadata(&host)
        .map_err(|e| anyhow!("could not locate device {}: {e}", host.display()))?;
    if !meta.file_type().is_char_device() {
        bail!(
            "could not locate device {}: not a character device",
            host.display()
        );
    }
    Ok(DeviceNode {
        path,
        major: major(meta.rdev()) as u32,
        minor: minor(meta.rdev()) as u32,
    })
}

/// `*.so` and `*.so.[0-9]`: the names of library links.
#[cfg(test)]
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

/// The real path a chain ends at, and each `(link, target as written)` on the way.
type Resolved = (String, Vec<(String, String)>);

/// Follow `path` through symlinks inside the driver root: the final real path and each
/// `(link, target as written)` on the way; `None` if anything is missing. Every directory on
/// the way is resolved by the kernel inside the root (a symlinked directory cannot lead out);
/// a link whose target climbs above the root is an error.
fn resolve_chain(root: &RootDir, driver_root: &Path, path: &str) -> Result<Option<Resolved>> {
    let mut current = path.to_string();
    let mut chain = Vec::new();
    // The kernel's own limit on links followed in one lookup.
    for _ in 0..40 {
        let (dir, name) = current.rsplit_once('/').unwrap_or(("", &current));
        let real_dir = match root.find(if dir.is_empty() { "/" } else { dir }) {
            Ok(Some(f)) if f.is_dir() => f.path,
            _ => return Ok(None),
        };
        let real_dir = if real_dir == "/" {
            String::new()
        } else {
            real_dir
        };
        let here = format!("{real_dir}/{name}");
        let host = host_path(driver_root, &here);
        let Ok(meta) = std::fs::symlink_metadata(&host) else {
            return Ok(None);
        };
        if !meta.file_type().is_symlink() {
            // Never a FIFO, socket or device node planted under a library's name.
            let plain = meta.file_type().is_file() || meta.file_type().is_dir();
            return Ok(plain.then_some((here, chain)));
        }
        let target = std::fs::read_link(&host)?.to_string_lossy().into_owned();
        let next = if target.starts_with('/') {
            clean(&target)
        } else {
            clean(&format!("{real_dir}/{target}"))
        }
        .ok_or_else(|| anyhow!("symlink {here} -> {target} points out of the driver root"))?;
        chain.push((here, target));
        current = next;
    }
    bail!("{path}: too many levels of symbolic links")
}

/// Lexically clean an absolute path; `None` when `..` climbs above the root.
fn clean(path: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            _ => parts.push(part),
        }
    }
    Some(format!("/{}", parts.join("/")))
}

/// Links applications expect next to some driver libraries (upstream's fixed list).
fn compat_links(lib_mounts: &[String]) -> Vec<(String, String)> {
    let mut links = Vec::new();
    let mut done: Vec<&str> = Vec::new();
    for path in lib_mounts {
        let (dir, lib) = path.rsplit_once('/').unwrap_or(("", path));
        let (target, link) = if lib.starts_with("libcuda.so.") {
            // dlopen("libcuda.so") is common even though only the SONAME is guaranteed.
            ("libcuda.so.1", "libcuda.so")
        } else if lib.starts_with("libGLX_nvidia.so.") {
            // GLVND looks for indirect GLX under this name.
            (lib, "libGLX_indirect.so.0")
        } else if lib.starts_with("libnvidia-opticalflow.so.") {
            ("libnvidia-opticalflow.so.1", "libnvidia-opticalflow.so")
        } else {
            continue;
        };
        if done.contains(&link) {
            continue;
        }
        done.push(link);
        links.push((format!("{dir}/{link}"), target.to_owned()));
    }
    links
}

#[cfg(test)]
#[path = "csv_tests.rs"]
mod tests;
