//! Everything `configure` needs to know about the host, gathered in one pass and only as far as
//! the request needs it (no 32-bit lookup without compat32, no GPU scan without devices).

use std::collections::HashMap;

use anyhow::{Context, Result, anyhow};

use super::Roots;
use super::devices::{DeviceNode, Majors, find_node};
use super::driver::{Driver, read_driver};
use super::files::{self, Binary, Bits, IpcOptions, Library};
use super::gated::{Gated, GatedDevices, find_gated};
use super::gpus::{CAPS_DIR, Gpu, MIG_MINORS, parse_cap_minor, read_gpus};
use super::graphics::{Graphics, read_graphics};
use super::root::RootDir;
use super::tables::Group;

/// What to look for.
#[derive(Debug, Clone, Default)]
pub struct HostQuery {
    /// The driver root's cache (`--ldcache`), default `/etc/ld.so.cache`.
    pub ldcache: Option<String>,
    pub compat32: bool,
    pub gpus: bool,
    pub ipc: IpcOptions,
    pub no_gsp_firmware: bool,
    /// `PATH` of the caller, where driver binaries are searched (inside the driver root).
    pub path_env: Option<String>,
    /// `CUDA_MPS_PIPE_DIRECTORY` of the caller.
    pub mps_dir: Option<String>,
    pub imex_channels: Vec<u32>,
    /// Upstream's CDI file set (jit-cdi, `cdi generate`) instead of libnvidia-container's: see
    /// [`files::select_cdi_libraries`] and [`super::tables::CDI_BINARIES`].
    pub cdi_files: bool,
    /// With `cdi_files`: the feature flag `enable-explicit-driver-libraries`.
    pub cdi_explicit_libraries: bool,
    /// Gated device kinds the container asked for (`NVIDIA_GDS=enabled` …).
    pub gated: Vec<Gated>,
    /// GPUs the caller has already read (`--load-kmods`), used instead of reading them again.
    pub known_gpus: Option<Vec<Gpu>>,
    /// The toolkit's graphics files and DRM nodes (jit-cdi, `cdi generate`, legacy runtime).
    pub graphics: bool,
}

#[derive(Debug, Clone)]
pub struct Host {
    pub roots: Roots,
    pub driver: Driver,
    pub gpus: Vec<Gpu>,
    pub majors: Majors,
    pub uvm: Option<DeviceNode>,
    pub uvm_tools: Option<DeviceNode>,
    pub modeset: Option<DeviceNode>,
    pub libs: Vec<Library>,
    pub libs32: Vec<Library>,
    pub bins: Vec<Binary>,
    pub ipcs: Vec<(String, Group)>,
    pub firmwares: Vec<String>,
    /// `DeviceFileMinor` of each MIG capability file (access, config, monitor), by proc path.
    pub cap_minors: HashMap<String, u32>,
    /// `/proc/driver/nvidia-caps/mig-minors`, empty without MIG.
    pub mig_minors: String,
    pub imex: Vec<DeviceNode>,
    /// Requested IMEX channel nodes that do not exist.
    pub imex_missing: Vec<String>,
    /// Empty unless the query asked for graphics.
    pub graphics: Graphics,
    /// The requested gated devices this host has.
    pub gated: GatedDevices,
}

/// The driver root, opened for confined lookups; failing is upstream's initialization error.
pub fn open_driver_root(roots: &Roots) -> Result<RootDir> {
    RootDir::open(&roots.driver).map_err(|e| {
        anyhow!(
            "initialization error: open failed: {}: {}",
            roots.driver.display(),
            files::lower_io(&e)
        )
    })
}

/// Read the host. Errors carry upstream's phase words ("initialization error", "detection error").
pub fn read_host(roots: &Roots, q: &HostQuery) -> Result<Host> {
    let driver = read_driver(roots).context("initialization error")?;
    let root = open_driver_root(roots)?;
    let gpus = match (q.gpus, &q.known_gpus) {
        (false, _) => Vec::new(),
        (true, Some(known)) => known.clone(),
        (true, None) => read_gpus(roots).context("detection error")?,
    };
    let majors = Majors::read(roots).context("detection error")?;
    let ldcache = q.ldcache.as_deref().unwrap_or("/etc/ld.so.cache");
    let bytes = files::read_ldcache(&root, ldcache).context("detection error")?;
    let cache = files::parse_ldcache(&bytes, ldcache).context("detection error")?;
    let libs = files::select_libraries(&root, &cache, &driver.version, Bits::Native)
        .context("detection error")?;
    let libs32 = if q.compat32 {
        files::select_libraries(&root, &cache, &driver.version, Bits::Compat32)
            .context("detection error")?
    } else {
        Vec::new()
    };
    let mut libs = libs;
    if q.cdi_files {
        let mut dirs: Vec<&str> = Vec::new();
        for l in &libs {
            let dir = l.path.rsplit_once('/').map_or("", |(d, _)| d);
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
        let more = files::select_cdi_libraries(
            &root,
            &cache,
            &driver.version,
            &dirs,
            &libs,
            q.cdi_explicit_libraries,
        )
        .context("detection error")?;
        libs.extend(more);
    }
    let table = if q.cdi_files {
        super::tables::CDI_BINARIES
    } else {
        super::tables::BINARIES
    };
    let bins = files::find_binaries_of(table, &root, q.path_env.as_deref(), q.ipc.no_mps)
        .context("detection error")?;
    let ipcs = files::find_ipcs(&root, q.ipc, q.mps_dir.as_deref());
    let firmwares = if q.no_gsp_firmware {
        Vec::new()
    } else {
        files::find_firmwares(&root, &driver.version)
    };
    let mut cap_minors = HashMap::new();
    let mut mig_minors = String::new();
    if majors.caps.is_some() && gpus.iter().any(|g| g.mig.capable) {
        let mut files: Vec<String> = ["config", "monitor"]
            .iter()
            .map(|k| format!("{CAPS_DIR}/mig/{k}"))
            .collect();
        for mig in gpus.iter().flat_map(|g| &g.mig.devices) {
            files.push(mig.gi_access.clone());
            files.push(mig.ci_access.clone());
        }
        for f in files {
            let minor = std::fs::read_to_string(roots.proc_path(&f))
                .ok()
                .and_then(|t| parse_cap_minor(&t));
            if let Some(m) = minor {
                cap_minors.insert(f, m);
            }
        }
        mig_minors = std::fs::read_to_string(roots.proc_path(MIG_MINORS)).unwrap_or_default();
    }
    let mut imex = Vec::new();
    let mut imex_missing = Vec::new();
    for id in &q.imex_channels {
        let path = format!("/dev/nvidia-caps-imex-channels/channel{id}");
        match find_node(roots, &path) {
            Some(node) => imex.push(node),
            None => imex_missing.push(path),
        }
    }
    let graphics = if q.graphics {
        let mut dirs: Vec<String> = Vec::new();
        for lib in &libs {
            let dir = lib.path.rsplit_once('/').map_or("/", |(d, _)| d).to_owned();
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
        let search = super::graphics::config_search_paths();
        read_graphics(&root, roots, &gpus, &driver.version, &dirs, &search)
    } else {
        Graphics::default()
    };
    // A versioned library the graphics discovery places (the Vulkan producer) is its.
    libs.retain(|l| !l.prefix.is_empty() || !graphics.libs.iter().any(|g| g.path == l.path));
    Ok(Host {
        graphics,
        cap_minors,
        mig_minors,
        imex,
        imex_missing,
        gated: find_gated(roots, &q.gated),
        uvm: find_node(roots, "/dev/nvidia-uvm"),
        uvm_tools: find_node(roots, "/dev/nvidia-uvm-tools"),
        modeset: find_node(roots, "/dev/nvidia-modeset"),
        roots: roots.clone(),
        driver,
        gpus,
        majors,
        libs,
        libs32,
        bins,
        ipcs,
        firmwares,
    })
}
