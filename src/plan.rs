//! What a container gets, as pure data: built from the discovered host, the device selection and
//! the options, with no I/O, so `--dry-run` prints exactly what the live backend then applies.
//! Order and content follow libnvidia-container's driver mount, device mount, MIG and IMEX steps
//! (reference libnvidia-container.md §5.5–§5.8).

use std::fmt;

use anyhow::{Result, bail};

use crate::discover::gpus::CAPS_DIR;
use crate::discover::host::Host;
use crate::discover::ldcache;
use crate::discover::tables::Group;
use crate::request::Caps;
use crate::select::Selection;

mod compat;
mod gated;
mod graphics;
mod platform;

pub use compat::CompatMode;
use compat::add_compat_libs;
pub use gated::add_gated;
pub use graphics::build_graphics_plan;
pub use platform::{build_csv_plan, build_wsl_plan};

pub const PROC_NVIDIA: &str = "/proc/driver/nvidia";
pub const APP_PROFILE_DIR: &str = "/etc/nvidia/nvidia-application-profiles-rc.d";
pub const APP_PROFILE: &str = "10-container.conf";

/// The driver's application-profile syntax (which takes hex numbers): one profile for every
/// application.
pub fn app_profile_text(mask: u64) -> String {
    format!(
        "{{\n    \"profiles\": [{{\"name\": \"_container_\", \"settings\": [\"EGLVisibleDGPUDevices\", {mask:#x}]}}],\n    \"rules\": [{{\"pattern\": [], \"profile\": \"_container_\"}}]\n}}\n"
    )
}
const NVIDIA_MAJOR: u32 = 195;
const CTL_MINOR: u32 = 255;

#[derive(Debug, Clone, Default)]
pub struct Options {
    pub caps: Caps,
    pub no_devbind: bool,
    pub no_cgroups: bool,
    pub mig_config: bool,
    pub mig_monitor: bool,
    pub compat_mode: CompatMode,
    /// The toolkit's graphics pieces with `graphics`/`display`: config files, EGL platform
    /// libraries, X.Org modules, the selected GPUs' DRM nodes and their by-path links
    /// (libnvidia-container has none of them; see [`add_graphics`]).
    pub graphics: bool,
}

/// Where things go in this container's rootfs, as probed there (§5.2 directory selection).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub libs: String,
    pub libs32: String,
    pub bins: String,
    /// CUDA forward-compat libraries in the image (container paths) with their sonames.
    pub compat_libs: Vec<(String, String)>,
}

/// Which tree a bind source is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Root {
    Driver,
    Dev,
    Proc,
    /// The container's own rootfs (CUDA compat libraries).
    Rootfs,
}

/// Mount flags per kind of source, as upstream remounts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Libraries, binaries, firmware: `ro,nosuid,nodev`; must be a regular file.
    File,
    /// Sockets and the MPS directory: `nosuid,nodev,noexec`, writable.
    Ipc,
    /// A character device: `ro,nosuid,noexec`, verified by type and rdev after mounting.
    Device { major: u32, minor: u32 },
    /// A directory of device nodes (`/dev/nvidia-caps` for mig-config): `nosuid,noexec`.
    DeviceDir,
    /// A directory of host files (GDS's `/run/udev`), recursively: `ro,nosuid,nodev`.
    Dir,
    /// procfs entries exposed in the container's `/proc/driver/nvidia`: `ro,nosuid,nodev,noexec`.
    Proc,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    pub root: Root,
    /// Absolute path inside `root`.
    pub source: String,
    /// Absolute path inside the container.
    pub target: String,
    pub kind: Kind,
}

/// One loader-cache entry the container gets, and the soname link behind it (what ldconfig
/// would have made): `dir/soname -> file`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheEntry {
    pub dir: String,
    pub soname: String,
    pub file: String,
    pub flags: i32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Replace `/proc/driver/nvidia` with a tmpfs holding copies of these files.
    pub proc_files: Vec<&'static str>,
    /// Graphics: a tmpfs for the driver's application profiles holding one profile that makes
    /// EGL see only the exposed GPUs; the value is its `EGLVisibleDGPUDevices` mask (bit N for
    /// `/dev/nvidiaN`).
    pub app_profile: Option<u64>,
    pub binds: Vec<Bind>,
    /// `(link, target)`: development links next to the mounted libraries.
    pub symlinks: Vec<(String, String)>,
    pub cache: Vec<CacheEntry>,
    /// The directories an ldconfig run is given: the library directories, then the image's
    /// CUDA compat directory in `ldconfig` compat mode.
    pub cache_dirs: Vec<String>,
    pub cgroup: Vec<(u32, u32)>,
}

/// Build the plan. Fails only on facts that make the request impossible (a missing IMEX node).
pub fn build_plan(host: &Host, sel: &Selection, o: &Options, layout: &Layout) -> Result<Plan> {
    let caps = o.caps;
    let mut p = Plan {
        proc_files: vec!["params", "version", "registry"],
        app_profile: caps.contains(Caps::GRAPHICS).then(|| {
            sel.gpus
                .iter()
                .map(|&i| host.gpus[i].minor)
                .filter(|m| *m < 64)
                .fold(0u64, |mask, m| mask | 1 << m)
        }),
        cache_dirs: vec![layout.libs.clone(), layout.libs32.clone()],
        ..Plan::default()
    };
    let compute_libs = caps.contains(Caps::COMPUTE) || caps.contains(Caps::VIDEO);
    let wants = |g: Group| match g {
        Group::Utility => caps.contains(Caps::UTILITY),
        Group::Compute => compute_libs,
        Group::Ngx => caps.contains(Caps::NGX),
        Group::Video => caps.contains(Caps::VIDEO),
        Group::Graphics => caps.contains(Caps::GRAPHICS) || caps.contains(Caps::DISPLAY),
    };
    for bin in &host.bins {
        // MPS binaries come with `compute` itself, not with the compute libraries `video` adds.
        let on = match bin.group {
            Group::Compute => caps.contains(Caps::COMPUTE),
            g => wants(g),
        };
        if on {
            p.bind_file(Root::Driver, &bin.path, &layout.bins);
        }
    }
    let native = ldcache::FLAG_ELF_LIBC6 | native_arch_flag();
    for (libs, dir, flags) in [
        (&host.libs, &layout.libs, native),
        (&host.libs32, &layout.libs32, ldcache::FLAG_ELF_LIBC6),
    ] {
        if std::ptr::eq(libs, &host.libs32) && !caps.contains(Caps::COMPAT32) {
            continue;
        }
        for lib in libs.iter().filter(|l| wants(l.group)) {
            let file = p.bind_file(Root::Driver, &lib.path, dir);
            p.add_cache(dir, &lib.soname, &file, flags);
            p.add_dev_links(dir, &file, &host.driver.version);
        }
    }
    if compute_libs {
        add_compat_libs(&mut p, host, o.compat_mode, layout, native);
    }
    if o.graphics {
        graphics::add_graphics(&mut p, host, sel, o, layout);
    }
    for fw in &host.firmwares {
        p.bind(Root::Driver, fw, fw, Kind::File);
    }
    for (path, group) in &host.ipcs {
        if wants(*group) {
            p.bind(Root::Driver, path, path, Kind::Ipc);
        }
    }
    p.add_device(o, "/dev/nvidiactl", NVIDIA_MAJOR, CTL_MINOR);
    if compute_libs {
        for node in [&host.uvm, &host.uvm_tools].into_iter().flatten() {
            p.add_device(o, &node.path, node.major, node.minor);
        }
    }
    if caps.contains(Caps::DISPLAY)
        && let Some(node) = &host.modeset
    {
        p.add_device(o, &node.path, node.major, node.minor);
    }
    for &i in &sel.gpus {
        let gpu = &host.gpus[i];
        p.add_device(
            o,
            &format!("/dev/nvidia{}", gpu.minor),
            NVIDIA_MAJOR,
            gpu.minor,
        );
        let dir = format!("{PROC_NVIDIA}/gpus/{}", gpu.proc_dir);
        p.bind(Root::Proc, &dir, &dir, Kind::Proc);
    }
    let mig_all = o.mig_config || o.mig_monitor;
    if !mig_all {
        for &(g, m) in &sel.migs {
            let mig = &host.gpus[g].mig.devices[m];
            for access in [&mig.gi_access, &mig.ci_access] {
                p.bind(Root::Proc, access, access, Kind::Proc);
                if let (Some(major), Some(&minor)) = (host.majors.caps, host.cap_minors.get(access))
                {
                    p.add_device(
                        o,
                        &format!("/dev/nvidia-caps/nvidia-cap{minor}"),
                        major,
                        minor,
                    );
                }
            }
        }
    }
    for (on, kind) in [(o.mig_config, "config"), (o.mig_monitor, "monitor")] {
        if on {
            add_mig_all(&mut p, host, sel, o, kind);
        }
    }
    for node in &host.imex {
        p.add_device(o, &node.path, node.major, node.minor);
    }
    if let Some(missing) = host.imex_missing.first() {
        bail!("mount error: missing IMEX channel device node: {missing}");
    }
    add_gated(&mut p, o, &host.gated);
    Ok(p)
}

/// `--mig-config all` / `--mig-monitor all`: the whole capabilities tree and every cap node of
/// the MIG-capable selected GPUs.
fn add_mig_all(p: &mut Plan, host: &Host, sel: &Selection, o: &Options, kind: &str) {
    let capable: Vec<_> = sel
        .gpus
        .iter()
        .map(|&i| &host.gpus[i])
        .filter(|g| g.mig.capable)
        .collect();
    if capable.is_empty() {
        return;
    }
    if !p.binds.iter().any(|b| b.target == CAPS_DIR) {
        p.bind(Root::Proc, CAPS_DIR, CAPS_DIR, Kind::Proc);
    }
    let Some(major) = host.majors.caps else {
        return;
    };
    if !o.no_devbind && !p.binds.iter().any(|b| b.target == "/dev/nvidia-caps") {
        p.bind(
            Root::Dev,
            "/dev/nvidia-caps",
            "/dev/nvidia-caps",
            Kind::DeviceDir,
        );
    }
    let global = format!("{CAPS_DIR}/mig/{kind}");
    if let Some(&minor) = host.cap_minors.get(&global) {
        p.allow(o, major, minor);
    }
    for gpu in capable {
        let prefix = format!("gpu{}/", gpu.minor);
        for m in crate::discover::gpus::mig_minors_with_prefix(&host.mig_minors, &prefix) {
            p.allow(o, major, m);
        }
    }
}

/// The loader-cache tag of this machine's native libraries.
pub fn native_arch_flag() -> i32 {
    match std::env::consts::ARCH {
        "aarch64" => ldcache::FLAG_AARCH64_LIB64,
        "powerpc64" => ldcache::FLAG_POWERPC_LIB64,
        _ => ldcache::FLAG_X8664_LIB64,
    }
}

/// Version components after `.so.` compared numerically: which of two files a soname link
/// should point at (ldconfig takes the higher).
fn version_key(file: &str) -> Vec<u64> {
    file.split_once(".so.")
        .map(|(_, v)| v.split('.').map(|c| c.parse().unwrap_or(0)).collect())
        .unwrap_or_default()
}

impl Plan {
    /// Upstream's CDI placement (jit-cdi): the libraries and binaries `layout` placed in the
    /// image's directories go to their host paths instead. Loader-cache entries and development
    /// links follow their library; files with a container path of their own stay.
    pub fn keep_host_paths(&mut self, layout: &Layout) {
        let dir_of = |p: &str| {
            p.rsplit_once('/')
                .map_or("/", |(d, _)| if d.is_empty() { "/" } else { d })
                .to_owned()
        };
        let placed = |target: &str| {
            let dir = dir_of(target);
            dir == layout.libs || dir == layout.libs32 || dir == layout.bins
        };
        let mut moved: Vec<(String, String)> = Vec::new();
        for b in &mut self.binds {
            let file = b.root == Root::Driver && b.kind == Kind::File;
            if file && b.target != b.source && placed(&b.target) {
                moved.push((b.target.clone(), b.source.clone()));
                b.target.clone_from(&b.source);
            }
        }
        let new_dir = |dir: &str, file: &str| {
            let old = format!("{}/{file}", dir.trim_end_matches('/'));
            moved
                .iter()
                .find(|(o, _)| *o == old)
                .map(|(_, n)| dir_of(n))
        };
        for (link, target) in &mut self.symlinks {
            let (dir, name) = link.rsplit_once('/').unwrap_or(("", link.as_str()));
            // A link in a subdirectory pointing up at a library (`gbm/nvidia-drm_gbm.so ->
            // ../libnvidia-allocator.so.1`) moves with that library too.
            let (lib_dir, sub, wanted) = match target.strip_prefix("../") {
                Some(up) => match dir.rsplit_once('/') {
                    Some((parent, sub)) => (parent, Some(sub), up),
                    None => (dir, None, target.as_str()),
                },
                None => (dir, None, target.as_str()),
            };
            let lib = self
                .cache
                .iter()
                .find(|c| c.dir == lib_dir && (c.soname == wanted || c.file == wanted));
            if let Some(d) = lib.and_then(|c| new_dir(&c.dir, &c.file)) {
                let d = d.trim_end_matches('/');
                *link = match sub {
                    Some(sub) => format!("{d}/{sub}/{name}"),
                    None => format!("{d}/{name}"),
                };
            }
        }
        for c in &mut self.cache {
            if let Some(d) = new_dir(&c.dir, &c.file) {
                c.dir = d;
            }
        }
        self.cache_dirs.clear();
        for c in &self.cache {
            if !self.cache_dirs.contains(&c.dir) {
                self.cache_dirs.push(c.dir.clone());
            }
        }
    }

    fn bind(&mut self, root: Root, source: &str, target: &str, kind: Kind) {
        self.binds.push(Bind {
            root,
            source: source.to_owned(),
            target: target.to_owned(),
            kind,
        });
    }

    /// Bind a file into `dir` under its own name; returns that name.
    fn bind_file(&mut self, root: Root, source: &str, dir: &str) -> String {
        let name = source.rsplit('/').next().unwrap_or(source).to_owned();
        let target = format!("{}/{name}", dir.trim_end_matches('/'));
        self.bind(root, source, &target, Kind::File);
        name
    }

    fn add_cache(&mut self, dir: &str, soname: &str, file: &str, flags: i32) {
        if let Some(e) = self
            .cache
            .iter_mut()
            .find(|e| e.dir == dir && e.soname == soname && e.flags == flags)
        {
            if version_key(file) > version_key(&e.file) {
                e.file = file.to_owned();
            }
            return;
        }
        self.cache.push(CacheEntry {
            dir: dir.to_owned(),
            soname: soname.to_owned(),
            file: file.to_owned(),
            flags,
        });
    }

    /// The three development links upstream makes next to the mounted libraries (§5.5 step 6).
    fn add_dev_links(&mut self, dir: &str, file: &str, version: &str) {
        let link = if file.starts_with("libcuda.so.") {
            Some(("libcuda.so", "libcuda.so.1".to_owned()))
        } else if file == format!("libGLX_nvidia.so.{version}") {
            Some(("libGLX_indirect.so.0", file.to_owned()))
        } else if file.starts_with("libnvidia-opticalflow.so.") {
            Some((
                "libnvidia-opticalflow.so",
                "libnvidia-opticalflow.so.1".to_owned(),
            ))
        } else {
            None
        };
        if let Some((name, target)) = link {
            let path = format!("{}/{name}", dir.trim_end_matches('/'));
            if !self.symlinks.iter().any(|(l, _)| *l == path) {
                self.symlinks.push((path, target));
            }
        }
    }

    fn add_symlink(&mut self, link: String, target: String) {
        if !self.symlinks.iter().any(|(l, _)| *l == link) {
            self.symlinks.push((link, target));
        }
    }

    fn add_device(&mut self, o: &Options, path: &str, major: u32, minor: u32) {
        if !o.no_devbind {
            self.bind(Root::Dev, path, path, Kind::Device { major, minor });
        }
        self.allow(o, major, minor);
    }

    fn allow(&mut self, o: &Options, major: u32, minor: u32) {
        if !o.no_cgroups && !self.cgroup.contains(&(major, minor)) {
            self.cgroup.push((major, minor));
        }
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        writeln!(f, "tmpfs {PROC_NVIDIA} ({})", self.proc_files.join(", "))?;
        if let Some(mask) = self.app_profile {
            writeln!(
                f,
                "tmpfs {APP_PROFILE_DIR} ({APP_PROFILE}: EGLVisibleDGPUDevices {mask:#x})"
            )?;
        }
        for b in &self.binds {
            let (word, flags) = match b.kind {
                Kind::File => ("bind", "ro,nosuid,nodev".to_owned()),
                Kind::Ipc => ("bind", "nosuid,nodev,noexec".to_owned()),
                Kind::Device { major, minor } => ("device", format!("c {major}:{minor}")),
                Kind::DeviceDir => ("bind", "nosuid,noexec".to_owned()),
                Kind::Dir => ("bind", "ro,nosuid,nodev,rec".to_owned()),
                Kind::Proc => ("bind", "ro,nosuid,nodev,noexec".to_owned()),
            };
            let root = match b.root {
                Root::Driver => "driver-root",
                Root::Dev => "dev-root",
                Root::Proc => "proc-root",
                Root::Rootfs => "rootfs",
            };
            writeln!(f, "{word} {} <- {root}:{} ({flags})", b.target, b.source)?;
        }
        for (link, target) in &self.symlinks {
            writeln!(f, "symlink {link} -> {target}")?;
        }
        for e in &self.cache {
            writeln!(
                f,
                "ldcache {}/{} -> {} ({})",
                e.dir,
                e.soname,
                e.file,
                ldcache::describe_flags(e.flags)
            )?;
        }
        for d in &self.cache_dirs {
            writeln!(f, "ldcache-dir {d}")?;
        }
        for (major, minor) in &self.cgroup {
            writeln!(f, "cgroup c {major}:{minor} rw")?;
        }
        Ok(())
    }
}
