//! `nvidia-ctk runtime`: only `configure` (reference nvidia-container-toolkit.md §6), which adds
//! the NVIDIA runtime to Docker, containerd or CRI-O, or writes an OCI hook file; `--remove`
//! undoes it. It never restarts a daemon.
#![allow(dead_code)]

mod configure;
mod flags;

use std::ffi::OsString;
use std::process::ExitCode;

use anyhow::Result;

use super::Global;

const USAGE: &str = "NAME:
   nvidia-ctk runtime - A collection of runtime-related utilities for the NVIDIA Container Toolkit

USAGE:
   nvidia-ctk runtime command [command options]

COMMANDS:
   configure  Add a runtime to the specified container engine
";

pub fn run(g: &Global, args: Vec<OsString>) -> Result<ExitCode> {
    let mut rest = args.into_iter();
    let Some(cmd) = rest.next() else {
        print!("{USAGE}");
        return Ok(ExitCode::SUCCESS);
    };
    match cmd.to_string_lossy().as_ref() {
        "configure" => configure::run(g, rest.collect()),
        "--help" | "-h" | "help" => {
            print!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        other => {
            eprintln!("nvidia-ctk: No help topic for '{other}'");
            eprint!("{USAGE}");
            Ok(ExitCode::from(3))
        }
    }
}

/// logrus's text layout, which scripts around upstream grep: `LEVEL[secs] message` on stderr.
fn log(g: &Global, level: &str, msg: &str) {
    if g.quiet || (level == "DEBU" && !g.debug) {
        return;
    }
    eprintln!("{level}[0000] {msg}");
}

fn info(g: &Global, msg: &str) {
    log(g, "INFO", msg);
}

fn warn(g: &Global, msg: &str) {
    log(g, "WARN", msg);
}
