//! The container's rootfs, which is hostile: every path is resolved by the kernel with
//! `openat2(RESOLVE_IN_ROOT|RESOLVE_NO_MAGICLINKS)` from an fd of the rootfs, so symlinks such as
//! `usr/lib/x86_64-linux-gnu -> /etc` or `..` chains land inside it, never on the host. Missing
//! directories are created one component at a time from the fd of their resolved parent.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{OFlag, openat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat, mkdirat};

pub struct Rootfs {
    fd: OwnedFd,
}

/// A placeholder this call created, to remove on rollback.
pub struct Created {
    pub dir: OwnedFd,
    pub name: String,
    pub is_dir: bool,
}

enum Walk {
    Done(OwnedFd),
    Restart(String),
}

pub fn kind(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
}

fn errno(e: Errno, what: &str) -> io::Error {
    io::Error::other(format!("{what}: {}", e.desc().to_lowercase()))
}

impl Rootfs {
    /// Open the rootfs path as the runtime gave it (a trusted host path).
    pub fn open(path: &Path) -> io::Result<Rootfs> {
        let fd = nix::fcntl::open(
            path,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| errno(e, "open"))?;
        Ok(Rootfs { fd })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Resolve `abs` inside the root with `flags` (`O_CLOEXEC` added).
    pub fn resolve(&self, abs: &str, flags: OFlag) -> Result<OwnedFd, Errno> {
        crate::discover::root::open_in_root(&self.fd, abs, flags)
    }

    /// The directory `abs`, created (mode 0755) where missing. Each new component is made with
    /// `mkdirat` in its resolved parent, then resolved again, so a symlink anywhere along the way
    /// is followed inside the root. A dangling symlink is followed too: the directory it names is
    /// created, inside the root, as the kernel would have resolved it.
    pub fn mkdir_all(&self, abs: &str, created: &mut Vec<Created>) -> io::Result<OwnedFd> {
        let dir_flags = OFlag::O_PATH | OFlag::O_DIRECTORY;
        let mut path = abs.to_owned();
        // Symlinks followed by hand, bounded like the kernel's own limit.
        for _ in 0..40 {
            match self.resolve(&path, dir_flags) {
                Ok(fd) => return Ok(fd),
                Err(Errno::ENOENT) => {}
                Err(e) => return Err(errno(e, &format!("openat2 {path}"))),
            }
            match self.mkdir_components(&path, created)? {
                Walk::Done(fd) => return Ok(fd),
                Walk::Restart(next) => path = next,
            }
        }
        Err(errno(Errno::ELOOP, &format!("mkdir {abs}")))
    }

    fn mkdir_components(&self, abs: &str, created: &mut Vec<Created>) -> io::Result<Walk> {
        let dir_flags = OFlag::O_PATH | OFlag::O_DIRECTORY;
        let mut fd = self
            .resolve("/", dir_flags)
            .map_err(|e| errno(e, "openat2 /"))?;
        let comps: Vec<&str> = abs
            .split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .collect();
        let mut prefix = String::new();
        for (i, comp) in comps.iter().enumerate() {
            let parent_prefix = prefix.clone();
            prefix.push('/');
            prefix.push_str(comp);
            match self.resolve(&prefix, dir_flags) {
                Ok(next) => {
                    fd = next;
                    continue;
                }
                Err(Errno::ENOENT) => {}
                Err(e) => return Err(errno(e, &format!("openat2 {prefix}"))),
            }
            if *comp == ".." {
                return Err(errno(Errno::ENOENT, &format!("openat2 {prefix}")));
            }
            match mkdirat(&fd, *comp, Mode::from_bits_truncate(0o755)) {
                Ok(()) => {}
                Err(Errno::EEXIST) => {
                    // A dangling symlink: continue from what it names.
                    let target = match nix::fcntl::readlinkat(&fd, *comp) {
                        Ok(t) => t,
                        // Not a link any more: something swapped it since the lookup above;
                        // walk again from the top (the caller bounds the restarts).
                        Err(Errno::EINVAL | Errno::ENOENT) => {
                            return Ok(Walk::Restart(abs.to_owned()));
                        }
                        Err(e) => return Err(errno(e, &format!("readlink {prefix}"))),
                    };
                    let target = target.to_string_lossy();
                    let rest = comps[i + 1..].join("/");
                    let base = if target.starts_with('/') {
                        target.into_owned()
                    } else {
                        format!("{parent_prefix}/{target}")
                    };
                    return Ok(Walk::Restart(format!("{base}/{rest}")));
                }
                Err(e) => return Err(errno(e, &format!("mkdir {prefix}"))),
            }
            let parent = fd;
            fd = self
                .resolve(&prefix, dir_flags)
                .map_err(|e| errno(e, &format!("openat2 {prefix}")))?;
            created.push(Created {
                dir: parent,
                name: (*comp).to_owned(),
                is_dir: true,
            });
        }
        Ok(Walk::Done(fd))
    }

    /// An empty regular file at `abs` to mount over (created with `mode` where missing), opened
    /// `O_PATH`. An existing non-directory is reused (a file the image ships, or our own earlier
    /// mount when configure runs twice); a symlink is refused, never followed, and so is a
    /// directory.
    pub fn placeholder(
        &self,
        abs: &str,
        mode: u32,
        created: &mut Vec<Created>,
    ) -> io::Result<OwnedFd> {
        let (dir, name) = split(abs)?;
        let dirfd = self.mkdir_all(dir, created)?;
        match openat(
            &dirfd,
            name,
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(mode & 0o777),
        ) {
            Ok(_) => {
                let fd = open_path(&dirfd, name)?;
                created.push(Created {
                    dir: dirfd,
                    name: name.to_owned(),
                    is_dir: false,
                });
                Ok(fd)
            }
            Err(Errno::EEXIST) => {
                let fd = open_path(&dirfd, name)?;
                let st = fstat(&fd).map_err(|e| errno(e, "fstat"))?;
                match kind(&st) {
                    SFlag::S_IFLNK => {
                        return Err(io::Error::other(format!("{abs}: is a symlink")));
                    }
                    SFlag::S_IFDIR => {
                        return Err(io::Error::other(format!("{abs}: is a directory")));
                    }
                    _ => {}
                }
                Ok(fd)
            }
            Err(e) => Err(errno(e, &format!("create {abs}"))),
        }
    }

    /// An empty directory at `abs` to mount over, created where missing.
    pub fn placeholder_dir(&self, abs: &str, created: &mut Vec<Created>) -> io::Result<OwnedFd> {
        self.mkdir_all(abs, created)
    }
}

/// `O_PATH|O_NOFOLLOW` of one name in a directory: the thing itself, never a symlink's target.
pub fn open_path(dir: &OwnedFd, name: &str) -> io::Result<OwnedFd> {
    openat(
        dir,
        name,
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| errno(e, &format!("open {name}")))
}

/// `/a/b/c` → (`/a/b`, `c`).
pub fn split(abs: &str) -> io::Result<(&str, &str)> {
    let trimmed = abs.trim_end_matches('/');
    match trimmed.rsplit_once('/') {
        Some((dir, name)) if !name.is_empty() && name != ".." && name != "." => {
            Ok((if dir.is_empty() { "/" } else { dir }, name))
        }
        _ => Err(io::Error::other(format!("{abs}: not a file path"))),
    }
}
