//! `nvidia-container-runtime-hook` (alias `nvidia-container-toolkit`): the OCI prestart hook
//! Docker's `--gpus` and the legacy runtime mode call (reference nvidia-container-toolkit.md §4).
//! It reads the state on stdin and the bundle's config.json, returns at once for a container that
//! asks for no GPU, and otherwise runs `configure` in this process — no exec of
//! nvidia-container-cli unless `[nvidia-container-cli] path` names one.

use std::ffi::OsString;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};

use super::cli::Global;
use super::cli::configure::{ConfigureArgs, configure};
use crate::config::Config;
use crate::plan::CompatMode;
use crate::request::{Request, read_container, read_state, request_from_container};
use crate::{report, version};

const USAGE: &str = "Usage of nvidia-container-runtime-hook:
  -config string
    \tconfig file (default: $NVIDIA_CTK_CONFIG_FILE_PATH, $XDG_CONFIG_HOME/nvidia-container-runtime/config.toml,
    \t/etc/nvidia-container-runtime/config.toml)
  -debug
    \tenable debug output
  -version
    \tshow version information

Commands:
  prestart   configure the container (OCI state on stdin)
  poststart  no-op
  poststop   no-op
";

pub fn main(name: &str, args: Vec<OsString>) -> ExitCode {
    let name = if name == "nvidia-container-toolkit" {
        "nvidia-container-toolkit"
    } else {
        "nvidia-container-runtime-hook"
    };
    report::finish(name, run(args))
}

#[derive(Default)]
struct Flags {
    config: Option<PathBuf>,
    debug: bool,
}

fn run(args: Vec<OsString>) -> Result<ExitCode> {
    let mut flags = Flags::default();
    let mut args = args.into_iter().map(|a| a.to_string_lossy().into_owned());
    let mut command = None;
    while let Some(arg) = args.next() {
        // Go's flag package: one or two dashes, `-name=value` or `-name value`; flags end at
        // the first non-flag word.
        let Some(flag) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
            command = Some(arg);
            break;
        };
        let (name, value) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v.to_owned())),
            None => (flag, None),
        };
        match name {
            "config" => {
                let v = value
                    .or_else(|| args.next())
                    .ok_or_else(|| anyhow!("flag needs an argument: -config"))?;
                flags.config = Some(PathBuf::from(v));
            }
            "debug" => flags.debug = value.is_none_or(|v| parse_bool(&v)),
            "version" => {
                println!("NVIDIA Container Runtime Hook version {}", version::VERSION);
                println!("commit: {}", version::COMMIT);
                return Ok(ExitCode::SUCCESS);
            }
            "h" | "help" => {
                eprint!("{USAGE}");
                return Ok(ExitCode::SUCCESS);
            }
            other => {
                eprintln!("flag provided but not defined: -{other}");
                eprint!("{USAGE}");
                return Ok(ExitCode::from(2));
            }
        }
    }
    match command.as_deref() {
        Some("prestart") => {
            prestart(&flags)?;
            Ok(ExitCode::SUCCESS)
        }
        Some("poststart" | "poststop") => Ok(ExitCode::SUCCESS),
        _ => {
            eprint!("{USAGE}");
            Ok(ExitCode::from(2))
        }
    }
}

fn parse_bool(v: &str) -> bool {
    matches!(v, "1" | "t" | "T" | "TRUE" | "true" | "True")
}

fn prestart(flags: &Flags) -> Result<()> {
    let cfg = match &flags.config {
        Some(path) => Config::load_from(path, true)?,
        None => Config::load()?.0,
    };
    let debug = if flags.debug {
        Some("/dev/stderr".to_owned())
    } else {
        Some(cfg.cli.debug.clone()).filter(|d| !d.is_empty())
    };
    if cfg.cli.path.is_empty() {
        // Everything from here on comes from the container: read it with the capabilities of
        // the discovery phase only. (An external nvidia-container-cli trims its own.)
        if let Some(path) = &debug {
            crate::log::open(path).map_err(|e| anyhow!("open {path}: {e}"))?;
        }
        crate::privilege::restrict(crate::privilege::Role::Live {
            kmods: cfg.cli.load_kmods,
        })?;
    }
    let mut input = Vec::new();
    std::io::stdin()
        .lock()
        .read_to_end(&mut input)
        .context("read OCI state")?;
    let state = read_state(&input)?;
    let bundle = PathBuf::from(&state.bundle);
    let spec_path = bundle.join("config.json");
    let bytes = std::fs::read(&spec_path)
        .map_err(|e| anyhow!("read {}: {}", spec_path.display(), e.kind()))?;
    let spec: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| anyhow!("could not decode OCI spec {}: {e}", spec_path.display()))?;
    let container = read_container(&spec)?;
    let req = request_from_container(&container, &cfg)?;
    if !req.is_gpu_container() {
        return Ok(());
    }
    check_mode(&cfg, &req)?;
    let rootfs = rootfs_path(&bundle, &container.root_path);
    if !cfg.cli.path.is_empty() {
        return exec_cli(&cfg, flags, &req, state.pid, &rootfs);
    }
    let g = Global {
        root: Some(PathBuf::from(&cfg.cli.root)).filter(|p| !p.as_os_str().is_empty()),
        ldcache: Some(cfg.cli.ldcache.clone()).filter(|l| !l.is_empty()),
        debug,
        user: Some(cfg.cli.user.clone()).filter(|u| !u.is_empty()),
        load_kmods: cfg.cli.load_kmods,
        no_pivot: cfg.cli.no_pivot,
        no_create_imex_channels: cfg.features.disable_imex_channel_creation == Some(true),
        config: Some(cfg.clone()),
        ..Global::default()
    };
    let args = ConfigureArgs {
        pid: Some(state.pid),
        device: req.device_spec().filter(|s| !s.is_empty()),
        require: req.requirements.clone(),
        ldconfig: Some(cfg.cli.ldconfig.clone()).filter(|l| !l.is_empty()),
        caps: req.caps,
        mig_config: req.mig_config.clone(),
        mig_monitor: req.mig_monitor.clone(),
        imex_channels: req.imex_channels.iter().map(u32::to_string).collect(),
        gated: req.gated.clone(),
        no_cgroups: cfg.cli.no_cgroups,
        cuda_compat_mode: Some(compat_mode(&cfg)),
        rootfs,
        ..ConfigureArgs::default()
    };
    configure(&g, &args)
}

/// The hook serves legacy mode only; other modes go through the runtime shim.
fn check_mode(cfg: &Config, req: &Request) -> Result<()> {
    if cfg.hook.skip_mode_detection {
        return Ok(());
    }
    let mode = match cfg.runtime.mode.as_str() {
        "auto" | "" => {
            if req.device_spec().is_some_and(|s| {
                !s.is_empty() && s.split(',').all(|d| d.contains('/') && d.contains('='))
            }) {
                "cdi"
            } else {
                "legacy"
            }
        }
        other => other,
    };
    if mode != "legacy" {
        bail!(
            "invoking the NVIDIA Container Runtime Hook directly (e.g. specifying the docker --gpus flag) is not supported. Please use the NVIDIA Container Runtime (e.g. specify the --runtime=nvidia flag) instead"
        );
    }
    Ok(())
}

/// `[nvidia-container-runtime.modes.legacy] cuda-compat-mode` as the hook maps it (§4.3).
fn compat_mode(cfg: &Config) -> CompatMode {
    match cfg.runtime.modes.legacy.cuda_compat_mode.as_str() {
        "ldconfig" => CompatMode::Ldconfig,
        "mount" => CompatMode::Mount,
        "disabled" | "hook" => CompatMode::Disabled,
        _ if cfg.features.allow_cuda_compat_libs_from_container == Some(true) => CompatMode::Mount,
        _ => CompatMode::Disabled,
    }
}

/// `root.path`, relative to the bundle (upstream used the hook's cwd, which runc happens to set
/// to the bundle; joining is what it meant).
fn rootfs_path(bundle: &Path, root: &str) -> PathBuf {
    let p = Path::new(root);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        bundle.join(p)
    }
}

/// `[nvidia-container-cli] path` set: exec that program with upstream's argument order.
fn exec_cli(cfg: &Config, flags: &Flags, req: &Request, pid: i32, rootfs: &Path) -> Result<()> {
    if let Some(g) = req.gated.first() {
        // nvidia-container-cli has no flag for them: refuse rather than start without them.
        bail!(
            "{}=enabled needs nvbox's own configure, but [nvidia-container-cli] path = {:?} is set",
            g.env(),
            cfg.cli.path
        );
    }
    let c = &cfg.cli;
    let mut args: Vec<String> = Vec::new();
    if !c.root.is_empty() {
        args.push(format!("--root={}", c.root));
    }
    if c.load_kmods {
        args.push("--load-kmods".into());
    }
    if cfg.features.disable_imex_channel_creation == Some(true) {
        args.push("--no-create-imex-channels".into());
    }
    if c.no_pivot {
        args.push("--no-pivot".into());
    }
    if flags.debug {
        args.push("--debug=/dev/stderr".into());
    } else if !c.debug.is_empty() {
        args.push(format!("--debug={}", c.debug));
    }
    if !c.ldcache.is_empty() {
        args.push(format!("--ldcache={}", c.ldcache));
    }
    if !c.user.is_empty() {
        args.push(format!("--user={}", c.user));
    }
    args.push("configure".into());
    let mode = match compat_mode(cfg) {
        CompatMode::Ldconfig => "ldconfig",
        CompatMode::Mount => "mount",
        CompatMode::Disabled => "disabled",
    };
    args.push(format!("--cuda-compat-mode={mode}"));
    if !c.ldconfig.is_empty() {
        args.push(format!("--ldconfig={}", c.ldconfig));
    }
    if c.no_cgroups {
        args.push("--no-cgroups".into());
    }
    if let Some(d) = req.device_spec().filter(|s| !s.is_empty()) {
        args.push(format!("--device={d}"));
    }
    if let Some(m) = &req.mig_config {
        args.push(format!("--mig-config={m}"));
    }
    if let Some(m) = &req.mig_monitor {
        args.push(format!("--mig-monitor={m}"));
    }
    if !req.imex_channels.is_empty() {
        let ids: Vec<String> = req.imex_channels.iter().map(u32::to_string).collect();
        args.push(format!("--imex-channel={}", ids.join(",")));
    }
    for cap in req.caps.names() {
        args.push(format!("--{cap}"));
    }
    for r in &req.requirements {
        args.push(format!("--require={r}"));
    }
    args.push(format!("--pid={pid}"));
    args.push(rootfs.display().to_string());
    let mut cmd = std::process::Command::new(&c.path);
    cmd.args(&args)
        .envs(c.environment.iter().filter_map(|kv| kv.split_once('=')));
    let err = cmd.exec();
    Err(anyhow!("exec {}: {err}", c.path))
}
