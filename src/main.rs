//! nvbox: the NVIDIA Container Toolkit as one static multicall binary.
//!
//! The role is the basename of argv[0] (a leading `-` stripped, as login shells do), matched EXACTLY
//! against one table: applet names are prefixes of each other (`nvidia-container-runtime` and
//! `nvidia-container-runtime-hook`), so no prefix or suffix matching. `nvbox APPLET args…` works too.

#![deny(unsafe_code)]

use nvbox::{APPLETS, AppletMain, doctor, mock, report, version};

use std::ffi::OsString;
use std::process::ExitCode;

/// Commands reachable only as `nvbox COMMAND`: they are tools for the operator, not names an engine
/// calls, and names like `mock` must not land in /usr/bin.
const COMMANDS: &[(&str, AppletMain, &str)] = &[
    (
        "doctor",
        doctor::main,
        "check the host's GPU container set-up, with the fix for each problem",
    ),
    (
        "mock",
        mock::main,
        "write a simulated GPU host (procfs, sysfs, /dev, driver libraries, ld.so.cache)",
    ),
];

fn main() -> ExitCode {
    let mut args: Vec<OsString> = std::env::args_os().collect();
    if args.is_empty() {
        args.push(OsString::from("nvbox"));
    }
    let argv0 = args.remove(0);
    let name = applet_name(&argv0);
    if let Some(main) = find_applet(&name) {
        return main(&name, args);
    }
    if name != "nvbox" {
        return report::unknown_applet(&name);
    }
    run_nvbox(args)
}

/// The basename of argv[0], with the leading `-` a login shell adds stripped.
fn applet_name(argv0: &OsString) -> String {
    let path = std::path::Path::new(argv0);
    let base = path.file_name().unwrap_or(argv0.as_os_str());
    let base = base.to_string_lossy();
    base.strip_prefix('-').unwrap_or(&base).to_string()
}

/// Old names still answered but not installed: the toolkit image links `nvidia-toolkit`, which
/// GPU Operators before upstream 1.18 exec.
const ALIASES: &[(&str, AppletMain)] = &[("nvidia-toolkit", nvbox::applets::installer::main)];

fn find_applet(name: &str) -> Option<AppletMain> {
    APPLETS
        .iter()
        .chain(ALIASES)
        .find(|(n, _)| *n == name)
        .map(|(_, f)| *f)
}

fn find_command(name: &str) -> Option<AppletMain> {
    COMMANDS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, f, _)| *f)
}

fn run_nvbox(mut args: Vec<OsString>) -> ExitCode {
    let Some(first) = args.first().map(|a| a.to_string_lossy().into_owned()) else {
        eprint!("{}", nvbox_usage());
        return ExitCode::from(2);
    };
    match first.as_str() {
        "--list" | "-l" => {
            for (name, _) in APPLETS {
                println!("{name}");
            }
            ExitCode::SUCCESS
        }
        "--help" | "-h" | "help" => {
            print!("{}", nvbox_usage());
            ExitCode::SUCCESS
        }
        "--version" | "-V" => {
            println!("nvbox {}", version::describe());
            ExitCode::SUCCESS
        }
        applet => {
            args.remove(0);
            match find_applet(applet).or_else(|| find_command(applet)) {
                Some(main) => main(applet, args),
                None => report::unknown_applet(applet),
            }
        }
    }
}

fn nvbox_usage() -> String {
    let mut s = String::from(
        "Usage: nvbox APPLET [ARGS...]\n       APPLET [ARGS...]        (through a symlink named after the applet)\n       nvbox --list | --help | --version\n\nApplets:\n",
    );
    for (name, _) in APPLETS {
        s.push_str(&format!("  {name}\n"));
    }
    s.push_str("\nCommands (only as `nvbox COMMAND`):\n");
    for (name, _, what) in COMMANDS {
        s.push_str(&format!("  {name:<22} {what}\n"));
    }
    s.push_str("\nEvery applet and command takes --help and --version.\n");
    s
}
