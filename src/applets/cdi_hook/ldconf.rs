//! `update-ldcache`: make the injected library folders known to the container's loader. As
//! upstream, the folders not yet configured go to `/etc/ld.so.conf.d/00-nvcr-*.conf` and the
//! system directories to `zz-nvcr-*.conf`, so an ldconfig run later inside the container keeps
//! them (Alpine: `/etc/ld-musl-<arch>.path`). The cache itself is then written by our own cache
//! writer — nothing from the image runs, and nothing is exec'd — or, with `--ldconfig-path`, by
//! that host ldconfig run chrooted from a sealed copy (`live::ldconfig`).

use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use anyhow::{Result, anyhow, bail};
use nix::fcntl::{OFlag, openat, renameat};
use nix::sys::stat::{Mode, SFlag, fstat};
use nix::unistd::{UnlinkatFlags, unlinkat};

use super::{Args, random_suffix};
use crate::discover::elf::{ElfInfo, read_elf_file};
use crate::discover::ldcache::{self as cache, compare_sonames};
use crate::discover::root::{open_regular_in_root, reopen_readable};
use crate::live::ldcache::update_cache;
use crate::live::ldconfig;
use crate::live::rootfs::{Rootfs, kind, split};
use crate::plan::CacheEntry;

const LD_SO_CONF: &str = "/etc/ld.so.conf";
const CONF_DIR: &str = "/etc/ld.so.conf.d";

pub fn run_update_ldcache(args: &Args) -> Result<()> {
    let (path, root) = args.open_root()?;
    if path.as_os_str().is_empty() || path == Path::new("/") {
        bail!("invalid container root {}", path.display());
    }
    let folders: Vec<String> = args
        .all("folder")
        .iter()
        .filter(|f| !f.is_empty())
        .map(|f| normalize(f))
        .collect();
    configure_dirs(&root, &folders)?;
    match args.last("ldconfig-path").filter(|p| !p.is_empty()) {
        Some(host_ldconfig) => {
            let program = ldconfig::prepare(&format!("@{}", prefer_real(host_ldconfig)))?;
            crate::privilege::enter(crate::privilege::Phase::Ldconfig);
            ldconfig::run(&root, &program, &folders, args.owner()?)
        }
        None => {
            // The image's cache is parsed with no capability at all; the container's root owns
            // its /etc (files are created as that user, see `Args::open_root`).
            crate::privilege::enter(crate::privilege::Phase::Ldcache);
            // ldconfig would read the directories enable-cuda-compat listed; our writer scans
            // them first, so the image's compat libcuda wins over the driver's.
            let mut scan = compat_dirs(&root);
            for f in &folders {
                if !scan.contains(f) {
                    scan.push(f.clone());
                }
            }
            write_cache(&root, &scan)
        }
    }
}

/// The directories in the container's `/etc/ld.so.conf.d/00-compat-*.conf` (enable-cuda-compat's
/// files), in name order.
fn compat_dirs(root: &Rootfs) -> Vec<String> {
    let Ok(fd) = root.resolve(CONF_DIR, OFlag::O_RDONLY | OFlag::O_DIRECTORY) else {
        return Vec::new();
    };
    let mut names: Vec<String> = list_dir(fd)
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n.starts_with("00-compat-") && n.ends_with(".conf"))
        .collect();
    names.sort();
    let mut dirs: Vec<String> = Vec::new();
    for name in names {
        let text = read_small(root, &format!("{CONF_DIR}/{name}")).unwrap_or_default();
        for line in text.lines().map(str::trim) {
            if line.starts_with('/') && !dirs.iter().any(|d| d == line) {
                dirs.push(normalize(line));
            }
        }
    }
    dirs
}

/// Distributions that wrap ldconfig in a script ship the binary as `ldconfig.real`.
fn prefer_real(path: &str) -> String {
    let real = format!("{path}.real");
    if Path::new(&real).is_file() {
        real
    } else {
        path.to_owned()
    }
}

fn normalize(dir: &str) -> String {
    let trimmed = dir.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".to_owned()
    } else if trimmed.starts_with('/') {
        trimmed.to_owned()
    } else {
        format!("/{trimmed}")
    }
}

/// The loader configuration files, as upstream writes them.
pub fn configure_dirs(root: &Rootfs, folders: &[String]) -> Result<()> {
    // A symlink in its place, even a dangling one, is the image's business: left alone.
    if !name_exists(root, LD_SO_CONF) {
        write_new(root, LD_SO_CONF, b"include /etc/ld.so.conf.d/*.conf\n")?;
    }
    let mut configured = BTreeSet::new();
    read_conf(root, LD_SO_CONF, 0, &mut configured);
    let system = system_dirs(exists(root, "/etc/debian_version"));
    let mut new: Vec<&str> = Vec::new();
    for f in folders {
        if !configured.contains(f) && !system.contains(&f.as_str()) && !new.contains(&f.as_str()) {
            new.push(f);
        }
    }
    let suffix = random_suffix();
    if !new.is_empty() {
        write_new(
            root,
            &format!("{CONF_DIR}/00-nvcr-{suffix}.conf"),
            &lines(&new),
        )?;
    }
    // Written once: a second run finds them configured by the first run's file.
    if system.iter().any(|d| !configured.contains(*d)) {
        write_new(
            root,
            &format!("{CONF_DIR}/zz-nvcr-{suffix}.conf"),
            &lines(&system),
        )?;
    }
    if exists(root, "/etc/alpine-release") {
        update_musl_path(root, folders)?;
    }
    Ok(())
}

fn lines(dirs: &[&str]) -> Vec<u8> {
    dirs.iter()
        .flat_map(|d| format!("{d}\n").into_bytes())
        .collect()
}

/// The directories glibc's ldconfig searches without configuration, for this architecture.
fn system_dirs(debian: bool) -> Vec<&'static str> {
    match (std::env::consts::ARCH, debian) {
        ("aarch64", true) => vec![
            "/lib/aarch64-linux-gnu",
            "/usr/lib/aarch64-linux-gnu",
            "/lib",
            "/usr/lib",
        ],
        ("aarch64", false) => vec!["/lib", "/usr/lib", "/lib64", "/usr/lib64"],
        (_, true) => vec![
            "/lib/x86_64-linux-gnu",
            "/usr/lib/x86_64-linux-gnu",
            "/lib",
            "/usr/lib",
        ],
        (_, false) => vec![
            "/lib",
            "/usr/lib",
            "/lib64",
            "/usr/lib64",
            "/libx32",
            "/usr/libx32",
        ],
    }
}

/// Directories an ld.so.conf names, following `include` globs (depth-limited: a loop of
/// includes in a hostile image must end).
fn read_conf(root: &Rootfs, path: &str, depth: u32, out: &mut BTreeSet<String>) {
    if depth > 8 {
        return;
    }
    let Some(text) = read_small(root, path) else {
        return;
    };
    let base = split(path).map(|(d, _)| d.to_owned()).unwrap_or_default();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if let Some(rest) = line
            .strip_prefix("include")
            .filter(|r| r.starts_with([' ', '\t']))
        {
            for pattern in rest.split_whitespace() {
                let pattern = if pattern.starts_with('/') {
                    pattern.to_owned()
                } else {
                    format!("{base}/{pattern}")
                };
                for file in glob(root, &pattern) {
                    read_conf(root, &file, depth + 1, out);
                }
            }
        } else if !line.starts_with("hwcap") {
            let dirs = line.split(|c: char| c == ':' || c == ',' || c.is_whitespace());
            out.extend(dirs.filter(|d| !d.is_empty()).map(normalize));
        }
    }
}

/// Files matching `dir/pattern`, sorted; wildcards only in the last component, as ld.so.conf
/// includes use them.
fn glob(root: &Rootfs, pattern: &str) -> Vec<String> {
    let Ok((dir, name)) = split(pattern) else {
        return Vec::new();
    };
    if !name.contains(['*', '?']) {
        return vec![pattern.to_owned()];
    }
    let Ok(fd) = root.resolve(dir, OFlag::O_RDONLY | OFlag::O_DIRECTORY) else {
        return Vec::new();
    };
    let mut names: Vec<String> = list_dir(fd)
        .unwrap_or_default()
        .into_iter()
        .filter(|n| !n.starts_with('.') && wildcard(name.as_bytes(), n.as_bytes()))
        .map(|n| format!("{}/{n}", dir.trim_end_matches('/')))
        .collect();
    names.sort();
    names
}

fn wildcard(p: &[u8], s: &[u8]) -> bool {
    match (p.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => wildcard(&p[1..], s) || (!s.is_empty() && wildcard(p, &s[1..])),
        (Some(b'?'), Some(_)) => wildcard(&p[1..], &s[1..]),
        (Some(a), Some(b)) if a == b => wildcard(&p[1..], &s[1..]),
        _ => false,
    }
}

/// The names in a directory opened `O_RDONLY|O_DIRECTORY`.
pub fn list_dir(fd: OwnedFd) -> std::io::Result<Vec<String>> {
    let entries = std::fs::read_dir(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
    Ok(entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect())
}

fn exists(root: &Rootfs, abs: &str) -> bool {
    root.resolve(abs, OFlag::O_PATH).is_ok()
}

/// The name itself (not what a symlink there names) exists.
fn name_exists(root: &Rootfs, abs: &str) -> bool {
    let Ok((dir, name)) = split(abs) else {
        return false;
    };
    root.resolve(dir, OFlag::O_PATH | OFlag::O_DIRECTORY)
        .is_ok_and(|d| {
            openat(
                &d,
                name,
                OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .is_ok()
        })
}

/// A regular file's text, at most 1 MiB.
fn read_small(root: &Rootfs, abs: &str) -> Option<String> {
    let mut text = String::new();
    open_regular_in_root(root.fd(), abs)?
        .take(1 << 20)
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

/// A new file (0644), created exclusively and never through a symlink.
fn write_new(root: &Rootfs, abs: &str, bytes: &[u8]) -> Result<()> {
    let (dir, name) = split(abs)?;
    let dirfd = root.mkdir_all(dir, &mut Vec::new())?;
    let fd = openat(
        &dirfd,
        name,
        OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o644),
    )
    .map_err(|e| anyhow!("failed to create {abs}: {}", e.desc().to_lowercase()))?;
    File::from(fd).write_all(bytes).map_err(|e| {
        // A short file left behind would read as configured on the next run (an empty
        // ld.so.conf would never get its include line).
        let _ = unlinkat(&dirfd, name, UnlinkatFlags::NoRemoveDir);
        anyhow!("failed to write {abs}: {e}")
    })
}

/// musl reads no cache, only this list; created with musl's built-in default first, since the
/// file replaces that default.
fn update_musl_path(root: &Rootfs, folders: &[String]) -> Result<()> {
    let arch = std::env::consts::ARCH;
    let abs = format!("/etc/ld-musl-{arch}.path");
    let mut text =
        read_small(root, &abs).unwrap_or_else(|| "/lib\n/usr/local/lib\n/usr/lib\n".into());
    let present: BTreeSet<String> = text
        .split(|c: char| c == ':' || c.is_whitespace())
        .filter(|d| !d.is_empty())
        .map(normalize)
        .collect();
    let missing: Vec<&String> = folders.iter().filter(|f| !present.contains(*f)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    for f in missing {
        text.push_str(f);
        text.push('\n');
    }
    let etc = root.mkdir_all("/etc", &mut Vec::new())?;
    let name = format!("ld-musl-{arch}.path");
    let temp = format!(".{name}-{}", random_suffix());
    let fd = openat(
        &etc,
        temp.as_str(),
        OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o644),
    )
    .map_err(|e| anyhow!("failed to create {abs}: {}", e.desc().to_lowercase()))?;
    let written = File::from(fd).write_all(text.as_bytes());
    let renamed = written
        .map_err(|e| anyhow!("failed to write {abs}: {e}"))
        .and_then(|()| {
            renameat(&etc, temp.as_str(), &etc, name.as_str())
                .map_err(|e| anyhow!("failed to replace {abs}: {}", e.desc().to_lowercase()))
        });
    if renamed.is_err() {
        let _ = unlinkat(&etc, temp.as_str(), UnlinkatFlags::NoRemoveDir);
    }
    renamed
}

/// Our own cache writer: the shared libraries in each folder (inside the rootfs), with their
/// sonames, merged into the image's cache.
pub fn write_cache(root: &Rootfs, folders: &[String]) -> Result<()> {
    let mut entries: Vec<CacheEntry> = Vec::new();
    for folder in folders {
        let found = scan_folder(root, folder);
        for e in found {
            match entries
                .iter_mut()
                .find(|o| o.dir == e.dir && o.soname == e.soname && o.flags == e.flags)
            {
                // ldconfig's choice between two files with one soname: the higher version.
                Some(o) => {
                    if compare_sonames(e.file.as_bytes(), o.file.as_bytes()) == Ordering::Greater {
                        *o = e;
                    }
                }
                None => entries.push(e),
            }
        }
    }
    crate::info!("writing {} ld.so.cache entries", entries.len());
    // Links and directories stay on failure: upstream's ldconfig leaves its links too, and a
    // rerun completes them.
    update_cache(root, &entries).map_err(|e| anyhow!("failed to update ld.so.cache: {e}"))
}

/// `lib*.so*` regular files (never a symlink: that is a soname or development link) that are
/// ELF shared objects of a known word size. A missing folder is skipped.
fn scan_folder(root: &Rootfs, folder: &str) -> Vec<CacheEntry> {
    let Ok(dirfd) = root.resolve(folder, OFlag::O_RDONLY | OFlag::O_DIRECTORY) else {
        crate::warn!("skipping {folder}: not a directory in the container");
        return Vec::new();
    };
    let Ok(dup) = dirfd.try_clone() else {
        return Vec::new();
    };
    let mut names = list_dir(dup).unwrap_or_default();
    names.sort();
    let mut out = Vec::new();
    for name in names {
        if !name.starts_with("lib") || !name.contains(".so") {
            continue;
        }
        // Found first, opened only if regular: never a FIFO or device node under a library name.
        let Ok(path) = openat(
            &dirfd,
            name.as_str(),
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) else {
            continue;
        };
        let Some(fd) = fstat(&path)
            .ok()
            .filter(|st| kind(st) == SFlag::S_IFREG)
            .and_then(|st| reopen_readable(&path, &st).ok().flatten())
        else {
            continue;
        };
        let Some(info) = read_library(fd) else {
            continue;
        };
        let Some(flags) = cache_flags(&info) else {
            continue;
        };
        out.push(CacheEntry {
            dir: folder.to_owned(),
            soname: info.soname.unwrap_or_else(|| name.clone()),
            file: name,
            flags,
        });
    }
    out
}

/// The ELF facts of a regular file, from a few positioned reads of its headers.
fn read_library(fd: OwnedFd) -> Option<ElfInfo> {
    read_elf_file(&File::from(fd)).ok()
}

/// The cache's flags for a library: ELF/libc6 plus the word-size tag ld.so matches.
fn cache_flags(info: &ElfInfo) -> Option<i32> {
    let arch = match (info.class64, info.machine) {
        (true, 62) => cache::FLAG_X8664_LIB64,
        (false, 62) => cache::FLAG_X8664_LIBX32,
        (false, 3) => 0,
        (true, 183) => cache::FLAG_AARCH64_LIB64,
        (true, 21) => cache::FLAG_POWERPC_LIB64,
        (false, 40) => cache::FLAG_ARM_LIBHF,
        _ => return None,
    };
    Some(cache::FLAG_ELF_LIBC6 | arch)
}

#[cfg(test)]
mod tests {
    use super::wildcard;

    #[test]
    fn include_globs() {
        assert!(wildcard(b"*.conf", b"00-nvcr-1.conf"));
        assert!(!wildcard(b"*.conf", b"x.conf~"));
        assert!(wildcard(b"?x*", b"ax"));
        assert!(!wildcard(b"?x*", b"x"));
    }
}
