//! The container's loader cache, written without running anything from the image: the image's
//! own `/etc/ld.so.cache` (if any) merged with the injected libraries, and the soname links
//! ldconfig would have made. Works for images with no ldconfig and no cache at all (busybox,
//! distroless, musl). The new file replaces the old one atomically (temp file + rename in /etc).

use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;

use nix::errno::Errno;
use nix::fcntl::{OFlag, readlinkat, renameat};
use nix::sys::stat::{Mode, SFlag, fstat};
use nix::unistd::{UnlinkatFlags, symlinkat, unlinkat};

use super::rootfs::{Created, Rootfs, kind, open_path};
use crate::discover::ldcache::{LdCache, OwnedEntry, write_cache};
use crate::plan::CacheEntry;

const CACHE: &str = "/etc/ld.so.cache";
const TEMP: &str = ".ld.so.cache~nvbox";

/// Make `dir/soname -> file` links and write the merged cache.
pub fn update_cache(root: &Rootfs, entries: &[CacheEntry]) -> io::Result<()> {
    update_cache_tracked(root, entries, &mut Vec::new())
}

/// [`update_cache`], recording the directories and links it creates in `created`, so that a
/// caller that fails (here or later) can remove them.
pub fn update_cache_tracked(
    root: &Rootfs,
    entries: &[CacheEntry],
    created: &mut Vec<Created>,
) -> io::Result<()> {
    let scratch = created;
    // Entries come grouped by directory: resolve each directory once.
    let mut dir: Option<(&str, OwnedFd)> = None;
    for e in entries.iter().filter(|e| e.soname != e.file) {
        if dir.as_ref().is_none_or(|(d, _)| *d != e.dir) {
            dir = Some((e.dir.as_str(), root.mkdir_all(&e.dir, scratch)?));
        }
        let (_, fd) = dir.as_ref().expect("set above");
        let made = link_soname(fd, &e.soname, &e.file)
            .map_err(|err| io::Error::other(format!("symlink {}/{}: {err}", e.dir, e.soname)))?;
        if made {
            scratch.push(Created {
                dir: fd.try_clone()?,
                name: e.soname.clone(),
                is_dir: false,
            });
        }
    }
    let bytes = merge_cache(read_old_cache(root).as_deref(), entries);
    let etc = root.mkdir_all("/etc", scratch)?;
    write_atomically(&etc, &bytes).map_err(|e| {
        io::Error::other(format!(
            "write {CACHE}: {}",
            crate::discover::files::lower_io(&e)
        ))
    })
}

/// The new cache file: `entries` plus the entries of the image's own cache (`old`, untrusted
/// bytes; unreadable ones are dropped as if there were no cache), ours replacing the image's for
/// the same soname and word size. Pure, so that the merge of a hostile cache can be fuzzed.
pub fn merge_cache(old: Option<&[u8]>, entries: &[CacheEntry]) -> Vec<u8> {
    let mut merged: Vec<OwnedEntry> = entries
        .iter()
        .map(|e| OwnedEntry {
            flags: e.flags,
            soname: e.soname.clone(),
            path: format!("{}/{}", e.dir.trim_end_matches('/'), e.soname),
            osversion: 0,
            hwcap: 0,
        })
        .collect();
    if let Some(bytes) = old
        && let Ok(cache) = LdCache::parse(bytes)
    {
        // Ours replace the image's entries for the same soname and word size.
        merged.extend(cache.entries().map(OwnedEntry::from).filter(|o| {
            !entries
                .iter()
                .any(|e| e.soname == o.soname && e.flags == o.flags)
        }));
    }
    write_cache(&merged)
}

/// ldconfig's rule: a soname link is (re)made unless a non-link file holds the name. True when
/// the name was free and the link is new (what a rollback may remove).
fn link_soname(dir: &OwnedFd, soname: &str, file: &str) -> io::Result<bool> {
    match symlinkat(file, dir, soname) {
        Ok(()) => Ok(true),
        Err(Errno::EEXIST) => {
            let fd = open_path(dir, soname)?;
            let st = fstat(&fd).map_err(io::Error::from)?;
            if kind(&st) != SFlag::S_IFLNK {
                return Ok(false);
            }
            // Already right (a restarted container, a reused bundle): left as it is, as
            // ldconfig does, instead of an unlink and a symlink per library.
            if readlinkat(dir, soname).is_ok_and(|t| t.as_os_str() == file) {
                return Ok(false);
            }
            unlinkat(dir, soname, UnlinkatFlags::NoRemoveDir).map_err(io::Error::from)?;
            symlinkat(file, dir, soname).map_err(io::Error::from)?;
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}

fn read_old_cache(root: &Rootfs) -> Option<Vec<u8>> {
    // Whatever else the image put there (a FIFO, a device node) is replaced, never opened.
    let file = crate::discover::root::open_regular_in_root(root.fd(), CACHE)?;
    let mut bytes = Vec::new();
    file.take(64 << 20).read_to_end(&mut bytes).ok()?;
    Some(bytes)
}

fn write_atomically(etc: &OwnedFd, bytes: &[u8]) -> io::Result<()> {
    let _ = unlinkat(etc, TEMP, UnlinkatFlags::NoRemoveDir);
    let fd = nix::fcntl::openat(
        etc,
        TEMP,
        OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o644),
    )?;
    let mut file = std::fs::File::from(fd);
    // No fsync: the rename alone makes the swap atomic for readers, and a container's rootfs
    // does not outlive a host crash, so durability would only cost milliseconds per start.
    let written = file.write_all(bytes);
    if let Err(e) = written {
        let _ = unlinkat(etc, TEMP, UnlinkatFlags::NoRemoveDir);
        return Err(e);
    }
    renameat(etc, TEMP, etc, "ld.so.cache").map_err(|e| {
        let _ = unlinkat(etc, TEMP, UnlinkatFlags::NoRemoveDir);
        io::Error::from(e)
    })
}
