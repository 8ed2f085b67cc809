//! `nvidia-container-cli list`: one absolute path per line, in upstream's fixed group order
//! (reference libnvidia-container.md §2.3). With no options at all it lists everything;
//! once any option is given, only what was asked for.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow};
use lexopt::prelude::*;

use super::{Global, append, command_help, input_error, prepare_host, reject_positional, string};
use crate::discover::Roots;
use crate::discover::devices::{Majors, find_node};
use crate::discover::driver::{VERSION_FILE, read_driver};
use crate::discover::files::{self, Bits, IpcOptions};
use crate::discover::gpus::{self, CAPS_DIR, Gpu, MIG_MINORS, read_gpus};
use crate::discover::root::RootDir;
use crate::discover::wsl::{Wsl, read_wsl};
use crate::select::{Selection, check_mig_all, select_devices};

#[derive(Debug, Default)]
struct ListArgs {
    device: Option<String>,
    libraries: bool,
    binaries: bool,
    ipcs: bool,
    firmwares: bool,
    compat32: bool,
    mig_config: Option<String>,
    mig_monitor: Option<String>,
    imex_channels: Vec<String>,
    no_persistenced: bool,
    no_fabricmanager: bool,
    no_gsp_firmware: bool,
}

fn parse_args(args: Vec<OsString>) -> Result<Option<ListArgs>> {
    // Upstream's "no options" test counts argv words: none, or a single attached
    // `--imex-channel=…`, gets the defaults; the two-word `--imex-channel N` does not.
    let defaults = match args.as_slice() {
        [] => true,
        [one] => one.to_string_lossy().starts_with("--imex-channel="),
        _ => false,
    };
    let mut a = ListArgs::default();
    let mut parser = lexopt::Parser::from_args(args);
    while let Some(arg) = parser.next().map_err(input_error)? {
        match arg {
            Short('d') | Long("device") => {
                append(&mut a.device, string(parser.value().map_err(input_error)?)?)
            }
            Short('l') | Long("libraries") => a.libraries = true,
            Short('b') | Long("binaries") => a.binaries = true,
            Short('i') | Long("ipcs") => a.ipcs = true,
            Short('f') | Long("firmwares") => a.firmwares = true,
            Long("compat32") => a.compat32 = true,
            Long("mig-config") => append(
                &mut a.mig_config,
                string(parser.value().map_err(input_error)?)?,
            ),
            Long("mig-monitor") => append(
                &mut a.mig_monitor,
                string(parser.value().map_err(input_error)?)?,
            ),
            Long("imex-channel") => a
                .imex_channels
                .push(string(parser.value().map_err(input_error)?)?),
            Long("no-persistenced") => a.no_persistenced = true,
            Long("no-fabricmanager") => a.no_fabricmanager = true,
            Long("no-gsp-firmware") => a.no_gsp_firmware = true,
            Short('h') | Short('?') | Long("help") => {
                command_help(HELP)?;
                return Ok(None);
            }
            Value(v) => reject_positional(v)?,
            other => return Err(input_error(other.unexpected())),
        }
    }
    if defaults {
        a.device = Some("all".into());
        a.libraries = true;
        a.binaries = true;
        a.ipcs = true;
        a.firmwares = true;
        a.compat32 = true;
    }
    if a.no_gsp_firmware {
        a.firmwares = false;
    }
    Ok(Some(a))
}

pub fn run(g: &Global, args: Vec<OsString>) -> Result<ExitCode> {
    let Some(a) = parse_args(args)? else {
        return Ok(ExitCode::SUCCESS);
    };
    let imex = parse_imex_channels(&a.imex_channels)?;
    let (roots, known_gpus) = prepare_host(g)?;
    if let Some(wsl) = wsl_host(&roots)? {
        return list_wsl(&wsl, &a);
    }
    let driver = read_driver(&roots).context("initialization error")?;
    let needs_gpus = a.device.is_some() || a.mig_config.is_some() || a.mig_monitor.is_some();
    let gpus = match (needs_gpus, known_gpus) {
        (false, _) => Vec::new(),
        (true, Some(known)) => known,
        (true, None) => read_gpus(&roots).context("detection error")?,
    };
    let majors = if needs_gpus {
        Majors::read(&roots).context("detection error")?
    } else {
        Majors::default()
    };
    let sel = match &a.device {
        Some(spec) => select_devices(&gpus, spec).context("device error")?,
        None => Selection::default(),
    };
    let mut out = String::new();
    if a.device.is_some() {
        out.push_str("/dev/nvidiactl\n");
        for node in [
            "/dev/nvidia-uvm",
            "/dev/nvidia-uvm-tools",
            "/dev/nvidia-modeset",
        ] {
            if find_node(&roots, node).is_some() {
                let _ = writeln!(out, "{node}");
            }
        }
        for &i in &sel.gpus {
            let _ = writeln!(out, "/dev/nvidia{}", gpus[i].minor);
        }
    }
    let mig_all = check_mig_all(a.mig_config.as_deref(), a.mig_monitor.as_deref(), &sel)?;
    if !mig_all {
        for &(g, m) in &sel.migs {
            let mig = &gpus[g].mig.devices[m];
            let _ = writeln!(out, "{}", mig.gi_access);
            let _ = writeln!(out, "{}", mig.ci_access);
            if majors.caps.is_some() {
                for access in [&mig.gi_access, &mig.ci_access] {
                    if let Some(minor) = read_cap_minor(&roots, access) {
                        let _ = writeln!(out, "/dev/nvidia-caps/nvidia-cap{minor}");
                    }
                }
            }
        }
    }
    for id in &imex {
        let _ = writeln!(out, "/dev/nvidia-caps-imex-channels/channel{id}");
    }
    if a.mig_config.is_some() {
        list_mig_caps(&mut out, &roots, &majors, &gpus, &sel, "config")?;
    }
    if a.mig_monitor.is_some() {
        list_mig_caps(&mut out, &roots, &majors, &gpus, &sel, "monitor")?;
    }
    if a.binaries || a.libraries || a.ipcs || a.firmwares {
        let root = crate::discover::host::open_driver_root(&roots)?;
        list_driver_files(&mut out, &root, &a, g, &driver.version).context("detection error")?;
    }
    std::io::stdout().lock().write_all(out.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

/// WSL2 (no `/proc/driver/nvidia`, a `/dev/dxg`): what a container gets there.
pub fn wsl_host(roots: &Roots) -> Result<Option<Wsl>> {
    if roots.proc_path(VERSION_FILE).exists() {
        return Ok(None);
    }
    read_wsl(roots).context("initialization error")
}

/// `/dev/dxg` for any device request, the store's and `/usr/lib/wsl/lib`'s libraries, the
/// store's `nvidia-smi`; the store's other files (`.bin`, `.dll`) with the firmwares.
fn list_wsl(wsl: &Wsl, a: &ListArgs) -> Result<ExitCode> {
    let mut out = String::new();
    if a.device.is_some() {
        let _ = writeln!(out, "{}", wsl.dxg.path);
    }
    let smi = wsl.nvidia_smi();
    for f in &wsl.files {
        let shown = match (f.soname.is_some(), Some(f.path.as_str()) == smi) {
            (true, _) => a.libraries,
            (false, true) => a.binaries,
            (false, false) => a.firmwares,
        };
        if shown {
            let _ = writeln!(out, "{}", f.path);
        }
    }
    std::io::stdout().lock().write_all(out.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

fn list_driver_files(
    out: &mut String,
    root: &RootDir,
    a: &ListArgs,
    g: &Global,
    version: &str,
) -> Result<()> {
    if a.binaries {
        let path = std::env::var("PATH").ok();
        for bin in files::find_binaries(root, path.as_deref(), false)? {
            let _ = writeln!(out, "{}", bin.path);
        }
    }
    if a.libraries {
        let ldcache = g.ldcache.as_deref().unwrap_or("/etc/ld.so.cache");
        let bytes = files::read_ldcache(root, ldcache)?;
        let cache = files::parse_ldcache(&bytes, ldcache)?;
        for lib in files::select_libraries(root, &cache, version, Bits::Native)? {
            let _ = writeln!(out, "{}", lib.path);
        }
        if a.compat32 {
            for lib in files::select_libraries(root, &cache, version, Bits::Compat32)? {
                let _ = writeln!(out, "{}", lib.path);
            }
        }
    }
    if a.ipcs {
        let opts = IpcOptions {
            no_persistenced: a.no_persistenced,
            no_fabricmanager: a.no_fabricmanager,
            no_mps: false,
        };
        let mps = std::env::var("CUDA_MPS_PIPE_DIRECTORY").ok();
        for (path, _) in files::find_ipcs(root, opts, mps.as_deref()) {
            let _ = writeln!(out, "{path}");
        }
    }
    if a.firmwares {
        for path in files::find_firmwares(root, version) {
            let _ = writeln!(out, "{path}");
        }
    }
    Ok(())
}

/// The files a container needs to configure (or monitor) MIG on the visible MIG-capable GPUs.
fn list_mig_caps(
    out: &mut String,
    roots: &Roots,
    majors: &Majors,
    gpus: &[Gpu],
    sel: &Selection,
    kind: &str,
) -> Result<()> {
    let capable: Vec<&Gpu> = sel
        .gpus
        .iter()
        .map(|&i| &gpus[i])
        .filter(|g| g.mig.capable)
        .collect();
    if capable.is_empty() {
        return Ok(());
    }
    let global = format!("{CAPS_DIR}/mig/{kind}");
    let _ = writeln!(out, "{global}");
    let dev_style = majors.caps.is_some();
    if dev_style && let Some(minor) = read_cap_minor(roots, &global) {
        let _ = writeln!(out, "/dev/nvidia-caps/nvidia-cap{minor}");
    }
    let minors_text = if dev_style {
        std::fs::read_to_string(roots.proc_path(MIG_MINORS)).unwrap_or_default()
    } else {
        String::new()
    };
    for gpu in capable {
        let _ = writeln!(out, "{CAPS_DIR}/gpu{}", gpu.minor);
        if dev_style {
            let _ = writeln!(out, "/dev/nvidia-caps");
            // `gpu1/` and not `gpu1`: the bare prefix would also take gpu10…gpu19's nodes.
            for m in gpus::mig_minors_with_prefix(&minors_text, &format!("gpu{}/", gpu.minor)) {
                let _ = writeln!(out, "/dev/nvidia-caps/nvidia-cap{m}");
            }
        }
    }
    Ok(())
}

fn read_cap_minor(roots: &Roots, proc_file: &str) -> Option<u32> {
    let text = std::fs::read_to_string(roots.proc_path(proc_file)).ok()?;
    gpus::parse_cap_minor(&text)
}

/// Channel ids are decimal and must fit a device minor (20 bits).
pub fn parse_imex_channels(values: &[String]) -> Result<Vec<u32>> {
    let mut ids = Vec::new();
    for v in values
        .iter()
        .flat_map(|v| v.split(','))
        .filter(|t| !t.is_empty())
    {
        let id = v
            .parse::<u32>()
            .ok()
            .filter(|id| *id < (1 << 20) && v.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| {
                anyhow!("error parsing IMEX info: unsupported IMEX channel value: {v}")
            })?;
        ids.push(id);
    }
    Ok(ids)
}

const HELP: &str = "Usage: nvidia-container-cli list [OPTION...]
List driver components

  -d, --device=ID            Device UUID(s) or index(es) to list
  -l, --libraries            List driver libraries
  -b, --binaries             List driver binaries
  -i, --ipcs                 List driver ipcs
  -f, --firmwares            List driver firmwares
      --compat32             Enable 32bits compatibility
      --mig-config=ID        MIG devices to list config capabilities files for
      --mig-monitor=ID       MIG devices to list monitor capabilities files for
      --imex-channel=CHANNEL IMEX channel ID(s) to inject
      --no-persistenced      Don't include the NVIDIA persistence daemon socket
      --no-fabricmanager     Don't include the NVIDIA fabricmanager socket
      --no-gsp-firmware      Don't include GSP firmware
  -?, -h, --help             Give this help list

With no option at all: --device=all --libraries --binaries --ipcs --firmwares --compat32.
";
