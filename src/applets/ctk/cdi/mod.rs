//! `nvidia-ctk cdi generate | list | transform root` (reference nvidia-container-toolkit.md
//! §7). Flags take `--flag value` or `--flag=value`, and most have an environment variable.

pub(crate) mod generate;
pub(crate) mod transform;

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};

use super::Global;
use crate::config::Config;
use crate::spec::cdi::{self, Spec};

const USAGE: &str = "NAME:
   nvidia-ctk cdi - Provide tools for interacting with Container Device Interface specifications

USAGE:
   nvidia-ctk cdi command [command options]

COMMANDS:
   generate   Generate CDI specifications for use with CDI-enabled runtimes
   transform  Apply a transform to a CDI specification
   list       List the available CDI devices
";

pub fn run(g: &Global, args: Vec<OsString>) -> Result<ExitCode> {
    let mut args = args.into_iter();
    let Some(command) = args.next() else {
        print!("{USAGE}");
        return Ok(ExitCode::SUCCESS);
    };
    let rest: Vec<OsString> = args.collect();
    match command.to_string_lossy().as_ref() {
        "generate" => generate::run(g, rest),
        "list" => list(g, rest),
        "transform" => transform::run(g, rest),
        "--help" | "-h" | "help" => {
            print!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        other => bail!("no such command: cdi {other}"),
    }
}

/// The config of `--config` / `NVIDIA_CTK_CONFIG_FILE_PATH`, else the usual places.
pub fn load_config(g: &Global) -> Result<Config> {
    match &g.config {
        Some(p) => Config::load_from(p, false),
        None => Ok(Config::load()?.0),
    }
}

/// Stderr logging as upstream's CLI does it: info is hidden by `--quiet`.
pub fn log_info(g: &Global, msg: &str) {
    if !g.quiet {
        eprintln!("level=info msg={msg:?}");
    }
}

pub fn log_warn(g: &Global, msg: &str) {
    if !g.quiet {
        eprintln!("level=warning msg={msg:?}");
    }
}

/// One flag of a subcommand: its name (without dashes) and inline value, if any.
pub struct Flag {
    pub name: String,
    pub inline: Option<String>,
}

/// Split `args` into flags; a non-flag argument is an error (no command takes positionals).
pub fn next_flag(args: &mut std::vec::IntoIter<OsString>) -> Result<Option<Flag>> {
    let Some(arg) = args.next() else {
        return Ok(None);
    };
    let s = arg
        .into_string()
        .map_err(|a| anyhow!("invalid argument {a:?}: not UTF-8"))?;
    let Some(body) = s.strip_prefix("--").or_else(|| s.strip_prefix('-')) else {
        bail!("unexpected argument {s:?}");
    };
    let (name, inline) = match body.split_once('=') {
        Some((n, v)) => (n.to_owned(), Some(v.to_owned())),
        None => (body.to_owned(), None),
    };
    Ok(Some(Flag { name, inline }))
}

impl Flag {
    pub fn value(self, args: &mut std::vec::IntoIter<OsString>) -> Result<String> {
        if let Some(v) = self.inline {
            return Ok(v);
        }
        args.next()
            .and_then(|v| v.into_string().ok())
            .ok_or_else(|| anyhow!("flag needs an argument: -{}", self.name))
    }

    /// A boolean flag: bare means true, `=false` turns it off.
    pub fn boolean(&self) -> Result<bool> {
        match self.inline.as_deref() {
            None => Ok(true),
            Some(v) => parse_bool(v)
                .ok_or_else(|| anyhow!("invalid boolean value {v:?} for -{}", self.name)),
        }
    }
}

pub fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// A list flag's environment variable: comma-separated.
pub fn env_list(key: &str) -> Vec<String> {
    std::env::var(key)
        .map(|v| split_list(&v))
        .unwrap_or_default()
}

pub fn split_list(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Yaml,
    Json,
}

impl Format {
    pub fn parse(s: &str) -> Result<Format> {
        match s.to_ascii_lowercase().as_str() {
            "yaml" => Ok(Format::Yaml),
            "json" => Ok(Format::Json),
            _ => bail!("invalid output format: {s}"),
        }
    }

    pub fn from_path(p: &Path) -> Option<Format> {
        match p.extension()?.to_str()? {
            "json" => Some(Format::Json),
            "yaml" | "yml" => Some(Format::Yaml),
            _ => None,
        }
    }

    fn ext(self) -> &'static str {
        match self {
            Format::Yaml => "yaml",
            Format::Json => "json",
        }
    }
}

/// The spec as upstream writes it: YAML after a document marker, or compact JSON.
pub fn render_spec(spec: &Spec, format: Format) -> Result<Vec<u8>> {
    Ok(match format {
        Format::Yaml => {
            let body = serde_yaml_ng::to_string(spec).context("failed to marshal CDI spec")?;
            format!("---\n{body}").into_bytes()
        }
        Format::Json => {
            let mut v = serde_json::to_vec(spec).context("failed to marshal CDI spec")?;
            v.push(b'\n');
            v
        }
    })
}

/// Write to stdout, or validated and atomically to `path` (a sibling temp file renamed over it,
/// mode 0644); a path without a spec extension gets the format's.
pub fn write_spec(spec: &Spec, format: Format, path: Option<&Path>) -> Result<()> {
    let bytes = render_spec(spec, format)?;
    let Some(path) = path else {
        std::io::stdout()
            .write_all(&bytes)
            .context("failed to write CDI spec")?;
        return Ok(());
    };
    let path: PathBuf = if Format::from_path(path).is_some() {
        path.to_path_buf()
    } else {
        let mut p = path.as_os_str().to_owned();
        p.push(".");
        p.push(format.ext());
        PathBuf::from(p)
    };
    // The spec in memory, not the rendered bytes parsed back: the round trip is a unit test
    // (spec/generate_tests.rs), and re-parsing YAML was a third of `cdi generate`'s time.
    if !spec.devices.is_empty() {
        spec.validate()
            .map_err(|e| anyhow!("invalid CDI Spec \"{}\": {e:#}", path.display()))
            .context("failed to validate CDI spec")?;
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("failed to create directory {}", dir.display()))?;
    let tmp = dir.join(format!("spec.{}.tmp", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(&bytes)?;
        f.set_permissions(std::fs::Permissions::from_mode(0o644))?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        anyhow!("failed to write CDI spec {}: {e}", path.display())
    })
}

/// `cdi list [--spec-dir DIR]…`: every resolvable device, sorted, one a line.
fn list(g: &Global, args: Vec<OsString>) -> Result<ExitCode> {
    let mut args = args.into_iter();
    let mut dirs: Vec<String> = Vec::new();
    while let Some(flag) = next_flag(&mut args)? {
        match flag.name.as_str() {
            "spec-dir" => dirs.extend(split_list(&flag.value(&mut args)?)),
            "help" | "h" => {
                println!("usage: nvidia-ctk cdi list [--spec-dir DIR]…");
                return Ok(ExitCode::SUCCESS);
            }
            other => bail!("flag provided but not defined: -{other}"),
        }
    }
    if dirs.is_empty() {
        dirs = match std::env::var("NVIDIA_CTK_CDI_SPEC_DIRS") {
            Ok(v) => split_list(&v),
            Err(_) => cdi::DEFAULT_SPEC_DIRS
                .iter()
                .map(|s| s.to_string())
                .collect(),
        };
    }
    if dirs.is_empty() {
        bail!("at least one CDI spec directory must be specified");
    }
    let dirs: Vec<PathBuf> = dirs.into_iter().map(PathBuf::from).collect();
    let registry = cdi::load_registry(&dirs).context("failed to create CDI cache")?;
    if !registry.errors().is_empty() {
        log_warn(g, "The following registry errors were reported:");
        for e in registry.errors() {
            log_warn(g, &format!("{}: {}", e.path.display(), e.message));
        }
    }
    let names = registry.device_names();
    log_info(g, &format!("Found {} CDI devices", names.len()));
    let mut out = std::io::stdout().lock();
    for n in names {
        writeln!(out, "{n}").context("failed to write the device list")?;
    }
    Ok(ExitCode::SUCCESS)
}
