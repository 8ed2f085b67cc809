//! What Vulkan, EGL, OpenGL/GLX, OpenCL and X servers need beyond the driver libraries: the
//! loaders' config files, the EGL external-platform libraries, the X.Org driver modules and the
//! GPUs' DRM nodes. These are the toolkit's graphics discoverers (upstream
//! internal/discover/graphics.go); libnvidia-container itself has none of them, so only the
//! modes that follow the toolkit (jit-cdi, `cdi generate`, legacy through the runtime) ask for
//! them.

use std::collections::HashMap;

use super::Roots;
use super::elf::read_elf_file;
use super::files::Library;
use super::gpus::Gpu;
use super::root::RootDir;
use super::tables::Group;
use crate::info;

/// Config files found under the share and etc search paths, mounted under `/usr/share`.
const SHARE_CONFIGS: &[&str] = &[
    "glvnd/egl_vendor.d/10_nvidia.json",
    "egl/egl_external_platform.d/15_nvidia_gbm.json",
    "egl/egl_external_platform.d/10_nvidia_wayland.json",
    "egl/egl_external_platform.d/09_nvidia_wayland2.json",
    "egl/egl_external_platform.d/20_nvidia_xcb.json",
    "egl/egl_external_platform.d/20_nvidia_xlib.json",
    "nvidia/nvoptix.bin",
    "X11/xorg.conf.d/10-nvidia.conf",
    "X11/xorg.conf.d/nvidia-drm-outputclass.conf",
];

/// Config files mounted under `/etc`.
const ETC_CONFIGS: &[&str] = &["OpenCL/vendors/nvidia.icd"];

/// Vulkan's ICD and layer files, mounted under `/etc` (upstream 1.20); also looked for at the
/// driver root's top (GKE installs them at `<root>/vulkan`).
fn vulkan_configs() -> Vec<&'static str> {
    let mut v = vec![
        "vulkan/icd.d/nvidia_icd.json",
        "vulkan/icd.d/nvidia_layers.json",
        "vulkan/implicit_layer.d/nvidia_layers.json",
    ];
    // RPM driver packages name the ICD after the machine.
    match std::env::consts::ARCH {
        "x86_64" => v.push("vulkan/icd.d/nvidia_icd.x86_64.json"),
        "aarch64" => v.push("vulkan/icd.d/nvidia_icd.aarch64.json"),
        _ => {}
    }
    v
}

/// EGL platform libraries: versioned on their own (`libnvidia-egl-gbm.so.1.1.0`), so any
/// `X.Y…` suffix is taken. `libnvidia-vulkan-producer` carries the driver version.
const EGL_PLATFORM_LIBS: &[&str] = &[
    "libnvidia-egl-gbm.so",
    "libnvidia-egl-wayland.so",
    "libnvidia-egl-wayland2.so",
    "libnvidia-egl-xcb.so",
    "libnvidia-egl-xlib.so",
];
pub const VULKAN_PRODUCER: &str = "libnvidia-vulkan-producer.so";
pub const GLXSERVER: &str = "libglxserver_nvidia.so";

/// Upstream's library search paths inside the driver root, after the driver's own directories.
const LIBRARY_DIRS: &[&str] = &[
    "/usr/lib64",
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu/nvidia/current",
    "/usr/lib/aarch64-linux-gnu/nvidia/current",
    "/lib64",
    "/lib/x86_64-linux-gnu",
    "/lib/aarch64-linux-gnu",
    "/lib/x86_64-linux-gnu/nvidia/current",
    "/lib/aarch64-linux-gnu/nvidia/current",
];

const XORG_ROOTS: &[&str] = &[
    "/usr/lib/xorg",
    "/usr/lib64/xorg",
    "/usr/X11R6/lib",
    "/usr/X11R6/lib64",
];

const BIN_DIRS: &[&str] = &[
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

/// One DRM node of a GPU, as found under the dev root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrmNode {
    /// Index into the host's GPU list.
    pub gpu: usize,
    /// `/dev/dri/card1`, `/dev/dri/renderD128`
    pub path: String,
    pub major: u32,
    pub minor: u32,
    /// `(link, target)`: the host's `/dev/dri/by-path/pci-<bus>-{card,render}` when it points
    /// at this node, with its target as written (`../card1`).
    pub by_path: Option<(String, String)>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Graphics {
    /// `(host path inside the driver root, container path)` of each config file.
    pub configs: Vec<(String, String)>,
    /// EGL platform libraries and the Vulkan producer, placed like the driver libraries.
    pub libs: Vec<Library>,
    /// Mounted at their own path: the X.Org modules (so a `ModulePath` in the mounted
    /// xorg.conf.d file stays valid) and `nvidia-xconfig`.
    pub files: Vec<String>,
    pub drm: Vec<DrmNode>,
}

/// Where the config files are looked for: `/etc` and `$XDG_DATA_DIRS` (default
/// `/usr/local/share:/usr/share`) inside the driver root.
pub fn config_search_paths() -> Vec<String> {
    let mut paths = vec!["/etc".to_owned()];
    match std::env::var("XDG_DATA_DIRS") {
        Ok(dirs) if !dirs.is_empty() => paths.extend(
            dirs.split(':')
                .filter(|d| !d.is_empty())
                .map(|d| d.to_owned()),
        ),
        _ => paths.extend(["/usr/local/share".to_owned(), "/usr/share".to_owned()]),
    }
    paths
}

/// Read what graphics needs. `lib_dirs` are the directories of the driver libraries already
/// found (searched first), `search` where config files are looked for in the driver root
/// ([`config_search_paths`]); nothing here is an error: a missing file is simply not offered.
pub fn read_graphics(
    root: &RootDir,
    roots: &Roots,
    gpus: &[Gpu],
    version: &str,
    lib_dirs: &[String],
    search: &[String],
) -> Graphics {
    let mut g = Graphics::default();
    let mut look = Lookup::new(root);
    for name in SHARE_CONFIGS {
        add_config(&mut g, &mut look, name, search, "/usr/share");
    }
    for name in ETC_CONFIGS {
        add_config(&mut g, &mut look, name, search, "/etc");
    }
    let mut vulkan_dirs = search.to_vec();
    vulkan_dirs.push("/".to_owned());
    for name in vulkan_configs() {
        add_config(&mut g, &mut look, name, &vulkan_dirs, "/etc");
    }

    let mut dirs: Vec<String> = lib_dirs.to_vec();
    for d in LIBRARY_DIRS {
        if !dirs.iter().any(|x| x == d) {
            dirs.push((*d).to_owned());
        }
    }
    for prefix in EGL_PLATFORM_LIBS {
        if let Some(lib) = find_library(&mut look, &dirs, prefix, None) {
            g.libs.push(lib);
        }
    }
    if let Some(lib) = find_library(&mut look, &dirs, VULKAN_PRODUCER, Some(version)) {
        g.libs.push(lib);
    }

    let mut xorg_dirs = Vec::new();
    for base in lib_dirs
        .iter()
        .map(String::as_str)
        .chain(XORG_ROOTS.iter().copied())
    {
        if lib_dirs.iter().any(|d| d == base) {
            xorg_dirs.push(format!("{base}/nvidia/xorg"));
            xorg_dirs.push(format!("{base}/xorg/modules/drivers"));
            xorg_dirs.push(format!("{base}/xorg/modules/extensions"));
            xorg_dirs.push(format!("{base}/xorg/modules/updates/drivers"));
            xorg_dirs.push(format!("{base}/xorg/modules/updates/extensions"));
        } else {
            for sub in [
                "drivers",
                "extensions",
                "updates/drivers",
                "updates/extensions",
            ] {
                xorg_dirs.push(format!("{base}/modules/{sub}"));
            }
        }
    }
    for name in ["nvidia_drv.so".to_owned(), format!("{GLXSERVER}.{version}")] {
        if let Some(path) = find_file(&mut look, &xorg_dirs, &name) {
            g.files.push(path);
        }
    }
    let bins: Vec<String> = BIN_DIRS.iter().map(|d| (*d).to_owned()).collect();
    if let Some(path) = find_file(&mut look, &bins, "nvidia-xconfig") {
        g.files.push(path);
    }

    g.drm = read_drm(roots, gpus);
    g
}

/// The first of `dirs` holding `name`, mounted at `container_root/name` (once per host file).
fn add_config(
    g: &mut Graphics,
    look: &mut Lookup,
    name: &str,
    dirs: &[String],
    container_root: &str,
) {
    match dirs.iter().find_map(|d| look.file(d, name)) {
        Some(host) if !g.configs.iter().any(|(h, _)| *h == host) => {
            info!("selecting {host}");
            g.configs.push((host, format!("{container_root}/{name}")));
        }
        Some(_) => {}
        None => info!("missing graphics config {name}"),
    }
}

/// Lookups in the driver root that remember which directories exist and what they hold: most
/// hosts have none of the graphics files, and each candidate path would otherwise cost a
/// failed lookup of its own.
struct Lookup<'a> {
    root: &'a RootDir,
    dirs: HashMap<String, bool>,
    listings: HashMap<String, Option<(String, Vec<String>)>>,
}

impl<'a> Lookup<'a> {
    fn new(root: &'a RootDir) -> Lookup<'a> {
        Lookup {
            root,
            dirs: HashMap::new(),
            listings: HashMap::new(),
        }
    }

    fn is_dir(&mut self, path: &str) -> bool {
        if let Some(&known) = self.dirs.get(path) {
            return known;
        }
        let is = matches!(self.root.find(path), Ok(Some(f)) if f.is_dir());
        self.dirs.insert(path.to_owned(), is);
        is
    }

    /// `dir/name` (`name` may have directories) as its real path, if it is a regular file.
    fn file(&mut self, dir: &str, name: &str) -> Option<String> {
        let path = format!("{}/{name}", dir.trim_end_matches('/'));
        let parent = path.rsplit_once('/').map_or("/", |(p, _)| p);
        if !parent.is_empty() && !self.is_dir(parent) {
            return None;
        }
        match self.root.find(&path) {
            Ok(Some(f)) if f.is_file() => Some(f.path),
            _ => None,
        }
    }

    /// The directory's real path and the names in it.
    fn list(&mut self, dir: &str) -> Option<&(String, Vec<String>)> {
        if !self.listings.contains_key(dir) {
            let listing = self.read_listing(dir);
            self.listings.insert(dir.to_owned(), listing);
        }
        self.listings.get(dir).and_then(Option::as_ref)
    }

    fn read_listing(&self, dir: &str) -> Option<(String, Vec<String>)> {
        let found = self.root.open_read(dir).ok()??;
        if !found.is_dir() {
            return None;
        }
        let fd = std::os::fd::AsRawFd::as_raw_fd(&found.fd);
        let names = std::fs::read_dir(format!("/proc/self/fd/{fd}"))
            .ok()?
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        Some((found.path, names))
    }
}

/// The first regular file `name` in `dirs`, as its real path inside the root.
fn find_file(look: &mut Lookup, dirs: &[String], name: &str) -> Option<String> {
    let path = dirs.iter().find_map(|d| look.file(d, name));
    match &path {
        Some(p) => info!("selecting {p}"),
        None => info!("missing {name}"),
    }
    path
}

/// The first directory holding `prefix.<version>` (or, without a version, `prefix.X.Y…`): the
/// highest such file there, with the soname its ELF header names.
fn find_library(
    look: &mut Lookup,
    dirs: &[String],
    prefix: &'static str,
    version: Option<&str>,
) -> Option<Library> {
    for dir in dirs {
        let Some((real, names)) = look.list(dir) else {
            continue;
        };
        let Some(name) = names
            .iter()
            .filter(|n| matches_version(n, prefix, version))
            .max_by_key(|n| version_key(n))
            .cloned()
        else {
            continue;
        };
        let path = format!("{}/{name}", real.trim_end_matches('/'));
        let Ok(Some(file)) = look.root.open_read(&path) else {
            continue;
        };
        if !file.is_file() {
            continue;
        }
        let soname = read_soname(file).unwrap_or_else(|| {
            // The major version is the ABI, which is how these libraries are named.
            let major = name[prefix.len() + 1..].split('.').next().unwrap_or("");
            format!("{prefix}.{major}")
        });
        info!("selecting {path}");
        return Some(Library {
            path,
            soname,
            prefix,
            group: Group::Graphics,
        });
    }
    info!("missing library {prefix}");
    None
}

fn matches_version(name: &str, prefix: &str, version: Option<&str>) -> bool {
    let Some(rest) = name.strip_prefix(prefix).and_then(|r| r.strip_prefix('.')) else {
        return false;
    };
    match version {
        Some(v) => rest == v,
        None => {
            let parts: Vec<&str> = rest.split('.').collect();
            parts.len() >= 2
                && parts
                    .iter()
                    .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        }
    }
}

fn version_key(name: &str) -> Vec<u64> {
    name.split_once(".so.")
        .map(|(_, v)| v.split('.').map(|c| c.parse().unwrap_or(0)).collect())
        .unwrap_or_default()
}

/// The DT_SONAME of a library, from the bounded ELF reader.
fn read_soname(found: super::root::Found) -> Option<String> {
    read_elf_file(&std::fs::File::from(found.fd)).ok()?.soname
}

/// Each GPU's DRM nodes: the names under `/sys/bus/pci/devices/<bus>/drm` that are character
/// devices under `/dev/dri`, with the by-path links that point at them.
fn read_drm(roots: &Roots, gpus: &[Gpu]) -> Vec<DrmNode> {
    let mut out = Vec::new();
    for (i, gpu) in gpus.iter().enumerate() {
        let bus = gpu.proc_dir.to_ascii_lowercase();
        let dir = roots.sys_path(&format!("/sys/bus/pci/devices/{bus}/drm"));
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        let mut names: Vec<String> = entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.starts_with("card") || n.starts_with("renderD"))
            .collect();
        names.sort();
        for name in names {
            let path = format!("/dev/dri/{name}");
            let Some(node) = super::devices::find_node(roots, &path) else {
                continue;
            };
            let kind = if name.starts_with("card") {
                "card"
            } else {
                "render"
            };
            let link = format!("/dev/dri/by-path/pci-{bus}-{kind}");
            let by_path = std::fs::read_link(roots.dev_path(&link))
                .ok()
                .filter(|t| t.file_name().is_some_and(|f| f == name.as_str()))
                .and_then(|t| t.to_str().map(|t| (link.clone(), t.to_owned())));
            out.push(DrmNode {
                gpu: i,
                path,
                major: node.major,
                minor: node.minor,
                by_path,
            });
        }
    }
    out
}

#[cfg(test)]
#[path = "graphics_tests.rs"]
mod graphics_tests;
