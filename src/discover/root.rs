//! Symlink-safe lookups inside a driver root. A driver root may be a driver container's tree
//! (`/run/nvidia/driver`) whose absolute symlinks mean "relative to that root", so every lookup
//! is done by the kernel with `openat2(RESOLVE_IN_ROOT)` on a directory fd, never by joining
//! strings. The result is the real path *inside* the root, which is what upstream lists.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat};

/// An open directory that lookups are confined to.
pub struct RootDir {
    fd: OwnedFd,
    /// The root's own real path, stripped from resolved paths.
    real: PathBuf,
}

/// A path found inside a root.
pub struct Found {
    /// The real path inside the root, absolute (`/usr/lib/x86_64-linux-gnu/libcuda.so.535.104.05`).
    pub path: String,
    pub stat: FileStat,
    pub fd: OwnedFd,
}

impl Found {
    pub fn is_file(&self) -> bool {
        file_type(&self.stat) == SFlag::S_IFREG
    }

    pub fn is_dir(&self) -> bool {
        file_type(&self.stat) == SFlag::S_IFDIR
    }
}

pub fn file_type(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
}

impl RootDir {
    pub fn open(path: &Path) -> io::Result<RootDir> {
        let fd: OwnedFd = File::open(path)?.into();
        let real = fd_path(&fd)?;
        Ok(RootDir { fd, real })
    }

    /// Follow `abs` inside the root. `Ok(None)` when it does not exist; other errors (EACCES,
    /// ELOOP) are returned so the caller can name them.
    pub fn find(&self, abs: &str) -> io::Result<Option<Found>> {
        self.find_named(abs)
    }

    /// Like [`find`](Self::find) but opened for reading (for ELF checks and directory listing)
    /// when it is a regular file or a directory. Anything else (a FIFO, a device node, a socket
    /// planted under a library's name) is never opened, only found: opening a device can act on
    /// the hardware, and opening a FIFO wakes its writer.
    pub fn open_read(&self, abs: &str) -> io::Result<Option<Found>> {
        let Some(mut found) = self.find_named(abs)? else {
            return Ok(None);
        };
        if let Some(fd) = reopen_readable(&found.fd, &found.stat)? {
            found.fd = fd;
        }
        Ok(Some(found))
    }

    fn find_named(&self, abs: &str) -> io::Result<Option<Found>> {
        let Some((fd, stat)) = self.find_fd(abs)? else {
            return Ok(None);
        };
        let real = fd_path(&fd)?;
        let path = self.strip_root(&real)?;
        Ok(Some(Found { path, stat, fd }))
    }

    /// Like [`find`](Self::find) for a caller that needs the file, not its real name (a mount
    /// source): no procfs readlink.
    pub fn find_fd(&self, abs: &str) -> io::Result<Option<(OwnedFd, FileStat)>> {
        let fd = match open_in_root(&self.fd, abs, OFlag::O_PATH) {
            Ok(fd) => fd,
            Err(Errno::ENOENT | Errno::ENOTDIR) => return Ok(None),
            Err(e) => return Err(io::Error::from(e)),
        };
        let stat = fstat(&fd).map_err(io::Error::from)?;
        Ok(Some((fd, stat)))
    }

    fn strip_root(&self, real: &Path) -> io::Result<String> {
        let rel = real.strip_prefix(&self.real).map_err(|_| {
            io::Error::other(format!(
                "{} resolves outside of {}",
                real.display(),
                self.real.display()
            ))
        })?;
        let rel = rel
            .to_str()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "path is not valid UTF-8"))?;
        Ok(format!("/{rel}"))
    }
}

/// `abs` resolved by the kernel inside the directory `root` (`openat2` with `RESOLVE_IN_ROOT |
/// RESOLVE_NO_MAGICLINKS`, `O_CLOEXEC` added): symlinks and `..` can never leave it.
pub fn open_in_root<Fd: std::os::fd::AsFd>(
    root: Fd,
    abs: &str,
    flags: OFlag,
) -> nix::Result<OwnedFd> {
    let rel = abs.trim_start_matches('/');
    let rel = if rel.is_empty() { "." } else { rel };
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .mode(Mode::empty())
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    retry_again(|| openat2(&root, rel, how))
}

/// An `O_PATH` fd opened again for reading, through its procfs link (the very inode, no new
/// lookup), if `stat` says it is a regular file or a directory; `None` for anything else.
pub fn reopen_readable(fd: &OwnedFd, stat: &FileStat) -> io::Result<Option<OwnedFd>> {
    let ty = file_type(stat);
    if ty != SFlag::S_IFREG && ty != SFlag::S_IFDIR {
        return Ok(None);
    }
    let fd = nix::fcntl::open(
        format!("/proc/self/fd/{}", fd.as_raw_fd()).as_str(),
        OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOCTTY,
        Mode::empty(),
    )
    .map_err(io::Error::from)?;
    Ok(Some(fd))
}

/// `abs` inside `root`, opened for reading only if it is a regular file (`None` otherwise, and
/// when it does not resolve): special files an image plants are never opened.
pub fn open_regular_in_root<Fd: std::os::fd::AsFd>(root: Fd, abs: &str) -> Option<File> {
    let fd = open_in_root(root, abs, OFlag::O_PATH).ok()?;
    let stat = fstat(&fd).ok()?;
    if file_type(&stat) != SFlag::S_IFREG {
        return None;
    }
    reopen_readable(&fd, &stat).ok().flatten().map(File::from)
}

/// The scoped openat2 lookups may fail with EAGAIN when a rename races them; a retry is the
/// documented answer.
fn retry_again<T>(mut f: impl FnMut() -> nix::Result<T>) -> nix::Result<T> {
    let mut tries = 0;
    loop {
        match f() {
            Err(Errno::EAGAIN | Errno::EINTR) if tries < 128 => tries += 1,
            r => return r,
        }
    }
}

/// What an fd refers to, as the kernel names it.
fn fd_path(fd: &OwnedFd) -> io::Result<PathBuf> {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn absolute_symlinks_stay_inside_the_root() {
        let dir = std::env::temp_dir().join(format!("nvbox-root-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("usr/lib")).unwrap();
        std::fs::create_dir_all(dir.join("run")).unwrap();
        std::fs::create_dir_all(dir.join("var")).unwrap();
        std::fs::write(dir.join("usr/lib/libfoo.so.1.2"), "x").unwrap();
        symlink("libfoo.so.1.2", dir.join("usr/lib/libfoo.so.1")).unwrap();
        // Absolute target: means the root's /run, not the host's.
        symlink("/run", dir.join("var/run")).unwrap();
        std::fs::write(dir.join("run/sock"), "").unwrap();
        // Escapes are clamped to the root.
        symlink("../../../../../../etc/passwd", dir.join("usr/lib/evil")).unwrap();

        let root = RootDir::open(&dir).unwrap();
        let f = root.find("/usr/lib/libfoo.so.1").unwrap().unwrap();
        assert_eq!(f.path, "/usr/lib/libfoo.so.1.2");
        assert!(f.is_file());
        assert_eq!(
            root.find("/var/run/sock").unwrap().unwrap().path,
            "/run/sock"
        );
        assert!(root.find("/usr/lib/evil").unwrap().is_none());
        assert!(root.find("/nope/x").unwrap().is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn host_root_resolves_plainly() {
        let root = RootDir::open(Path::new("/")).unwrap();
        let f = root.find("/proc/self").unwrap();
        // /proc/self is a magic link target; openat2 with NO_MAGICLINKS still resolves the
        // symlink /proc/self (an ordinary procfs symlink) — just check nothing panics.
        let _ = f;
        assert_eq!(root.find("/etc").unwrap().unwrap().path, "/etc");
    }
}
