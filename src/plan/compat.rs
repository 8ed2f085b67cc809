//! CUDA forward-compat libraries shipped in the image (§5.10).

use super::{CacheEntry, Layout, Plan, Root};
use crate::discover::host::Host;

/// How CUDA forward-compat libraries shipped in the image are handled (§5.10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CompatMode {
    #[default]
    Mount,
    Ldconfig,
    Disabled,
}

impl CompatMode {
    pub fn parse(s: &str) -> Option<CompatMode> {
        match s {
            "mount" => Some(CompatMode::Mount),
            "ldconfig" => Some(CompatMode::Ldconfig),
            "disabled" => Some(CompatMode::Disabled),
            _ => None,
        }
    }
}

/// CUDA forward-compat libraries from the image: in `mount` mode those whose major differs from
/// the driver's are mounted next to the driver's; in `ldconfig` mode the newer ones are found
/// through their own directory, listed ahead of the driver's (§5.10).
pub(super) fn add_compat_libs(
    p: &mut Plan,
    host: &Host,
    mode: CompatMode,
    layout: &Layout,
    flags: i32,
) {
    let version = &host.driver.version;
    for (path, soname) in &layout.compat_libs {
        let name = path.rsplit('/').next().unwrap_or(path);
        let Some(major) = name
            .split_once(".so.")
            .map(|(_, v)| v.split('.').next().unwrap_or(""))
        else {
            continue;
        };
        // Upstream compares the major textually against the driver version's first characters.
        let same = version.starts_with(major) && !major.is_empty();
        match mode {
            CompatMode::Disabled => {}
            CompatMode::Mount if !same => {
                let file = p.bind_file(Root::Rootfs, path, &layout.libs);
                p.add_cache(&layout.libs, soname, &file, flags);
            }
            CompatMode::Ldconfig if newer_major(major, version) => {
                let dir = path.rsplit_once('/').map(|(d, _)| d).unwrap_or("/");
                if !p.cache_dirs.iter().any(|d| d == dir) {
                    p.cache_dirs.push(dir.to_owned());
                }
                // Ahead of the driver's entry for the same soname: the loader takes the first.
                let entry = CacheEntry {
                    dir: dir.to_owned(),
                    soname: soname.clone(),
                    file: name.to_owned(),
                    flags,
                };
                p.cache.insert(0, entry);
            }
            _ => {}
        }
    }
}

fn newer_major(major: &str, version: &str) -> bool {
    let host: u64 = version
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    major.parse::<u64>().is_ok_and(|m| m > host)
}
