//! The container's loader cache, written without running anything from the image: the image's
//! own `/etc/ld.so.cache` (if any) merged with the injected libraries, and the soname links
//! ldconfig would have made. Works for images with no ldconfig and no cache at all (busybox,
//! distroless, musl). The new file replaces the old one atomically (temp file + rename in /etc).

use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;

use nix::errno::Errno;
use nix::fcntl::{OFlag, renameat};
use nix::sys::stat::{Mode, SFlag, fstat};
use nix::unistd::{UnlinkatFlags, symlinkat, unlinkat};

use super::rootfs::{Created, Rootfs, kind, open_path};
use crate::discover::ldcache::{LdCache, OwnedEntry, write_cache};
use crate::plan::CacheEntry;

const CACHE: &str = "/etc/ld.so.cache";
const TEMP: &str = ".ld.so.cache~nvbox";

/// Make `dir/soname -> file` links and write the merged cache. Directories and links that did
/// not exist are recorded in `created`, so a caller can undo them when the cache cannot be
/// written (a full filesystem must not leave links that keep the undo's rmdir from working).
pub fn update_cache(
    root: &Rootfs,
    entries: &[CacheEntry],
    created: &mut Vec<Created>,
) -> io::Result<()> {
    // Entries come grouped by directory: resolve each directory once.
    let mut dir: Option<(&str, OwnedFd)> = None;
    for e in entries.iter().filter(|e| e.soname != e.file) {
        if dir.as_ref().is_none_or(|(d, _)| *d != e.dir) {
            dir = Some((e.dir.as_str(), root.mkdir_all(&e.dir, created)?));
        }
        let (_, fd) = dir.as_ref().expect("set above");
        let fresh = link_soname(fd, &e.soname, &e.file)
            .map_err(|err| io::Error::other(format!("symlink {}/{}: {err}", e.dir, e.soname)))?;
        if fresh {
            created.push(Created {
                dir: fd.try_clone()?,
                name: e.soname.clone(),
                is_dir: false,
            });
        }
    }
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
    let old = read_old_cache(root);
    if let Some(bytes) = &old
        && let Ok(cache) = LdCache::parse(bytes)
    {
        // Ours replace the image's entries for the same soname and word size.
        merged.extend(cache.entries().map(OwnedEntry::from).filter(|o| {
            !entries
                .iter()
                .any(|e| e.soname == o.soname && e.flags == o.flags)
        }));
    }
    let bytes = write_cache(&merged);
    let etc = root.mkdir_all("/etc", created)?;
    write_atomically(&etc, &bytes).map_err(|e| io::Error::other(format!("write {CACHE}: {e}")))
}

/// ldconfig's rule: a soname link is (re)made unless a non-link file holds the name. True when
/// the name was free (a replaced link is the image's and stays replaced).
fn link_soname(dir: &OwnedFd, soname: &str, file: &str) -> io::Result<bool> {
    match symlinkat(file, dir, soname) {
        Ok(()) => Ok(true),
        Err(Errno::EEXIST) => {
            let fd = open_path(dir, soname)?;
            let st = fstat(&fd).map_err(io::Error::from)?;
            if kind(&st) != SFlag::S_IFLNK {
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
    let fd = root
        .resolve(CACHE, OFlag::O_RDONLY | OFlag::O_NONBLOCK)
        .ok()?;
    let st = fstat(&fd).ok()?;
    if kind(&st) != SFlag::S_IFREG {
        return None;
    }
    let mut bytes = Vec::new();
    std::fs::File::from(fd)
        .take(64 << 20)
        .read_to_end(&mut bytes)
        .ok()?;
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
