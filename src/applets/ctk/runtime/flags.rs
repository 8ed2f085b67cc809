//! `runtime configure` flags, urfave/cli style: `--flag value`, `--flag=value`, one or two
//! dashes, booleans optionally `=true|false`. Defaults and checks as upstream's validateFlags.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

use super::{Global, warn};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Docker,
    Containerd,
    Crio,
}

impl Engine {
    pub fn name(self) -> &'static str {
        match self {
            Engine::Docker => "docker",
            Engine::Containerd => "containerd",
            Engine::Crio => "crio",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    File,
    Command,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub engine: Engine,
    pub dry_run: bool,
    pub remove: bool,
    pub config: PathBuf,
    /// None: edit the top-level config in place (`--drop-in-config=""`, or Docker).
    pub drop_in: Option<PathBuf>,
    pub executable: Option<String>,
    pub source: Source,
    pub hook_mode: bool,
    pub hook_file: Option<PathBuf>,
    pub name: String,
    pub path: String,
    pub hook_path: String,
    pub set_as_default: bool,
    pub cdi: bool,
}

pub const HELP: &str = "NAME:
   nvidia-ctk runtime configure - Add a runtime to the specified container engine

USAGE:
   nvidia-ctk runtime configure [command options]

OPTIONS:
   --dry-run                          update the runtime configuration as required but don't write changes to disk (default: false)
   --runtime value                    the target runtime engine; one of [containerd, crio, docker] (default: \"docker\")
   --config value                     path to the config file for the target runtime
   --drop-in-config value             path to the NVIDIA-specific config file to create; \"\" edits the main config file
   --executable-path value            The path to the runtime executable. This is used to extract the current config
   --config-mode value                the config mode for runtimes that support multiple configuration mechanisms
   --config-source value              the source to retrieve the container runtime configuration; one of [command, file] (default: \"file\")
   --oci-hook-path value              the path to the OCI runtime hook to create if --config-mode=oci-hook is specified (default: STDOUT)
   --nvidia-runtime-name value        specify the name of the NVIDIA runtime that will be added (default: \"nvidia\")
   --nvidia-runtime-path value, --runtime-path value  specify the path to the NVIDIA runtime executable (default: \"nvidia-container-runtime\")
   --nvidia-runtime-hook-path value   specify the path to the NVIDIA Container Runtime hook executable (default: \"/usr/bin/nvidia-container-runtime-hook\")
   --nvidia-set-as-default, --set-as-default  set the NVIDIA runtime as the default runtime (default: false)
   --cdi.enabled, --cdi.enable, --enable-cdi  Enable CDI in the configured runtime (default: false)
   --remove                           remove the NVIDIA runtime instead (a default naming it reverts to runc) (default: false)
   --help, -h                         show help
";

/// Parsed flags before validation; None from `--help`.
struct Raw {
    dry_run: bool,
    remove: bool,
    runtime: String,
    config: Option<String>,
    drop_in: Option<String>,
    executable: Option<String>,
    mode: Option<String>,
    source: String,
    hook_file: Option<String>,
    name: String,
    path: String,
    hook_path: String,
    set_as_default: bool,
    cdi: bool,
}

fn parse_bool(flag: &str, v: Option<&str>) -> Result<bool> {
    match v {
        None => Ok(true),
        Some("1" | "t" | "T" | "true" | "TRUE" | "True") => Ok(true),
        Some("0" | "f" | "F" | "false" | "FALSE" | "False") => Ok(false),
        Some(other) => bail!("invalid value \"{other}\" for flag -{flag}: parse error"),
    }
}

fn parse_raw(args: Vec<OsString>) -> Result<Option<Raw>> {
    let mut r = Raw {
        dry_run: false,
        remove: false,
        runtime: "docker".into(),
        config: None,
        drop_in: None,
        executable: None,
        mode: None,
        source: "file".into(),
        hook_file: None,
        name: "nvidia".into(),
        path: "nvidia-container-runtime".into(),
        hook_path: "/usr/bin/nvidia-container-runtime-hook".into(),
        set_as_default: false,
        cdi: false,
    };
    let mut it = args.into_iter().map(|a| a.to_string_lossy().into_owned());
    while let Some(arg) = it.next() {
        let Some(body) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
            bail!("unexpected argument: {arg}");
        };
        let (flag, inline) = match body.split_once('=') {
            Some((f, v)) => (f.to_owned(), Some(v.to_owned())),
            None => (body.to_owned(), None),
        };
        let mut value = || -> Result<String> {
            match inline.clone().or_else(|| it.next()) {
                Some(v) => Ok(v),
                None => bail!("flag needs an argument: -{flag}"),
            }
        };
        match flag.as_str() {
            "help" | "h" => return Ok(None),
            "dry-run" => r.dry_run = parse_bool(&flag, inline.as_deref())?,
            "remove" => r.remove = parse_bool(&flag, inline.as_deref())?,
            "nvidia-set-as-default" | "set-as-default" => {
                r.set_as_default = parse_bool(&flag, inline.as_deref())?
            }
            "cdi.enabled" | "cdi.enable" | "enable-cdi" => {
                r.cdi = parse_bool(&flag, inline.as_deref())?
            }
            "runtime" => r.runtime = value()?,
            "config" => r.config = Some(value()?),
            "drop-in-config" => r.drop_in = Some(value()?),
            "executable-path" => r.executable = Some(value()?),
            "config-mode" => r.mode = Some(value()?),
            "config-source" => r.source = value()?,
            "oci-hook-path" => r.hook_file = Some(value()?),
            "nvidia-runtime-name" => r.name = value()?,
            "nvidia-runtime-path" | "runtime-path" => r.path = value()?,
            "nvidia-runtime-hook-path" => r.hook_path = value()?,
            _ => bail!("flag provided but not defined: -{flag}"),
        }
    }
    Ok(Some(r))
}

/// The validated options, or None when help was printed.
pub fn parse(g: &Global, args: Vec<OsString>) -> Result<Option<Options>> {
    let Some(mut r) = parse_raw(args)? else {
        print!("{HELP}");
        return Ok(None);
    };
    let hook_mode = matches!(r.mode.as_deref(), Some("oci-hook" | "hook"));
    if hook_mode {
        warn(
            g,
            &format!(
                "The {:?} config-mode is deprecated",
                r.mode.as_deref().unwrap_or("")
            ),
        );
        if !Path::new(&r.hook_path).is_absolute() {
            bail!(
                "the NVIDIA runtime hook path {:?} is not an absolute path",
                r.hook_path
            );
        }
    } else if let Some(m) = r.mode.as_deref()
        && !matches!(m, "" | "config-file" | "config")
    {
        warn(
            g,
            &format!("Ignoring unsupported config mode for {}: {m:?}", r.runtime),
        );
    }
    let engine = match r.runtime.as_str() {
        "docker" => Engine::Docker,
        "containerd" => Engine::Containerd,
        "crio" => Engine::Crio,
        other if !hook_mode => bail!("unrecognized runtime '{other}'"),
        _ => Engine::Docker,
    };
    if engine != Engine::Docker {
        if r.path == "nvidia-container-runtime" {
            r.path = "/usr/bin/nvidia-container-runtime".into();
        }
        if !hook_mode && !Path::new(&r.path).is_absolute() {
            bail!(
                "the NVIDIA runtime path {:?} is not an absolute path",
                r.path
            );
        }
    }
    if engine == Engine::Crio && r.cdi {
        warn(g, &format!("Ignoring cdi.enabled flag for {}", r.runtime));
        r.cdi = false;
    }
    if engine == Engine::Docker && r.executable.is_some() {
        warn(
            g,
            &format!(
                "Ignoring executable-path={:?} flag for {}",
                r.executable.take().unwrap_or_default(),
                r.runtime
            ),
        );
    }
    let mut source = match r.source.as_str() {
        "file" => Source::File,
        "command" => Source::Command,
        other => bail!("unrecognized Config Source: {other}"),
    };
    if engine == Engine::Docker && source == Source::Command {
        warn(
            g,
            "A command Config Source is not supported for docker; using file",
        );
        source = Source::File;
    }
    let config = PathBuf::from(r.config.unwrap_or_else(|| {
        match engine {
            Engine::Docker => "/etc/docker/daemon.json",
            Engine::Containerd => "/etc/containerd/config.toml",
            Engine::Crio => "/etc/crio/crio.conf",
        }
        .into()
    }));
    let drop_in = match (engine, r.drop_in) {
        (_, Some(d)) if d.is_empty() => None,
        (Engine::Docker, None) => None,
        (Engine::Docker, Some(_)) => bail!("runtime docker does not support drop-in configs"),
        (Engine::Containerd, None) => Some("/etc/containerd/conf.d/99-nvidia.toml".into()),
        (Engine::Crio, None) => Some("/etc/crio/crio.conf.d/99-nvidia.toml".into()),
        (_, Some(d)) => Some(d),
    };
    if let Some(d) = &drop_in
        && !Path::new(d).is_absolute()
    {
        bail!("the drop-in-config path {d:?} is not an absolute path");
    }
    // A drop-in that is the top-level file itself is the in-place edit, not a self-import.
    let drop_in = drop_in.map(PathBuf::from).filter(|d| *d != config);
    Ok(Some(Options {
        engine,
        dry_run: r.dry_run,
        remove: r.remove,
        config,
        drop_in,
        executable: r.executable,
        source,
        hook_mode,
        hook_file: r.hook_file.filter(|p| !p.is_empty()).map(PathBuf::from),
        name: r.name,
        path: r.path,
        hook_path: r.hook_path,
        set_as_default: r.set_as_default,
        cdi: r.cdi,
    }))
}
