//! `nvbox mock --wsl`: a WSL2 distribution's view of an NVIDIA GPU. No `/dev/nvidia*`, no
//! `/proc/driver/nvidia`: the kernel offers `/dev/dxg` (a misc device), and Windows maps
//! `C:\Windows\System32\lxss\lib` at `/usr/lib/wsl/lib` and its driver store at
//! `/usr/lib/wsl/drivers` (drvfs: regular files only, no symlinks, hence ldconfig's famous
//! "libcuda.so.1 is not a symbolic link"). The store holds the NVIDIA driver in use, an older
//! NVIDIA driver left behind by an upgrade, and another adapter's driver (an Intel iGPU), so
//! discovery must choose. Files have their real names and about their real sizes (sparse).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::sys::stat::{Mode, SFlag, makedev, mknod};

use super::Spec;
use super::elf::{Layout, Machine, library_image};
use super::host::write;

/// `/dev/dxg`: misc major 10 with the minor the misc driver handed out (dynamic).
pub const DXG_MAJOR: u64 = 10;
pub const DXG_MINOR: u64 = 62;
pub const DEFAULT_WSL_DRIVER_VERSION: &str = "560.94";
/// The store directory names: `<inf>_amd64_<16 hex>` as Windows' driver store names them.
pub const NVIDIA_STORE: &str = "nv_dispi.inf_amd64_7e5fd280efaa5445";
pub const OLD_NVIDIA_STORE: &str = "nv_dispi.inf_amd64_0f2c31b9d6a4e8c1";
const INTEL_STORE: &str = "iigd_dch.inf_amd64_1c3e0a1f2e8a6f7d";
const OLD_DRIVER_VERSION: &str = "552.22";

const KIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;

/// `/usr/lib/wsl/lib`: (name, soname, size). The loaders here find the store through dxcore.
const LXSS_LIBS: &[(&str, Option<&str>, u64)] = &[
    ("libcuda.so", Some("libcuda.so.1"), 163 * KIB),
    ("libcuda.so.1", Some("libcuda.so.1"), 163 * KIB),
    ("libcuda.so.1.1", Some("libcuda.so.1"), 163 * KIB),
    ("libd3d12.so", None, 5779 * KIB),
    ("libd3d12core.so", None, 2245 * KIB),
    ("libdxcore.so", None, 829 * KIB),
    ("libnvcuvid.so.1", Some("libnvcuvid.so.1"), 11 * MIB),
    (
        "libnvidia-encode.so.1",
        Some("libnvidia-encode.so.1"),
        551 * KIB,
    ),
    ("libnvidia-ml.so.1", Some("libnvidia-ml.so.1"), 235 * KIB),
    (
        "libnvidia-opticalflow.so.1",
        Some("libnvidia-opticalflow.so.1"),
        67 * KIB,
    ),
    ("libnvdxgdmal.so.1", Some("libnvdxgdmal.so.1"), 68 * KIB),
    ("libnvoptix.so.1", Some("libnvoptix.so.1"), 199 * KIB),
    ("libnvwgf2umx.so", None, 63 * MIB),
];

/// The NVIDIA store: (name, soname for ELF libraries, size).
const STORE_FILES: &[(&str, Option<&str>, u64)] = &[
    ("libcuda.so.1.1", Some("libcuda.so.1"), 25 * MIB),
    ("libcuda_loader.so", Some("libcuda_loader.so"), 179 * KIB),
    ("libnvidia-ml.so.1", Some("libnvidia-ml.so.1"), 2046 * KIB),
    (
        "libnvidia-ml_loader.so",
        Some("libnvidia-ml_loader.so"),
        158 * KIB,
    ),
    (
        "libnvidia-ptxjitcompiler.so.1",
        Some("libnvidia-ptxjitcompiler.so.1"),
        31 * MIB,
    ),
    ("libnvdxgdmal.so.1", Some("libnvdxgdmal.so.1"), 68 * KIB),
    (
        "libnvidia-gpucomp.so",
        Some("libnvidia-gpucomp.so"),
        60 * MIB,
    ),
    (
        "libnvoptix_loader.so.1",
        Some("libnvoptix_loader.so.1"),
        180 * KIB,
    ),
    ("libnvwgf2umx.so", Some("libnvwgf2umx.so"), 63 * MIB),
    ("nvcubins.bin", None, 74 * MIB),
    ("nvcuda64.dll", None, 29 * MIB),
    ("nvml.dll", None, 1918 * KIB),
    ("nvwgf2umx.dll", None, 86 * MIB),
    ("NvTelemetry64.cat", None, 12 * KIB),
];

pub fn write_wsl_host(spec: &Spec, notes: &mut Vec<String>) -> Result<()> {
    let dir = &spec.dir;
    write(
        &dir.join("proc/devices"),
        "Character devices:\n  1 mem\n  4 /dev/vc/0\n  4 tty\n  5 /dev/tty\n 10 misc\n 13 input\n 89 i2c\n128 ptm\n136 pts\n\nBlock devices:\n  8 sd\n",
    )?;
    write(
        &dir.join("proc/version"),
        "Linux version 5.15.167.4-microsoft-standard-WSL2 (root@f9c826d3017f) (gcc (GCC) 11.2.0, GNU ld (GNU Binutils) 2.37) #1 SMP Tue Nov 5 00:21:55 UTC 2024\n",
    )?;
    write_dxg(dir, notes)?;
    let lxss = dir.join("usr/lib/wsl/lib");
    for (name, soname, size) in LXSS_LIBS {
        write_file(&lxss.join(name), *soname, *size)?;
    }
    write_smi(&lxss.join("nvidia-smi"), &spec.driver_version)?;
    let stores = dir.join("usr/lib/wsl/drivers");
    for (store, version) in [
        (NVIDIA_STORE, spec.driver_version.as_str()),
        (OLD_NVIDIA_STORE, OLD_DRIVER_VERSION),
    ] {
        let at = stores.join(store);
        for (name, soname, size) in STORE_FILES {
            write_file(&at.join(name), *soname, *size)?;
        }
        write_smi(&at.join("nvidia-smi"), version)?;
        write(&at.join("nv_dispi.inf"), inf_text(version))?;
    }
    // The older store was installed first: its files are older, as on a real upgrade.
    let old = stores.join(OLD_NVIDIA_STORE).join("libcuda.so.1.1");
    let f = std::fs::File::options().write(true).open(&old)?;
    f.set_modified(
        std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_714_000_000),
    )?;
    let intel = stores.join(INTEL_STORE);
    write_file(
        &intel.join("libigd12umd64.so"),
        Some("libigd12umd64.so"),
        38 * MIB,
    )?;
    write_file(&intel.join("igd12umd64.dll"), None, 44 * MIB)?;
    write(
        &intel.join("iigd_dch.inf"),
        "[Version]\r\nDriverVer=06/18/2024,31.0.101.5590\r\n",
    )?;
    Ok(())
}

fn write_dxg(dir: &Path, notes: &mut Vec<String>) -> Result<()> {
    let path = dir.join("dev/dxg");
    std::fs::create_dir_all(dir.join("dev"))?;
    let _ = std::fs::remove_file(&path);
    match mknod(
        &path,
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o666),
        makedev(DXG_MAJOR, DXG_MINOR),
    ) {
        // The WSL kernel makes it world read-write, whatever the umask.
        Ok(()) => std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))
            .with_context(|| format!("chmod {}", path.display())),
        Err(Errno::EPERM) => {
            notes.push("not root: /dev/dxg not created, the host will not look like WSL2".into());
            Ok(())
        }
        Err(e) => Err(e).with_context(|| format!("mknod {}", path.display())),
    }
}

/// An ELF shared object with its soname, at its size with NVIDIA's layout (or an opaque blob
/// extended with a hole to `size`).
fn write_file(path: &Path, soname: Option<&str>, size: u64) -> Result<()> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    if name.contains(".so") {
        let soname = soname.unwrap_or(&name);
        let layout = Layout::like_nvidia(size);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        return library_image(
            native_machine(),
            soname,
            &["libc.so.6"],
            None,
            Some(&layout),
        )
        .write_to(path)
        .with_context(|| format!("write {}", path.display()));
    }
    write(path, format!("nvbox mock {name}\n"))?;
    let f = std::fs::File::options().write(true).open(path)?;
    f.set_len(size)
        .with_context(|| format!("extend {}", path.display()))
}

fn native_machine() -> Machine {
    if std::env::consts::ARCH == "aarch64" {
        Machine::Aarch64
    } else {
        Machine::X86_64
    }
}

/// A shell stand-in (a script cannot carry a hole): `nvidia-smi` reports the driver.
fn write_smi(path: &Path, version: &str) -> Result<()> {
    write(
        path,
        format!("#!/bin/sh\necho \"nvbox mock nvidia-smi (WSL2): driver {version}\"\n"),
    )?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// The store's `.inf` header, with Windows' form of the driver version: `560.94` is
/// `32.0.15.6094` (the last five digits of the last two fields).
pub fn inf_text(version: &str) -> String {
    let digits: String = version.chars().filter(char::is_ascii_digit).collect();
    let digits = format!("{digits:0>5}");
    let tail = &digits[digits.len() - 5..];
    let major = if tail < "55500" { 31 } else { 32 };
    format!(
        "; nv_dispi.inf\r\n[Version]\r\nSignature   = \"$Windows NT$\"\r\nClass       = Display\r\nProvider    = %NVIDIA%\r\nDriverVer   = 08/14/2024,{major}.0.1{}.{}\r\n",
        &tail[..1],
        &tail[1..]
    )
}
