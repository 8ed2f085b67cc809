//! The kernel driver: its version file, the device nodes with the majors `/proc/devices` gives,
//! `ModifyDeviceFiles`, the GPUs it lists, and the persistence daemon's socket.

use super::{Context, Finding};
use crate::discover::csv::{list_csv_files, load_mount_specs};
use crate::discover::devices::{Majors, char_major, find_node};
use crate::discover::driver::{VERSION_FILE, read_driver};
use crate::discover::gpus::read_gpus;
use crate::discover::tegra::{is_tegra, read_tegra};
use crate::discover::under;
use crate::discover::wsl::{is_wsl, read_wsl};

const PARAMS: &str = "/proc/driver/nvidia/params";
const PERSISTENCED_SOCKET: &str = "/run/nvidia-persistenced/socket";
/// The GPU and control nodes' major is fixed by the driver (it is not dynamic like uvm's).
const NVIDIA_MAJOR: u32 = 195;

pub fn check(ctx: &Context, out: &mut Vec<Finding>) {
    let roots = &ctx.roots;
    if !roots.proc_path(VERSION_FILE).exists() && is_wsl(roots) {
        check_wsl(ctx, out);
        return;
    }
    if !roots.proc_path(VERSION_FILE).exists() && is_tegra(roots) {
        check_tegra(ctx, out);
        return;
    }
    match read_driver(roots) {
        Ok(d) => out.push(Finding::ok(
            "driver version",
            format!("{} reads {}", VERSION_FILE, d.version),
        )),
        Err(e) => {
            out.push(Finding::fail(
                "driver version",
                format!("{e:#}: no container can use a GPU until the kernel module is loaded"),
                "modprobe nvidia (install the NVIDIA driver first if the module is missing)",
            ));
            // Nodes, params and GPUs all come from the module: their failures would only
            // repeat this one.
            return;
        }
    }
    check_nodes(ctx, out);
    check_params(ctx, out);
    match read_gpus(roots) {
        Ok(gpus) if !gpus.is_empty() => out.push(Finding::ok(
            "GPUs",
            format!("{} listed in /proc/driver/nvidia/gpus", gpus.len()),
        )),
        Ok(_) => out.push(Finding::fail(
            "GPUs",
            "the driver lists no GPU in /proc/driver/nvidia/gpus: containers get none",
            "dmesg | grep NVRM (a GPU the driver could not initialise says why there)",
        )),
        Err(e) => out.push(Finding::fail("GPUs", format!("{e:#}"), "dmesg | grep NVRM")),
    }
    let socket = under(&roots.driver, PERSISTENCED_SOCKET);
    if std::fs::symlink_metadata(&socket).is_ok() {
        out.push(Finding::ok(
            "persistence daemon",
            format!("{} present", socket.display()),
        ));
    } else {
        out.push(Finding::warn(
            "persistence daemon",
            format!(
                "{} absent: without persistence mode every container start initialises the GPUs again (seconds each)",
                socket.display()
            ),
            "systemctl enable --now nvidia-persistenced",
        ));
    }
}

/// Tegra with nvgpu (Orin): no kernel module of nvbox's to check; the CSV files of
/// `modes.csv.mount-spec-path` say what containers get, so they must be there and parse.
fn check_tegra(ctx: &Context, out: &mut Vec<Finding>) {
    let tegra = read_tegra(&ctx.roots);
    let release = tegra
        .release
        .map(|(a, b)| format!("L4T R{a}.{b}"))
        .unwrap_or_else(|| "L4T release unknown".to_owned());
    let dir = crate::config::Config::load_from(&ctx.config_path, false)
        .unwrap_or_default()
        .runtime
        .modes
        .csv
        .mount_spec_path;
    let files = list_csv_files(std::path::Path::new(&dir), false);
    let fix = "reinstall nvidia-l4t-init and nvidia-container (they ship the CSV files)";
    match load_mount_specs(&files) {
        Ok((specs, _)) if !specs.is_empty() => out.push(Finding::ok(
            "Tegra driver",
            format!(
                "{release}, CUDA {}: {} entries in {} CSV file(s) of {dir}; containers get them in the csv, legacy and cdi modes (nvidia-ctk cdi generate --mode csv)",
                tegra.cuda.as_deref().unwrap_or("unknown"),
                specs.len(),
                files.len()
            ),
        )),
        Ok(_) => out.push(Finding::fail(
            "Tegra driver",
            format!("{release}: no CSV entries in {dir}: containers get no GPU"),
            fix,
        )),
        Err(e) => out.push(Finding::fail("Tegra driver", format!("{e:#}"), fix)),
    }
}

/// WSL2: the GPU driver is Windows' own; what matters is `/dev/dxg` and a driver store.
fn check_wsl(ctx: &Context, out: &mut Vec<Finding>) {
    match read_wsl(&ctx.roots) {
        Ok(Some(w)) => {
            let version = w.store.version.as_deref().unwrap_or("version unknown");
            out.push(Finding::ok(
                "WSL2 driver",
                format!(
                    "{} c {}:{} and the NVIDIA driver store {} ({version}): containers get them in the jit-cdi and cdi modes (nvidia-ctk cdi generate --mode wsl)",
                    w.dxg.path, w.dxg.major, w.dxg.minor, w.store.path
                ),
            ));
            if !w.missing.is_empty() {
                out.push(Finding::warn(
                    "WSL2 driver store",
                    format!("{} missing: CUDA may fail in containers", w.missing.join(", ")),
                    "reinstall the NVIDIA driver on Windows",
                ));
            }
        }
        Ok(None) => {}
        Err(e) => out.push(Finding::fail(
            "WSL2 driver",
            format!("{e:#}: no container can use the GPU"),
            "install the NVIDIA driver on Windows (WSL2 takes it from there; install no Linux driver in the distribution), then wsl --shutdown",
        )),
    }
}

/// Each expected node: present, a character device, with the major the driver registered.
fn check_nodes(ctx: &Context, out: &mut Vec<Finding>) {
    let roots = &ctx.roots;
    let devices_path = roots.proc_path("/proc/devices");
    let text = match std::fs::read_to_string(&devices_path) {
        Ok(t) => t,
        Err(e) => {
            out.push(Finding::fail(
                "device majors",
                format!("read {}: {e}", devices_path.display()),
                "mount -t proc proc /proc",
            ));
            return;
        }
    };
    let majors = Majors::parse(&text);
    let nvidia = char_major(&text, "nvidia-frontend")
        .or_else(|| char_major(&text, "nvidia"))
        .unwrap_or(NVIDIA_MAJOR);
    let control_fix = format!(
        "nvidia-ctk system create-device-nodes --control-devices{}",
        ctx.root_flags()
    );
    let mut nodes = vec![(
        "/dev/nvidiactl".to_string(),
        nvidia,
        255,
        control_fix.clone(),
    )];
    match majors.uvm {
        Some(uvm) => {
            nodes.push(("/dev/nvidia-uvm".into(), uvm, 0, control_fix.clone()));
            nodes.push(("/dev/nvidia-uvm-tools".into(), uvm, 1, control_fix.clone()));
        }
        None => out.push(Finding::fail(
            "nvidia-uvm",
            "module not loaded (no nvidia-uvm in /proc/devices): CUDA fails in every container",
            format!("modprobe nvidia-uvm && {control_fix}"),
        )),
    }
    for gpu in read_gpus(roots).unwrap_or_default() {
        nodes.push((
            format!("/dev/nvidia{}", gpu.minor),
            nvidia,
            gpu.minor,
            format!("nvidia-modprobe -c {}", gpu.minor),
        ));
    }
    let mut fine = 0;
    for (path, major, minor, fix) in nodes {
        let host = roots.dev_path(&path);
        match find_node(roots, &path) {
            Some(n) if n.major == major && n.minor == minor => fine += 1,
            Some(n) => out.push(Finding::fail(
                format!("device node {path}"),
                format!(
                    "{} is {}:{} but the driver registered {major}:{minor} (/proc/devices): containers get a device that is not the GPU's",
                    host.display(),
                    n.major,
                    n.minor
                ),
                fix,
            )),
            None => out.push(Finding::fail(
                format!("device node {path}"),
                format!(
                    "{} is missing or not a character device: containers cannot reach the GPU",
                    host.display()
                ),
                fix,
            )),
        }
    }
    if fine > 0 {
        out.push(Finding::ok(
            "device nodes",
            format!("{fine} present with the majors of /proc/devices"),
        ));
    }
}

/// `ModifyDeviceFiles: 0` means the driver leaves node creation to someone else.
fn check_params(ctx: &Context, out: &mut Vec<Finding>) {
    let path = ctx.roots.proc_path(PARAMS);
    let value = std::fs::read_to_string(&path).ok().and_then(|t| {
        t.lines()
            .find_map(|l| l.strip_prefix("ModifyDeviceFiles:"))
            .map(|v| v.trim().to_string())
    });
    match value.as_deref() {
        Some("1") => out.push(Finding::ok(
            "ModifyDeviceFiles",
            "1: the driver creates and repairs its device nodes",
        )),
        Some(v) => out.push(Finding::warn(
            "ModifyDeviceFiles",
            format!("{v}: the driver does not create device nodes; missing ones stay missing"),
            format!(
                "nvidia-ctk system create-device-nodes --control-devices{} (at boot)",
                ctx.root_flags()
            ),
        )),
        None => out.push(Finding::warn(
            "ModifyDeviceFiles",
            format!("not found in {}", path.display()),
            "check that the NVIDIA kernel module is loaded: lsmod | grep nvidia",
        )),
    }
}
