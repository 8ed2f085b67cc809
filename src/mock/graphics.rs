//! `--graphics`: what a host with nvidia-drm loaded and the full driver package installed has
//! beyond a headless compute node — each GPU's DRM card and render nodes (in sysfs and /dev/dri,
//! with udev's by-path links, modes and groups), the Vulkan, EGL, GLVND and OpenCL loader files,
//! OptiX's data file, the X.Org driver modules and the EGL external-platform libraries. File
//! places and contents follow the 535 driver's `.run` installer and Debian packages.

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::sys::stat::{Mode, SFlag, makedev, mknod};
use nix::unistd::{Gid, Uid, chown};

use super::Spec;
use super::elf::{Layout, Machine, library_image};
use super::host::{MockGpu, write};

/// The DRM major (fixed in the kernel).
pub const DRM_MAJOR: u32 = 226;
/// udev's groups on Debian: `video` is fixed at 44; `render` is a dynamic system group.
pub const VIDEO_GID: u32 = 44;
pub const RENDER_GID: u32 = 105;
/// The BMC's display controller (ASPEED AST2600 on a DGX) comes first and holds card0.
const BMC_BUS: &str = "0000:03:00.0";

/// card N+1 and renderD 128+N for GPU N: the BMC takes card0 (it has no render node).
pub fn drm_names(gpu: usize) -> (String, String) {
    (format!("card{}", gpu + 1), format!("renderD{}", 128 + gpu))
}

pub fn write_graphics(spec: &Spec, gpus: &[MockGpu], notes: &mut Vec<String>) -> Result<()> {
    write_drm(spec, gpus, notes)?;
    if spec.driver_files {
        write_configs(spec)?;
        write_libraries(spec)?;
    }
    Ok(())
}

fn write_drm(spec: &Spec, gpus: &[MockGpu], notes: &mut Vec<String>) -> Result<()> {
    let sys = spec.dir.join("sys/bus/pci/devices");
    let by_path = spec.dir.join("dev/dri/by-path");
    std::fs::create_dir_all(&by_path)?;
    // (name, minor, group, mode, pci bus, kind)
    let mut nodes: Vec<(String, u32, u32, u32, String, &str)> =
        vec![("card0".into(), 0, VIDEO_GID, 0o660, BMC_BUS.into(), "card")];
    for (i, gpu) in gpus.iter().enumerate() {
        let (card, render) = drm_names(i);
        let bus = gpu.pci_name();
        for (name, minor) in [(&card, i as u32 + 1), (&render, 128 + i as u32)] {
            // The kernel's class device: a directory whose `dev` names the node.
            let dir = sys.join(&bus).join("drm").join(name);
            write(&dir.join("dev"), format!("{DRM_MAJOR}:{minor}\n"))?;
            write(
                &dir.join("uevent"),
                format!(
                    "MAJOR={DRM_MAJOR}\nMINOR={minor}\nDEVNAME=dri/{name}\nDEVTYPE=drm_minor\n"
                ),
            )?;
        }
        nodes.push((card, i as u32 + 1, VIDEO_GID, 0o660, bus.clone(), "card"));
        nodes.push((render, 128 + i as u32, RENDER_GID, 0o666, bus, "render"));
    }
    let mut denied = 0;
    for (name, minor, gid, mode, bus, kind) in &nodes {
        let path = spec.dir.join("dev/dri").join(name);
        let _ = std::fs::remove_file(&path);
        match mknod(
            &path,
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(*mode),
            makedev(u64::from(DRM_MAJOR), u64::from(*minor)),
        ) {
            Ok(()) => {
                chown(&path, Some(Uid::from_raw(0)), Some(Gid::from_raw(*gid)))
                    .with_context(|| format!("chown {}", path.display()))?;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(*mode))?;
            }
            Err(Errno::EPERM | Errno::EACCES) => denied += 1,
            Err(e) => return Err(e).with_context(|| format!("mknod {}", path.display())),
        }
        let link = by_path.join(format!("pci-{bus}-{kind}"));
        let _ = std::fs::remove_file(&link);
        symlink(format!("../{name}"), &link)
            .with_context(|| format!("symlink {}", link.display()))?;
    }
    if denied > 0 {
        notes.push(format!(
            "device nodes need root: {denied} /dev/dri nodes were not created"
        ));
    }
    Ok(())
}

/// The loaders' files. Vulkan's ICD is where Debian puts it (/usr/share) and its layer where
/// the `.run` installer does (/etc), so both search roots are exercised.
fn write_configs(spec: &Spec) -> Result<()> {
    let d = &spec.dir;
    let v = &spec.driver_version;
    let icd = |lib: &str| {
        format!(
            "{{\n    \"file_format_version\" : \"1.0.0\",\n    \"ICD\" : {{\n        \"library_path\" : \"{lib}\"\n    }}\n}}\n"
        )
    };
    write(
        &d.join("usr/share/glvnd/egl_vendor.d/10_nvidia.json"),
        icd("libEGL_nvidia.so.0"),
    )?;
    for (file, lib) in [
        ("15_nvidia_gbm.json", "libnvidia-egl-gbm.so.1"),
        ("10_nvidia_wayland.json", "libnvidia-egl-wayland.so.1"),
        ("09_nvidia_wayland2.json", "libnvidia-egl-wayland2.so.1"),
        ("20_nvidia_xcb.json", "libnvidia-egl-xcb.so.1"),
        ("20_nvidia_xlib.json", "libnvidia-egl-xlib.so.1"),
    ] {
        write(
            &d.join("usr/share/egl/egl_external_platform.d").join(file),
            icd(lib),
        )?;
    }
    write(
        &d.join("usr/share/vulkan/icd.d/nvidia_icd.json"),
        "{\n    \"file_format_version\" : \"1.0.1\",\n    \"ICD\": {\n        \"library_path\": \"libGLX_nvidia.so.0\",\n        \"api_version\" : \"1.3.242\"\n    }\n}\n",
    )?;
    write(
        &d.join("etc/vulkan/implicit_layer.d/nvidia_layers.json"),
        "{\n    \"file_format_version\" : \"1.0.1\",\n    \"layer\": {\n        \"name\": \"VK_LAYER_NV_optimus\",\n        \"type\": \"INSTANCE\",\n        \"library_path\": \"libGLX_nvidia.so.0\",\n        \"api_version\" : \"1.3.242\",\n        \"implementation_version\" : \"1\",\n        \"description\" : \"NVIDIA Optimus layer\",\n        \"functions\": {\n            \"vkGetInstanceProcAddr\": \"vk_optimusGetInstanceProcAddr\",\n            \"vkGetDeviceProcAddr\": \"vk_optimusGetDeviceProcAddr\"\n        },\n        \"enable_environment\": {\n            \"__NV_PRIME_RENDER_OFFLOAD\": \"1\"\n        },\n        \"disable_environment\": {\n            \"DISABLE_LAYER_NV_OPTIMUS_1\": \"\"\n        }\n    }\n}\n",
    )?;
    write(
        &d.join("etc/OpenCL/vendors/nvidia.icd"),
        "libnvidia-opencl.so.1\n",
    )?;
    write(
        &d.join("usr/share/X11/xorg.conf.d/10-nvidia.conf"),
        "Section \"OutputClass\"\n    Identifier \"nvidia\"\n    MatchDriver \"nvidia-drm\"\n    Driver \"nvidia\"\n    Option \"AllowEmptyInitialConfiguration\"\n    ModulePath \"/usr/lib/xorg/modules\"\nEndSection\n",
    )?;
    // OptiX's precompiled data: tens of MiB on a real host, sparse here.
    let optix = d.join("usr/share/nvidia/nvoptix.bin");
    write(&optix, format!("nvbox mock nvoptix.bin {v}\n"))?;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&optix)?
        .set_len(58 << 20)?;
    Ok(())
}

/// Sizes and layouts (file size, DT_STRTAB offset, DT_STRSZ, dynamic section offset) read with
/// `readelf -lWd` from Debian bookworm's packages: libnvidia-egl-wayland1 1.1.10-1 and
/// xserver-xorg-video-nvidia 535.261.03-1. The other EGL platform libraries ship in no bookworm
/// package and take egl-wayland's layout, their nearest kin.
const EGL_WAYLAND: Layout = Layout {
    size: 68880,
    strtab: 0xc18,
    strsz: 1868,
    dynamic: 0xfd70,
};
const NVIDIA_DRV: Layout = Layout {
    size: 6400168,
    strtab: 0x3248,
    strsz: 5672,
    dynamic: 0x606ba0,
};
const GLXSERVER: Layout = Layout {
    size: 12586832,
    strtab: 0xb68,
    strsz: 1115,
    dynamic: 0x9e4d68,
};

/// EGL platform libraries (versioned apart from the driver) and the X.Org modules, at their
/// real sizes (sparse) unless `--stub-libraries`.
fn write_libraries(spec: &Spec) -> Result<()> {
    let (dir, machine) = if std::env::consts::ARCH == "aarch64" {
        ("usr/lib/aarch64-linux-gnu", Machine::Aarch64)
    } else {
        ("usr/lib/x86_64-linux-gnu", Machine::X86_64)
    };
    let object = |path: &Path, soname: &str, needed: &[&str], layout: &Layout| -> Result<()> {
        let layout = (!spec.stub_libraries).then_some(layout);
        std::fs::create_dir_all(path.parent().expect("a file in a directory"))?;
        library_image(machine, soname, needed, None, layout)
            .write_to(path)
            .with_context(|| format!("write {}", path.display()))
    };
    let lib = spec.dir.join(dir);
    for (file, soname) in [
        ("libnvidia-egl-gbm.so.1.1.0", "libnvidia-egl-gbm.so.1"),
        (
            "libnvidia-egl-wayland.so.1.1.10",
            "libnvidia-egl-wayland.so.1",
        ),
        (
            "libnvidia-egl-wayland2.so.1.0.0",
            "libnvidia-egl-wayland2.so.1",
        ),
        ("libnvidia-egl-xcb.so.1.0.0", "libnvidia-egl-xcb.so.1"),
        ("libnvidia-egl-xlib.so.1.0.0", "libnvidia-egl-xlib.so.1"),
    ] {
        object(&lib.join(file), soname, &["libc.so.6"], &EGL_WAYLAND)?;
        link(file, &lib.join(soname))?;
    }
    let v = &spec.driver_version;
    let xorg = spec.dir.join("usr/lib/xorg/modules");
    object(
        &xorg.join("drivers/nvidia_drv.so"),
        "nvidia_drv.so",
        &["libc.so.6"],
        &NVIDIA_DRV,
    )?;
    let glx = format!("libglxserver_nvidia.so.{v}");
    let core = [
        format!("libnvidia-tls.so.{v}"),
        format!("libnvidia-glcore.so.{v}"),
    ];
    object(
        &xorg.join("extensions").join(&glx),
        "libglxserver_nvidia.so.1",
        &[&core[0], &core[1], "libc.so.6"],
        &GLXSERVER,
    )?;
    link(&glx, &xorg.join("extensions/libglxserver_nvidia.so"))?;
    let xconfig = spec.dir.join("usr/bin/nvidia-xconfig");
    write(&xconfig, "#!/bin/sh\necho \"nvbox mock nvidia-xconfig\"\n")?;
    std::fs::set_permissions(&xconfig, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

fn link(target: &str, at: &Path) -> Result<()> {
    let _ = std::fs::remove_file(at);
    symlink(target, at).with_context(|| format!("symlink {}", at.display()))
}
