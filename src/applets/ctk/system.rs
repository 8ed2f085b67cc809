//! `nvidia-ctk system`: `create-dev-char-symlinks` (the `/dev/char/MAJ:MIN` links systemd's
//! device rules name, the fix for GPUs vanishing after `systemctl daemon-reload` with the
//! systemd cgroup driver) and `create-device-nodes` (mknod of the control nodes from
//! `/proc/devices`) — reference nvidia-container-toolkit.md §9.

use std::ffi::OsString;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Result, anyhow, bail};
use nix::sys::stat::{major, minor};

use super::Global;
use crate::discover::Roots;
use crate::discover::devices::Majors;

const HELP: &str = "NAME:
   nvidia-ctk system - A collection of system-related utilities for the NVIDIA Container Toolkit

USAGE:
   nvidia-ctk system create-dev-char-symlinks [--dev-char-path /dev/char] [--driver-root /]
        [--dev-root DIR] [--load-kernel-modules] [--create-device-nodes] [--dry-run]
   nvidia-ctk system create-device-nodes [--driver-root /] [--dev-root DIR] [--control-devices]
        [--load-kernel-modules] [--dry-run]
   nvidia-ctk system doctor [--json] [--root DIR] [--docker-config FILE] ... (see doctor --help)
   (--dev-root and --proc-root, nvbox's, point at a simulated host's /dev and /proc)
";

#[derive(Default)]
struct Args {
    dev_char_path: Option<PathBuf>,
    driver_root: Option<PathBuf>,
    dev_root: Option<PathBuf>,
    proc_root: Option<PathBuf>,
    load_kmods: bool,
    create_nodes: bool,
    control_devices: bool,
    dry_run: bool,
}

pub fn run(g: &Global, args: Vec<OsString>) -> Result<ExitCode> {
    if args.first().is_some_and(|a| a == "doctor") {
        // The global --config names the file the doctor checks; its own flag still wins.
        let mut rest: Vec<OsString> = args.into_iter().skip(1).collect();
        if let Some(c) = &g.config {
            rest.splice(0..0, [OsString::from("--config"), c.clone().into()]);
        }
        return crate::doctor::run(rest);
    }
    let args: Vec<String> = args
        .into_iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let Some((cmd, rest)) = args.split_first() else {
        print!("{HELP}");
        return Ok(ExitCode::SUCCESS);
    };
    let a = parse(rest)?;
    let roots = Roots::new(
        a.driver_root.as_deref(),
        a.dev_root.as_deref(),
        a.proc_root.as_deref(),
        None,
    );
    match cmd.as_str() {
        "create-dev-char-symlinks" => {
            if a.create_nodes {
                create_control_nodes(&roots, &a)?;
            }
            let dir = a
                .dev_char_path
                .clone()
                .unwrap_or_else(|| roots.dev_path("/dev/char"));
            create_char_links(&roots, &dir, a.dry_run)?;
        }
        "create-device-nodes" => {
            if !a.control_devices {
                bail!("no device nodes requested (use --control-devices)");
            }
            create_control_nodes(&roots, &a)?;
        }
        "--help" | "-h" | "help" => print!("{HELP}"),
        other => bail!("unknown system command {other:?}"),
    }
    Ok(ExitCode::SUCCESS)
}

fn parse(args: &[String]) -> Result<Args> {
    let mut a = Args::default();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) => (f, Some(v.to_owned())),
            None => (arg.as_str(), None),
        };
        let mut path = || -> Result<PathBuf> {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .map(PathBuf::from)
                .ok_or_else(|| anyhow!("flag needs an argument: {flag}"))
        };
        match flag.trim_start_matches('-') {
            "dev-char-path" => a.dev_char_path = Some(path()?),
            "driver-root" | "root" => a.driver_root = Some(path()?),
            "dev-root" => a.dev_root = Some(path()?),
            "proc-root" => a.proc_root = Some(path()?),
            "load-kernel-modules" => a.load_kmods = true,
            "create-device-nodes" => a.create_nodes = true,
            "control-devices" => a.control_devices = true,
            "dry-run" => a.dry_run = true,
            // Upstream's flag; every NVIDIA node present is linked either way.
            "create-all" => {}
            _ => bail!("flag provided but not defined: {arg}"),
        }
    }
    Ok(a)
}

/// `nvidiactl`, `nvidia-modeset`, `nvidia-uvm`, `nvidia-uvm-tools` under the dev root, with
/// the majors the driver registered.
fn create_control_nodes(roots: &Roots, a: &Args) -> Result<()> {
    if a.load_kmods {
        crate::kmods::load_kernel_modules(roots, &[]);
    }
    let majors = Majors::read(roots)?;
    let mut nodes = vec![
        ("/dev/nvidiactl", 195, 255),
        ("/dev/nvidia-modeset", 195, 254),
    ];
    if let Some(uvm) = majors.uvm {
        nodes.push(("/dev/nvidia-uvm", uvm, 0));
        nodes.push(("/dev/nvidia-uvm-tools", uvm, 1));
    }
    for (path, ma, mi) in nodes {
        let host = roots.dev_path(path);
        if a.dry_run {
            println!("would create {} ({ma}:{mi})", host.display());
            continue;
        }
        crate::kmods::ensure_node(roots, &host, ma, mi)
            .map_err(|e| anyhow!("create {}: {e}", host.display()))?;
    }
    Ok(())
}

/// A `MAJ:MIN -> ../<node>` link in `dir` for every NVIDIA character device under the dev
/// root's /dev (and its nvidia-caps directories). Correct links are kept, others replaced.
fn create_char_links(roots: &Roots, dir: &Path, dry_run: bool) -> Result<()> {
    let dev = roots.dev_path("/dev");
    let mut nodes = Vec::new();
    for sub in ["", "nvidia-caps", "nvidia-caps-imex-channels"] {
        let d = dev.join(sub);
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let is_char = e.file_type().is_ok_and(|t| t.is_char_device());
            if is_char && (sub.is_empty() && name.starts_with("nvidia") || !sub.is_empty()) {
                nodes.push(e.path());
            }
        }
    }
    nodes.sort();
    if !dry_run {
        std::fs::create_dir_all(dir).map_err(|e| anyhow!("create {}: {e}", dir.display()))?;
    }
    for node in nodes {
        let st = nix::sys::stat::stat(&node)?;
        let name = format!("{}:{}", major(st.st_rdev), minor(st.st_rdev));
        // udev's form, `../nvidia0`, when the links live in that /dev's own char directory.
        let target = match node.strip_prefix(&dev) {
            Ok(rel) if dir == dev.join("char") => Path::new("..").join(rel),
            _ => node.clone(),
        };
        let link = dir.join(&name);
        if std::fs::read_link(&link).is_ok_and(|t| t == target) {
            continue;
        }
        if dry_run {
            println!("would create {} -> {}", link.display(), target.display());
            continue;
        }
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&target, &link)
            .map_err(|e| anyhow!("symlink {}: {e}", link.display()))?;
    }
    Ok(())
}
