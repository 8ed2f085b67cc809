//! `enable-cuda-compat`: when the image's CUDA forward-compat libcuda is newer than the host
//! driver, list its directory in an `/etc/ld.so.conf.d/00-compat-*.conf`, so that the
//! `update-ldcache` hook that follows puts it ahead of the driver's. The decision follows the
//! library's `.note.cuda.fwd_compatibility` ELF note when it has one (which driver branches it
//! supports), else the majors (reference nvidia-container-toolkit.md §8).

use std::cmp::Ordering;
use std::fs::File;
use std::io::Write;

use anyhow::{Result, anyhow};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use serde_json::Value;

use super::{Args, random_suffix};
use crate::discover::elf::read_section_note;
use crate::discover::root::open_regular_in_root;
use crate::live::rootfs::Rootfs;

const DEFAULT_COMPAT_ROOT: &str = "/usr/local/cuda/compat";
const CONF_DIR: &str = "/etc/ld.so.conf.d";
const NOTE_SECTION: &str = ".note.cuda.fwd_compatibility";
const NOTE_OWNER: &str = "NVIDIA Corporation";

pub fn run_enable_cuda_compat(args: &Args) -> Result<()> {
    let driver = args.last("host-driver-version").unwrap_or("");
    let cuda = args.last("host-cuda-version").unwrap_or("");
    if driver.is_empty() && cuda.is_empty() {
        return Ok(());
    }
    let compat_root = args
        .last("cuda-compat-container-root")
        .filter(|r| !r.is_empty())
        .unwrap_or(DEFAULT_COMPAT_ROOT);
    let (_, root) = args.open_root()?;
    enable_cuda_compat(&root, compat_root, driver, cuda)
}

pub fn enable_cuda_compat(
    root: &Rootfs,
    compat_root: &str,
    driver: &str,
    cuda: &str,
) -> Result<()> {
    let Some((file, version)) = find_compat_libcuda(root, compat_root)? else {
        return Ok(());
    };
    let note = read_compat_note(&file);
    if !should_use(&version, note.as_ref(), driver, cuda) {
        crate::info!("not using the CUDA compat libraries in {compat_root}");
        return Ok(());
    }
    write_conf(root, compat_root)
}

/// The one regular file `libcuda.so.*.*` in the compat directory (symlinks followed inside the
/// root), with the version its name carries. Zero or several: a warning, nothing done.
fn find_compat_libcuda(root: &Rootfs, dir: &str) -> Result<Option<(File, String)>> {
    let dirfd = match root.resolve(dir, OFlag::O_RDONLY | OFlag::O_DIRECTORY) {
        Ok(fd) => fd,
        Err(Errno::ENOENT | Errno::ENOTDIR) => return Ok(None),
        Err(e) => return Err(anyhow!("failed to open {dir}: {}", e.desc().to_lowercase())),
    };
    let names = super::ldconf::list_dir(dirfd).map_err(|e| anyhow!("failed to list {dir}: {e}"))?;
    let mut found = Vec::new();
    for name in names {
        let Some(version) = name.strip_prefix("libcuda.so.") else {
            continue;
        };
        if !version.contains('.') {
            continue;
        }
        let path = format!("{}/{name}", dir.trim_end_matches('/'));
        // Only a regular file is opened: a FIFO or device node of that name is skipped unopened.
        if let Some(file) = open_regular_in_root(root.fd(), &path) {
            found.push((file, version.to_owned()));
        }
    }
    if found.len() != 1 {
        eprintln!(
            "warning: expected exactly one libcuda.so.*.* in {dir}, found {}; not enabling CUDA compat",
            found.len()
        );
        return Ok(None);
    }
    Ok(found.pop())
}

/// What the compat library's note says it supports.
#[derive(Debug, Default)]
pub struct CompatNote {
    pub cuda_version: String,
    pub driver_majors: Vec<u64>,
    pub valid: bool,
}

/// The rules of §8: with a note, the driver branch list decides (or the CUDA versions, when the
/// driver versions cannot be compared); without one, the majors.
pub fn should_use(compat: &str, note: Option<&CompatNote>, driver: &str, cuda: &str) -> bool {
    let host_major = major(driver);
    match note {
        Some(n) if !n.valid => false,
        Some(n) => match (parse_version(compat), parse_version(driver), host_major) {
            (Some(c), Some(h), Some(m)) => n.driver_majors.contains(&m) && cmp(&c, &h).is_gt(),
            _ => match (parse_version(&n.cuda_version), parse_version(cuda)) {
                (Some(c), Some(h)) => cmp(&c, &h).is_gt(),
                _ => false,
            },
        },
        None if !cuda.is_empty() => false,
        None => match (host_major, major(compat)) {
            (Some(h), Some(c)) => h < c,
            _ => false,
        },
    }
}

fn major(v: &str) -> Option<u64> {
    v.split('.').next()?.trim().parse().ok()
}

fn parse_version(v: &str) -> Option<Vec<u64>> {
    let v = v.trim();
    if v.is_empty() {
        return None;
    }
    v.split('.').map(|p| p.parse().ok()).collect()
}

/// Numeric, component by component; a missing component counts as 0.
fn cmp(a: &[u64], b: &[u64]) -> Ordering {
    let n = a.len().max(b.len());
    (0..n)
        .map(|i| a.get(i).unwrap_or(&0).cmp(b.get(i).unwrap_or(&0)))
        .find(|o| o.is_ne())
        .unwrap_or(Ordering::Equal)
}

/// `00-compat-<random>.conf`, created exclusively and never through a symlink.
fn write_conf(root: &Rootfs, compat_root: &str) -> Result<()> {
    let dir = root.mkdir_all(CONF_DIR, &mut Vec::new())?;
    let name = format!("00-compat-{}.conf", random_suffix());
    let fd = nix::fcntl::openat(
        &dir,
        name.as_str(),
        OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o644),
    )
    .map_err(|e| {
        anyhow!(
            "failed to create {CONF_DIR}/{name}: {}",
            e.desc().to_lowercase()
        )
    })?;
    File::from(fd)
        .write_all(format!("{compat_root}\n").as_bytes())
        .map_err(|e| anyhow!("failed to write {CONF_DIR}/{name}: {e}"))
}

/// The `.note.cuda.fwd_compatibility` note. `None` when the file has no such note.
pub fn read_compat_note(file: &File) -> Option<CompatNote> {
    let desc = find_note(file)?;
    let text = String::from_utf8_lossy(&desc);
    let text = text.trim_end_matches('\0').trim();
    let Ok(json) = serde_json::from_str::<Value>(text) else {
        eprintln!("warning: invalid {NOTE_SECTION} note; not enabling CUDA compat");
        return Some(CompatNote::default());
    };
    let cuda_version = json
        .get("CUDA Version")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let driver_majors = json
        .get("Driver")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_u64().or_else(|| v.as_str()?.trim().parse().ok()))
                .collect()
        })
        .unwrap_or_default();
    Some(CompatNote {
        cuda_version,
        driver_majors,
        valid: true,
    })
}

/// The descriptor of NVIDIA's note in the forward-compat section, through the one bounded ELF
/// reader (a few positioned reads; the library is tens of megabytes).
fn find_note(file: &File) -> Option<Vec<u8>> {
    read_section_note(file, NOTE_SECTION, NOTE_OWNER)
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(majors: &[u64], cuda: &str) -> CompatNote {
        CompatNote {
            cuda_version: cuda.to_owned(),
            driver_majors: majors.to_vec(),
            valid: true,
        }
    }

    #[test]
    fn majors_compare_as_numbers() {
        assert!(should_use("100.1.2", None, "99.9.9", ""));
        assert!(!should_use("99.1.2", None, "100.0.0", ""));
        assert!(!should_use("550.1.2", None, "550.90.07", ""));
        assert!(should_use("575.57.08", None, "550.90.07", ""));
        // A host CUDA version without a note: not used.
        assert!(!should_use("575.57.08", None, "550.90.07", "12.4"));
        assert!(!should_use("575.57.08", None, "", ""));
    }

    #[test]
    fn the_note_lists_the_supported_driver_branches() {
        let n = note(&[470, 535, 550], "12.9");
        assert!(should_use("575.57.08", Some(&n), "550.90.07", ""));
        assert!(!should_use("575.57.08", Some(&n), "560.35.03", ""));
        // Supported branch but not newer.
        assert!(!should_use("550.54.14", Some(&n), "550.90.07", ""));
        assert!(!should_use("550.90.07", Some(&n), "550.90.07", ""));
        // No driver version: the CUDA versions decide.
        assert!(should_use("575.57.08", Some(&n), "", "12.4"));
        assert!(!should_use("575.57.08", Some(&n), "", "12.10"));
        assert!(!should_use("575.57.08", Some(&n), "", ""));
        assert!(!should_use(
            "575.57.08",
            Some(&CompatNote::default()),
            "550.90.07",
            ""
        ));
    }
}
