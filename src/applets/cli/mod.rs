//! `nvidia-container-cli`: libnvidia-container's command line. Global options come before the
//! command word and command options after it, as with GNU argp (reference libnvidia-container.md §1).

pub mod configure;
mod info;
mod list;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::discover::gpus::Gpu;
use anyhow::{Context, Result, anyhow, bail};
use lexopt::prelude::*;

use crate::config::Config;
use crate::discover::Roots;
use crate::{report, version};

pub const NAME: &str = "nvidia-container-cli";

/// Options before the command word.
#[derive(Debug, Default)]
pub struct Global {
    pub root: Option<PathBuf>,
    pub dev_root: Option<PathBuf>,
    pub proc_root: Option<PathBuf>,
    pub sys_root: Option<PathBuf>,
    pub ldcache: Option<String>,
    pub debug: Option<String>,
    pub user: Option<String>,
    pub load_kmods: bool,
    pub no_pivot: bool,
    pub no_create_imex_channels: bool,
    /// The config already loaded by the caller (the hook's `-config FILE`).
    pub config: Option<Config>,
}

pub fn main(_name: &str, args: Vec<OsString>) -> ExitCode {
    report::finish(NAME, run(args))
}

fn run(args: Vec<OsString>) -> Result<ExitCode> {
    let mut parser = lexopt::Parser::from_args(args);
    let mut g = Global::default();
    let command = loop {
        let Some(arg) = parser.next().map_err(input_error)? else {
            eprint!("{USAGE}");
            return Ok(ExitCode::FAILURE);
        };
        match arg {
            Short('r') | Long("root") => g.root = Some(parser.value().map_err(input_error)?.into()),
            Long("dev-root") => g.dev_root = Some(parser.value().map_err(input_error)?.into()),
            Long("proc-root") => g.proc_root = Some(parser.value().map_err(input_error)?.into()),
            Long("sys-root") => g.sys_root = Some(parser.value().map_err(input_error)?.into()),
            Short('l') | Long("ldcache") => {
                g.ldcache = Some(string(parser.value().map_err(input_error)?)?)
            }
            Short('d') | Long("debug") => {
                g.debug = Some(string(parser.value().map_err(input_error)?)?)
            }
            Short('u') | Long("user") => {
                g.user = Some(match parser.optional_value() {
                    Some(v) => string(v)?,
                    None => String::new(),
                })
            }
            Short('k') | Long("load-kmods") => g.load_kmods = true,
            Short('n') | Long("no-pivot") => g.no_pivot = true,
            Long("no-create-imex-channels") => g.no_create_imex_channels = true,
            Short('h') | Short('?') | Long("help") => {
                print!("{USAGE}{HELP}");
                return Ok(ExitCode::SUCCESS);
            }
            Long("usage") => {
                print!("{USAGE}");
                return Ok(ExitCode::SUCCESS);
            }
            Short('V') | Long("version") => {
                print_version();
                return Ok(ExitCode::SUCCESS);
            }
            Value(cmd) => break string(cmd)?,
            other => return Err(input_error(other.unexpected())),
        }
    };
    let rest: Vec<OsString> = parser.raw_args()?.collect();
    if let Some(path) = &g.debug {
        crate::log::open(path).map_err(|e| anyhow!("input error: open {path}: {e}"))?;
    }
    if let Some(user) = &g.user {
        parse_user(user).map_err(|e| anyhow!("input error: {e}"))?;
    }
    if matches!(command.as_str(), "info" | "list") {
        // As upstream: a root caller first gives up what discovery does not need.
        crate::privilege::restrict(crate::privilege::Role::Query {
            kmods: g.load_kmods,
        })?;
    }
    match command.as_str() {
        "info" => info::run(&g, rest),
        "list" => list::run(&g, rest),
        "configure" => configure::run(&g, rest),
        other => {
            eprintln!("{NAME}: unknown command '{other}'");
            eprint!("{USAGE}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// The roots, after `--load-kmods` has loaded the modules and created the nodes there; and the
/// GPUs `--load-kmods` read, when loading changed nothing that could alter them (reading them
/// twice was a third of discovery's syscalls).
pub fn prepare_host(g: &Global) -> Result<(Roots, Option<Vec<Gpu>>)> {
    let roots = roots(g)?;
    if !g.load_kmods {
        return Ok((roots, None));
    }
    let gpus = crate::discover::gpus::read_gpus(&roots).ok();
    let minors: Vec<u32> = gpus.iter().flatten().map(|g| g.minor).collect();
    crate::privilege::enter(crate::privilege::Phase::Kmods);
    let loaded = crate::kmods::load_kernel_modules(&roots, &minors);
    crate::privilege::modules_loaded();
    Ok((roots, gpus.filter(|_| !loaded)))
}

/// Roots from the flags, then config.toml (`[nvidia-container-cli] root`, `[nvbox] *-root`), so
/// that the config `nvbox mock` prints is enough to point every applet at a simulated host.
pub fn roots(g: &Global) -> Result<Roots> {
    let config = config(g)?;
    let cfg_root = Some(PathBuf::from(&config.cli.root)).filter(|p| !p.as_os_str().is_empty());
    Ok(Roots::new(
        g.root.as_deref().or(cfg_root.as_deref()),
        g.dev_root.as_deref().or(config.nvbox.dev_root.as_deref()),
        g.proc_root.as_deref().or(config.nvbox.proc_root.as_deref()),
        g.sys_root.as_deref().or(config.nvbox.sys_root.as_deref()),
    ))
}

/// The config: the caller's, or loaded from the usual places.
pub fn config(g: &Global) -> Result<Config> {
    match &g.config {
        Some(c) => Ok(c.clone()),
        None => Ok(Config::load().context("initialization error")?.0),
    }
}

/// Repeated list options accumulate, joined with `,`.
pub fn append(slot: &mut Option<String>, v: String) {
    match slot {
        Some(s) => {
            s.push(',');
            s.push_str(&v);
        }
        None => *slot = Some(v),
    }
}

/// Option-parse failures are "input error"s, as upstream prints them.
pub fn input_error(e: lexopt::Error) -> anyhow::Error {
    anyhow!("input error: {e}")
}

pub fn string(v: OsString) -> Result<String> {
    v.into_string()
        .map_err(|v| anyhow!("input error: {v:?} is not valid UTF-8"))
}

/// `UID[:GID]` with numbers or names; names come from the driver-independent /etc/passwd and
/// /etc/group files (a static binary has no NSS). Returns the ids it names.
pub fn parse_user(spec: &str) -> Result<Option<(u32, u32)>> {
    if spec.is_empty() {
        return Ok(None);
    }
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let (uid, primary_gid) = match user.parse::<u32>() {
        Ok(uid) => (uid, None),
        Err(_) => {
            let (uid, gid) = lookup_passwd(user).ok_or_else(|| anyhow!("invalid user: {user}"))?;
            (uid, Some(gid))
        }
    };
    let gid = match group {
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => lookup_group(g).ok_or_else(|| anyhow!("invalid group: {g}"))?,
        },
        None => primary_gid.unwrap_or(uid),
    };
    Ok(Some((uid, gid)))
}

fn lookup_passwd(name: &str) -> Option<(u32, u32)> {
    let text = std::fs::read_to_string("/etc/passwd").ok()?;
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 4 && f[0] == name).then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
    })
}

fn lookup_group(name: &str) -> Option<u32> {
    let text = std::fs::read_to_string("/etc/group").ok()?;
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 3 && f[0] == name).then(|| f[2].parse().ok())?
    })
}

fn print_version() {
    println!("cli-version: {}", version::VERSION);
    println!("lib-version: {}", version::VERSION);
    println!("build date: {}", version::BUILD_DATE);
    println!("build revision: {}", version::COMMIT);
    println!("build compiler: {}", version::COMPILER);
    println!("build platform: {}", std::env::consts::ARCH);
    println!("build flags: static-pie, no NVML (nvbox)");
}

/// Commands take `--help` like the global parser does.
pub fn command_help(text: &str) -> Result<ExitCode> {
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}

pub fn reject_positional(v: OsString) -> Result<()> {
    bail!("input error: unexpected argument {:?}", v.to_string_lossy())
}

const USAGE: &str = "Usage: nvidia-container-cli [OPTION...] info|list|configure [OPTION...]\n";

const HELP: &str = "
Command line utility for manipulating NVIDIA GPU containers (nvbox implementation).

 Commands:
  info       Report information about the driver and devices
  list       List driver components
  configure  Configure a container with GPU support

 Global options:
  -d, --debug=FILE           Log debug information to FILE
  -k, --load-kmods           Load kernel modules and create device nodes
  -l, --ldcache=FILE         Path to the system's DSO cache, inside the root
                             (default /etc/ld.so.cache)
  -n, --no-pivot             Do not use pivot_root
      --no-create-imex-channels
                             Do not create IMEX channel device nodes
  -r, --root=PATH            Path to the driver root directory (default /)
      --dev-root=PATH        Where /dev/nvidia* is read (default: the driver
                             root if it has dev/nvidiactl, else /)
      --proc-root=PATH       Where /proc/driver/nvidia is read (default /)
      --sys-root=PATH        Where /sys/bus/pci is read (default /)
  -u, --user[=UID[:GID]]     User and group to use for privilege separation
  -?, -h, --help             Give this help list
      --usage                Give a short usage message
  -V, --version              Print program version

Roots not given as flags come from config.toml ([nvidia-container-cli] root,
[nvbox] dev-root, proc-root, sys-root).
Run 'nvidia-container-cli COMMAND --help' for a command's options.
";
