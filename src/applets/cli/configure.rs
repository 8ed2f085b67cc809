//! `nvidia-container-cli configure`: give a container the driver and the selected GPUs
//! (reference libnvidia-container.md §1.5, §5). Discovery, then a pure plan, then the live
//! backend applies it in the container's mount namespace. `--dry-run` prints the plan instead.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use lexopt::prelude::*;

use super::{Global, append, command_help, input_error, prepare_host, string};
use crate::discover::Roots;
use crate::discover::csv;
use crate::discover::driver::VERSION_FILE;
use crate::discover::files::IpcOptions;
use crate::discover::gated::Gated;
use crate::discover::host::{HostQuery, read_host};
use crate::discover::tegra::{is_tegra, read_tegra};
use crate::discover::wsl::Wsl;
use crate::live::{self, Target};
use crate::plan::{CompatMode, Kind, Options, build_csv_plan, build_plan, build_wsl_plan};
use crate::request::Caps;
use crate::require::{DeviceFacts, HostFacts, check_requirements};
use crate::select::{Selection, check_mig_all, select_devices};
use std::path::Path;

const MAX_REQUIREMENTS: usize = 32;

#[derive(Debug, Default)]
pub struct ConfigureArgs {
    pub pid: Option<i32>,
    pub device: Option<String>,
    pub require: Vec<String>,
    pub ldconfig: Option<String>,
    pub caps: Caps,
    pub mig_config: Option<String>,
    pub mig_monitor: Option<String>,
    pub imex_channels: Vec<String>,
    /// Gated devices (the prestart hook passes the container's `NVIDIA_GDS=enabled` …).
    pub gated: Vec<Gated>,
    pub no_cgroups: bool,
    pub no_devbind: bool,
    pub no_persistenced: bool,
    pub no_fabricmanager: bool,
    pub no_gsp_firmware: bool,
    pub cuda_compat_mode: Option<CompatMode>,
    pub no_cntlibs: bool,
    pub dry_run: bool,
    pub rootfs: PathBuf,
}

fn value(parser: &mut lexopt::Parser) -> Result<String> {
    string(parser.value().map_err(input_error)?)
}

fn parse_args(args: Vec<OsString>) -> Result<Option<ConfigureArgs>> {
    let mut a = ConfigureArgs::default();
    let mut rootfs: Vec<String> = Vec::new();
    let mut parser = lexopt::Parser::from_args(args);
    while let Some(arg) = parser.next().map_err(input_error)? {
        match arg {
            Short('p') | Long("pid") => {
                let v = value(&mut parser)?;
                let pid = v
                    .parse::<i32>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| anyhow!("input error: invalid pid: {v}"))?;
                a.pid = Some(pid);
            }
            Short('d') | Long("device") => {
                let v = value(&mut parser)?;
                append(&mut a.device, v)
            }
            Short('r') | Long("require") => {
                let v = value(&mut parser)?;
                a.require.push(v)
            }
            Short('l') | Long("ldconfig") => a.ldconfig = Some(value(&mut parser)?),
            Short('c') | Long("compute") => a.caps = a.caps.union(Caps::COMPUTE),
            Short('u') | Long("utility") => a.caps = a.caps.union(Caps::UTILITY),
            Short('v') | Long("video") => a.caps = a.caps.union(Caps::VIDEO),
            Short('g') | Long("graphics") => a.caps = a.caps.union(Caps::GRAPHICS),
            Short('D') | Long("display") => a.caps = a.caps.union(Caps::DISPLAY),
            Short('n') | Long("ngx") => a.caps = a.caps.union(Caps::NGX),
            Long("compat32") => a.caps = a.caps.union(Caps::COMPAT32),
            Long("mig-config") => {
                let v = value(&mut parser)?;
                append(&mut a.mig_config, v)
            }
            Long("mig-monitor") => {
                let v = value(&mut parser)?;
                append(&mut a.mig_monitor, v)
            }
            Long("imex-channel") => {
                let v = value(&mut parser)?;
                a.imex_channels.push(v)
            }
            Long("no-cgroups") => a.no_cgroups = true,
            Long("no-devbind") => a.no_devbind = true,
            Long("no-persistenced") => a.no_persistenced = true,
            Long("no-fabricmanager") => a.no_fabricmanager = true,
            Long("no-gsp-firmware") => a.no_gsp_firmware = true,
            Long("no-cntlibs") => a.no_cntlibs = true,
            Long("cuda-compat-mode") => {
                let v = value(&mut parser)?;
                a.cuda_compat_mode = Some(CompatMode::parse(&v).ok_or_else(|| {
                    anyhow!(
                        "input error: invalid cuda-compat-mode: {v} (mount, ldconfig or disabled)"
                    )
                })?);
            }
            Long("dry-run") => a.dry_run = true,
            Short('h') | Short('?') | Long("help") => {
                command_help(HELP)?;
                return Ok(None);
            }
            Value(v) => rootfs.push(string(v)?),
            other => return Err(input_error(other.unexpected())),
        }
    }
    match rootfs.as_slice() {
        [one] if one.starts_with('/') && one != "/" => a.rootfs = PathBuf::from(one),
        [_] => bail!("input error: invalid rootfs directory"),
        [] => bail!("input error: missing ROOTFS argument"),
        _ => bail!("input error: too many arguments"),
    }
    if a.require.len() > MAX_REQUIREMENTS {
        bail!("input error: too many requirements");
    }
    Ok(Some(a))
}

pub fn run(g: &Global, args: Vec<OsString>) -> Result<ExitCode> {
    let Some(a) = parse_args(args)? else {
        return Ok(ExitCode::SUCCESS);
    };
    configure(g, &a)?;
    Ok(ExitCode::SUCCESS)
}

/// The whole `configure`, also called in-process by the prestart hook.
pub fn configure(g: &Global, a: &ConfigureArgs) -> Result<()> {
    // The command line checks its own --pid; the hook's comes from the OCI state, where a
    // missing pid decodes as 0 (§5.2: pid > 0).
    if let Some(pid) = a.pid.filter(|p| *p <= 0) {
        bail!("input error: invalid pid: {pid}");
    }
    // The hook restricted itself before reading config.json; this call is then a no-op.
    crate::privilege::restrict(crate::privilege::Role::Live {
        kmods: g.load_kmods,
    })?;
    let imex = super::list::parse_imex_channels(&a.imex_channels)?;
    let compute_libs = a.caps.contains(Caps::COMPUTE) || a.caps.contains(Caps::VIDEO);
    let compat_mode = if a.no_cntlibs {
        CompatMode::Disabled
    } else {
        a.cuda_compat_mode.unwrap_or_default()
    };
    let needs_gpus = a.device.is_some() || a.mig_config.is_some() || a.mig_monitor.is_some();
    let (roots, known_gpus) = prepare_host(g)?;
    if let Some(wsl) = super::list::wsl_host(&roots)? {
        return configure_wsl(g, a, &wsl, &roots);
    }
    if !roots.proc_path(VERSION_FILE).exists() && is_tegra(&roots) {
        return configure_tegra(g, a, &roots);
    }
    let query = HostQuery {
        ldcache: g.ldcache.clone(),
        compat32: a.caps.contains(Caps::COMPAT32),
        gpus: needs_gpus,
        ipc: IpcOptions {
            no_persistenced: a.no_persistenced,
            no_fabricmanager: a.no_fabricmanager,
            no_mps: false,
        },
        no_gsp_firmware: a.no_gsp_firmware,
        path_env: std::env::var("PATH").ok(),
        mps_dir: std::env::var("CUDA_MPS_PIPE_DIRECTORY").ok(),
        imex_channels: imex,
        cdi_files: false,
        cdi_explicit_libraries: false,
        gated: a.gated.clone(),
        known_gpus,
        // libnvidia-container mounts no graphics config files or DRM nodes; in legacy mode the
        // runtime adds them to the spec, as upstream's graphics modifier does.
        graphics: false,
    };
    let host = read_host(&roots, &query)?;
    let sel = match &a.device {
        Some(spec) => select_devices(&host.gpus, spec).context("device error")?,
        None => Selection::default(),
    };
    let mig_all = check_mig_all(a.mig_config.as_deref(), a.mig_monitor.as_deref(), &sel)?;
    let facts = HostFacts {
        cuda: host.driver.cuda.map(|(x, y)| format!("{x}.{y}")),
        driver: Some(host.driver.version.clone()),
    };
    let mut devices: Vec<DeviceFacts> = sel
        .gpus
        .iter()
        .map(|&i| device_facts(&host.gpus[i]))
        .collect();
    devices.extend(sel.migs.iter().map(|&(g, _)| device_facts(&host.gpus[g])));
    check_requirements(&a.require, &facts, &devices).context("requirement error")?;

    let target = target_of(a);
    crate::privilege::enter(crate::privilege::Phase::Container);
    let want_compat = compute_libs && compat_mode != CompatMode::Disabled;
    let layout = live::probe_layout(&target.host_view(), want_compat)?;
    let opts = Options {
        caps: a.caps,
        no_devbind: a.no_devbind,
        no_cgroups: a.no_cgroups,
        mig_config: mig_all && a.mig_config.is_some(),
        mig_monitor: mig_all && a.mig_monitor.is_some(),
        compat_mode,
        graphics: false,
    };
    let plan = build_plan(&host, &sel, &opts, &layout)?;
    if a.dry_run {
        crate::report::write_stdout(&plan.to_string())?;
        return Ok(());
    }
    let ldconfig = match super::config(g)?.nvbox.ldcache.as_deref() {
        Some("ldconfig") => Some(live::ldconfig::prepare(&ldconfig_path(a, &target))?),
        _ => None,
    };
    live::apply(&host, &plan, &target, ldconfig.as_ref())
}

/// WSL2: the driver store and `/usr/lib/wsl/lib` at their own paths, `/dev/dxg` when devices
/// are asked for (any: the GPUs behind it cannot be told apart without NVML). Requirements on
/// the CUDA or driver version are checked against the store's `.inf` version.
fn configure_wsl(g: &Global, a: &ConfigureArgs, wsl: &Wsl, roots: &Roots) -> Result<()> {
    let facts = HostFacts {
        cuda: wsl
            .store
            .version
            .as_deref()
            .and_then(|v| v.split('.').next()?.parse().ok())
            .and_then(crate::discover::tables::cuda_version_for_branch)
            .map(|(x, y)| format!("{x}.{y}")),
        driver: wsl.store.version.clone(),
    };
    check_requirements(&a.require, &facts, &[]).context("requirement error")?;
    let opts = Options {
        no_devbind: a.no_devbind,
        no_cgroups: a.no_cgroups,
        ..Options::default()
    };
    let mut plan = build_wsl_plan(wsl, &opts);
    if a.device.is_none() {
        plan.binds
            .retain(|b| !matches!(b.kind, Kind::Device { .. }));
        plan.cgroup.clear();
    }
    if a.dry_run {
        crate::report::write_stdout(&plan.to_string())?;
        return Ok(());
    }
    let target = target_of(a);
    crate::privilege::enter(crate::privilege::Phase::Container);
    let ldconfig = match super::config(g)?.nvbox.ldcache.as_deref() {
        Some("ldconfig") => Some(live::ldconfig::prepare(&ldconfig_path(a, &target))?),
        _ => None,
    };
    live::apply_from(roots, &plan, &target, ldconfig.as_ref())
}

/// Tegra without the OpenRM driver (Orin's nvgpu): what the CSV files of
/// `modes.csv.mount-spec-path` list, as libnvidia-container's Jetson support gives it — the `dev`
/// nodes when devices are asked for, the files, the `sym` chains and the loader cache.
fn configure_tegra(g: &Global, a: &ConfigureArgs, roots: &Roots) -> Result<()> {
    let cfg = super::config(g)?;
    let files = csv::list_csv_files(Path::new(&cfg.runtime.modes.csv.mount_spec_path), false);
    let (specs, mut warnings) = csv::load_mount_specs(&files)?;
    let nodes = csv::find_devices(&specs, &roots.dev);
    let found = csv::find_files(&specs, &roots.driver, &[])?;
    warnings.extend(nodes.warnings);
    warnings.extend(found.warnings.iter().cloned());
    for w in &warnings {
        crate::warn!("{w}");
    }
    let facts = HostFacts {
        cuda: read_tegra(roots).cuda,
        driver: None,
    };
    check_requirements(&a.require, &facts, &[]).context("requirement error")?;
    let opts = Options {
        no_devbind: a.no_devbind,
        no_cgroups: a.no_cgroups,
        ..Options::default()
    };
    let devices = if a.device.is_some() {
        nodes.device_nodes.as_slice()
    } else {
        &[]
    };
    let plan = build_csv_plan(devices, &found, &opts);
    if a.dry_run {
        crate::report::write_stdout(&plan.to_string())?;
        return Ok(());
    }
    let target = target_of(a);
    crate::privilege::enter(crate::privilege::Phase::Container);
    let ldconfig = match cfg.nvbox.ldcache.as_deref() {
        Some("ldconfig") => Some(live::ldconfig::prepare(&ldconfig_path(a, &target))?),
        _ => None,
    };
    live::apply_from(roots, &plan, &target, ldconfig.as_ref())
}

fn target_of(a: &ConfigureArgs) -> Target {
    match a.pid {
        Some(pid) => Target {
            pid,
            rootfs: a.rootfs.clone(),
            supervised: true,
        },
        None => Target {
            pid: nix::unistd::getppid().as_raw(),
            rootfs: a.rootfs.clone(),
            supervised: false,
        },
    }
}

/// `--ldconfig`, else the image's `/sbin/ldconfig.real` if it has one (Ubuntu's `/sbin/ldconfig`
/// is a wrapper script), else `/sbin/ldconfig`.
fn ldconfig_path(a: &ConfigureArgs, t: &Target) -> String {
    if let Some(p) = &a.ldconfig {
        return p.clone();
    }
    let real = crate::discover::root::RootDir::open(&t.host_view())
        .ok()
        .and_then(|r| r.find("/sbin/ldconfig.real").ok().flatten());
    match real {
        Some(_) => "/sbin/ldconfig.real".to_owned(),
        None => "/sbin/ldconfig".to_owned(),
    }
}

fn device_facts(gpu: &crate::discover::gpus::Gpu) -> DeviceFacts {
    DeviceFacts {
        arch: gpu.arch.map(|(x, y)| format!("{x}.{y}")),
        brand: Some(gpu.brand.to_owned()),
    }
}

const HELP: &str = "Usage: nvidia-container-cli configure [OPTION...] ROOTFS
Configure a container with GPU support by exposing device drivers to it

  -p, --pid=PID              Container PID (without it: the caller's parent,
                             standalone mode)
  -d, --device=ID            Device UUID(s), index(es), bus id(s) or MIG
                             device(s) to isolate
  -r, --require=EXPR         Check container requirements (repeatable)
  -l, --ldconfig=PATH        Path to the ldconfig binary, '@' prefix for a host
                             path (used only with [nvbox] ldcache = \"ldconfig\")
  -c, --compute              Enable compute capability
  -u, --utility              Enable utility capability
  -v, --video                Enable video capability
  -g, --graphics             Enable graphics capability
  -D, --display              Enable display capability
  -n, --ngx                  Enable ngx capability
      --compat32             Enable 32bits compatibility
      --mig-config=ID        Enable configuration of MIG devices ('all')
      --mig-monitor=ID       Enable monitoring of MIG devices ('all')
      --imex-channel=CHANNEL IMEX channel ID(s) to inject
      --no-cgroups           Don't use cgroup enforcement
      --no-devbind           Don't bind mount devices
      --no-persistenced      Don't include the NVIDIA persistence daemon socket
      --no-fabricmanager     Don't include the NVIDIA fabricmanager socket
      --no-gsp-firmware      Don't include GSP firmware
      --no-cntlibs           Don't mount CUDA compat libraries from the image
      --cuda-compat-mode=MODE  mount (default), ldconfig or disabled
      --dry-run              Print what would be done, change nothing
  -?, -h, --help             Give this help list
";
