//! What this host has, read from procfs, sysfs, /dev and the driver root's ld.so.cache — never
//! NVML, never dlopen. Discovery only reads; every read goes through [`Roots`], which is how a
//! simulated host (`nvbox mock`) or a driver container (`--root /run/nvidia/driver`) plugs in.

pub mod csv;
pub mod devices;
pub mod driver;
pub mod elf;
pub mod files;
pub mod gated;
pub mod gpus;
pub mod graphics;
pub mod host;
pub mod ldcache;
pub mod root;
pub mod tables;
pub mod tegra;
pub mod wsl;

use std::path::{Path, PathBuf};

/// Where each part of the host is read from (DESIGN.md §4). A path in a container is always the
/// host path with its root stripped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roots {
    /// Libraries, ld.so.cache, binaries, firmware, IPC sockets.
    pub driver: PathBuf,
    /// `/dev/nvidia*`, `/dev/nvidia-caps/*`.
    pub dev: PathBuf,
    /// `/proc/driver/nvidia/**`, `/proc/devices`, `/proc/driver/nvidia-caps/*`.
    pub proc: PathBuf,
    /// `/sys/bus/pci/devices/<bus>/…`.
    pub sys: PathBuf,
}

impl Roots {
    /// Roots from the configured values; an unset dev root follows the driver root when the
    /// driver root has its own device nodes (a driver container), else the host's.
    pub fn new(
        driver: Option<&Path>,
        dev: Option<&Path>,
        proc: Option<&Path>,
        sys: Option<&Path>,
    ) -> Roots {
        let driver = non_empty(driver).unwrap_or_else(|| PathBuf::from("/"));
        let dev = non_empty(dev).unwrap_or_else(|| {
            if driver != Path::new("/") && driver.join("dev/nvidiactl").exists() {
                driver.clone()
            } else {
                PathBuf::from("/")
            }
        });
        Roots {
            driver,
            dev,
            proc: non_empty(proc).unwrap_or_else(|| PathBuf::from("/")),
            sys: non_empty(sys).unwrap_or_else(|| PathBuf::from("/")),
        }
    }

    /// `/proc/...` on the host, under the proc root.
    pub fn proc_path(&self, abs: &str) -> PathBuf {
        under(&self.proc, abs)
    }

    /// `/sys/...` on the host, under the sys root.
    pub fn sys_path(&self, abs: &str) -> PathBuf {
        under(&self.sys, abs)
    }

    /// `/dev/...` on the host, under the dev root.
    pub fn dev_path(&self, abs: &str) -> PathBuf {
        under(&self.dev, abs)
    }
}

fn non_empty(p: Option<&Path>) -> Option<PathBuf> {
    p.filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
}

/// `root` + an absolute path, for trusted host trees (procfs, sysfs, /dev of the host or of a
/// simulation). Container rootfs paths never go through here: those are resolved by fd.
pub fn under(root: &Path, abs: &str) -> PathBuf {
    root.join(abs.trim_start_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_default_to_host() {
        let r = Roots::new(None, None, None, None);
        assert_eq!(r.driver, Path::new("/"));
        assert_eq!(r.dev, Path::new("/"));
        assert_eq!(r.proc_path("/proc/devices"), Path::new("/proc/devices"));
    }

    #[test]
    fn dev_root_follows_a_driver_root_with_nodes() {
        let dir = std::env::temp_dir().join(format!("nvbox-roots-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("dev")).unwrap();
        assert_eq!(Roots::new(Some(&dir), None, None, None).dev, Path::new("/"));
        std::fs::write(dir.join("dev/nvidiactl"), "").unwrap();
        assert_eq!(Roots::new(Some(&dir), None, None, None).dev, dir);
        let explicit = Path::new("/elsewhere");
        assert_eq!(
            Roots::new(Some(&dir), Some(explicit), None, None).dev,
            explicit
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
