//! Where things go in a container, probed in its rootfs (reference libnvidia-container.md §5.2
//! "Directory selection"), and the CUDA forward-compat libraries the image ships.

use std::os::fd::AsRawFd;
use std::path::Path;

use anyhow::{Result, anyhow};

use crate::discover::elf::read_elf_file;
use crate::discover::files::lower_io;
use crate::discover::root::RootDir;
use crate::plan::Layout;

const CUDA_COMPAT_DIR: &str = "/usr/local/cuda/compat";

/// Probe the rootfs as the host sees it (`/proc/<pid>/root/<rootfs>` for a live container).
/// `compat` asks for the image's CUDA compat libraries too.
pub fn probe_layout(view: &Path, compat: bool) -> Result<Layout> {
    let root = RootDir::open(view).map_err(|e| {
        anyhow!(
            "container error: open failed: {}: {}",
            view.display(),
            lower_io(&e)
        )
    })?;
    let exists = |p: &str| matches!(root.find(p), Ok(Some(_)));
    let (libs, libs32) = if exists("/etc/debian_version") {
        let (libs, libs32) = match std::env::consts::ARCH {
            "aarch64" => ("/usr/lib/aarch64-linux-gnu", "/var/empty"),
            "powerpc64" => ("/usr/lib/powerpc64le-linux-gnu", "/var/empty"),
            _ => ("/usr/lib/x86_64-linux-gnu", "/usr/lib/i386-linux-gnu"),
        };
        (libs.to_owned(), libs32.to_owned())
    } else {
        let lib32 = if exists("/usr/lib32") {
            "/usr/lib32"
        } else {
            let lib = root.find("/usr/lib").ok().flatten().map(|f| f.path);
            let lib64 = root.find("/usr/lib64").ok().flatten().map(|f| f.path);
            if lib.is_some() && lib != lib64 {
                "/usr/lib"
            } else {
                "/usr/lib32"
            }
        };
        ("/usr/lib64".to_owned(), lib32.to_owned())
    };
    let compat_libs = if compat {
        find_compat_libs(&root)
    } else {
        Vec::new()
    };
    Ok(Layout {
        libs,
        libs32,
        bins: "/usr/bin".to_owned(),
        compat_libs,
    })
}

/// `/usr/local/cuda/compat/lib*.so.*`, each resolved inside the rootfs, with its soname.
fn find_compat_libs(root: &RootDir) -> Vec<(String, String)> {
    let Ok(Some(dir)) = root.open_read(CUDA_COMPAT_DIR) else {
        return Vec::new();
    };
    if !dir.is_dir() {
        return Vec::new();
    }
    let Ok(entries) = std::fs::read_dir(format!("/proc/self/fd/{}", dir.fd.as_raw_fd())) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with("lib") && n.contains(".so."))
        .collect();
    names.sort();
    let mut libs: Vec<(String, String)> = Vec::new();
    for name in names {
        let Ok(Some(found)) = root.open_read(&format!("{}/{name}", dir.path)) else {
            continue;
        };
        if !found.is_file() || libs.iter().any(|(p, _)| *p == found.path) {
            continue;
        }
        let path = found.path.clone();
        let file = path.rsplit('/').next().unwrap_or(&path).to_owned();
        let soname = read_elf_file(&std::fs::File::from(found.fd))
            .ok()
            .and_then(|e| e.soname)
            .unwrap_or(file);
        libs.push((path, soname));
    }
    libs
}
