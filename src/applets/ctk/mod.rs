//! `nvidia-ctk`: the admin CLI (reference nvidia-container-toolkit.md §6, §7, §9). Global flags
//! first (`--debug/-d`, `--quiet`, `--config FILE`), then a command group.

pub(crate) mod cdi;
pub(crate) mod config;
mod runtime;
pub(crate) mod system;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, bail};

use crate::{report, version};

pub const NAME: &str = "nvidia-ctk";

/// Flags before the command group.
#[derive(Debug, Default, Clone)]
pub struct Global {
    pub debug: bool,
    pub quiet: bool,
    /// `--config FILE` (env `NVIDIA_CTK_CONFIG_FILE_PATH` when unset).
    pub config: Option<PathBuf>,
}

const USAGE: &str = "NAME:
   NVIDIA Container Toolkit CLI - Tools to configure the NVIDIA Container Toolkit

USAGE:
   nvidia-ctk [global options] command [command options]

COMMANDS:
   hook     A collection of hooks that may be injected into an OCI spec
   runtime  A collection of runtime-related utilities for the NVIDIA Container Toolkit
   info     Provide information about the system
   cdi      Provide tools for interacting with Container Device Interface specifications
   system   A collection of system-related utilities for the NVIDIA Container Toolkit
   config   Interact with the NVIDIA Container Toolkit configuration

GLOBAL OPTIONS:
   --debug, -d     Enable debug-level logging (default: false) [$NVIDIA_CTK_DEBUG]
   --quiet         Suppress all output except for errors; overrides --debug (default: false) [$NVIDIA_CTK_QUIET]
   --config value  Specify the config file to use [$NVIDIA_CTK_CONFIG_FILE_PATH]
   --help, -h      show help
   --version, -v   print the version
";

pub fn main(_name: &str, args: Vec<OsString>) -> ExitCode {
    report::finish(NAME, run(args))
}

fn run(args: Vec<OsString>) -> Result<ExitCode> {
    let mut g = Global {
        debug: env_true("NVIDIA_CTK_DEBUG"),
        quiet: env_true("NVIDIA_CTK_QUIET"),
        config: std::env::var_os("NVIDIA_CTK_CONFIG_FILE_PATH").map(PathBuf::from),
    };
    let mut rest = args.into_iter();
    let command = loop {
        let Some(arg) = rest.next() else {
            print!("{USAGE}");
            return Ok(ExitCode::SUCCESS);
        };
        let s = arg.to_string_lossy().into_owned();
        let (flag, value) = match s.split_once('=') {
            Some((f, v)) => (f.to_owned(), Some(v.to_owned())),
            None => (s.clone(), None),
        };
        match flag.as_str() {
            "--debug" | "-d" => g.debug = value.is_none_or(|v| v == "true"),
            "--quiet" => g.quiet = value.is_none_or(|v| v == "true"),
            "--config" => {
                let v = match value {
                    Some(v) => v,
                    None => match rest.next() {
                        Some(v) => v.to_string_lossy().into_owned(),
                        None => bail!("flag needs an argument: --config"),
                    },
                };
                g.config = Some(PathBuf::from(v));
            }
            "--help" | "-h" => {
                print!("{USAGE}");
                return Ok(ExitCode::SUCCESS);
            }
            "--version" | "-v" => {
                println!("NVIDIA Container Toolkit CLI version {}", version::VERSION);
                println!("commit: {}", version::COMMIT);
                return Ok(ExitCode::SUCCESS);
            }
            _ if s.starts_with('-') => bail!("flag provided but not defined: {s}"),
            _ => break s,
        }
    };
    let rest: Vec<OsString> = rest.collect();
    match command.as_str() {
        "runtime" => runtime::run(&g, rest),
        "cdi" => cdi::run(&g, rest),
        "config" => config::run(&g, rest),
        "system" => system::run(&g, rest),
        "hook" => super::cdi_hook::run("nvidia-ctk hook", rest),
        "info" => Ok(ExitCode::SUCCESS),
        other => {
            eprintln!("{NAME}: No help topic for '{other}'");
            eprint!("{USAGE}");
            Ok(ExitCode::from(3))
        }
    }
}

fn env_true(key: &str) -> bool {
    std::env::var(key)
        .is_ok_and(|v| matches!(v.as_str(), "1" | "t" | "T" | "TRUE" | "true" | "True"))
}
