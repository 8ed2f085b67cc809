//! The user-space side of a simulated host: what the driver packages install — libraries (valid
//! ELF shared objects with the real sonames, at their real sizes and layouts as sparse files),
//! soname links, an ld.so.cache (our writer, in the
//! format glibc's ldconfig writes), binaries, GSP firmware, the persistenced socket.

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;

use anyhow::{Context, Result};

use super::Spec;
use super::elf::{Machine, library_image, shared_object};
use super::host::{MockGpu, write};
use super::layouts;
use crate::discover::ldcache::{
    FLAG_AARCH64_LIB64, FLAG_ELF_LIBC6, FLAG_X8664_LIB64, OwnedEntry, write_cache,
};
use crate::discover::tables;

/// The native library directory, ELF machine and cache flags of the host being simulated:
/// the machine nvbox runs on, since the libraries must be ones its ld.so accepts.
fn native() -> (&'static str, Machine, i32) {
    if std::env::consts::ARCH == "aarch64" {
        (
            "/usr/lib/aarch64-linux-gnu",
            Machine::Aarch64,
            FLAG_ELF_LIBC6 | FLAG_AARCH64_LIB64,
        )
    } else {
        (
            "/usr/lib/x86_64-linux-gnu",
            Machine::X86_64,
            FLAG_ELF_LIBC6 | FLAG_X8664_LIB64,
        )
    }
}

const LIB32: &str = "/usr/lib/i386-linux-gnu";

/// How the driver names a library's soname: most use `.so.1`; some carry the full driver
/// version (checked against the Debian 535.261.03 packages with `readelf -d`).
fn soname_suffix(prefix: &str) -> Option<&'static str> {
    Some(match prefix {
        "libEGL_nvidia.so" | "libGLX_nvidia.so" => "0",
        "libGLESv2_nvidia.so" => "2",
        "libnvidia-nvvm.so" => "4",
        "libnvidia-nscq.so" => "2",
        "libnvidia-eglcore.so"
        | "libnvidia-glcore.so"
        | "libnvidia-glsi.so"
        | "libnvidia-glvkspirv.so"
        | "libnvidia-rtcore.so"
        | "libnvidia-tls.so"
        | "libnvidia-pkcs11.so"
        | "libnvidia-pkcs11-openssl3.so"
        | "libnvidia-gpucomp.so"
        | "libnvidia-cbl.so"
        | "libnvidia-compiler.so"
        | "libnvidia-fatbinaryloader.so" => {
            return None;
        }
        _ => "1",
    })
}

/// The driver ships 32-bit builds of its GL, video and core CUDA libraries only.
fn has_compat32(prefix: &str) -> bool {
    matches!(
        prefix,
        "libnvidia-ml.so"
            | "libcuda.so"
            | "libnvidia-opencl.so"
            | "libnvidia-ptxjitcompiler.so"
            | "libnvidia-gpucomp.so"
            | "libvdpau_nvidia.so"
            | "libnvidia-encode.so"
            | "libnvcuvid.so"
            | "libnvidia-eglcore.so"
            | "libnvidia-glcore.so"
            | "libnvidia-tls.so"
            | "libnvidia-glsi.so"
            | "libnvidia-fbc.so"
            | "libGLX_nvidia.so"
            | "libEGL_nvidia.so"
            | "libGLESv2_nvidia.so"
            | "libGLESv1_CM_nvidia.so"
            | "libnvidia-glvkspirv.so"
    )
}

/// (file, soname) of libraries in no capability table (`{V}` is the driver version): driver
/// libraries, and the GLVND and OpenCL loaders that the distribution installs beside them.
const EXTRA_LIBRARIES: &[(&str, &str)] = &[
    ("libnvidia-present.so.{V}", "libnvidia-present.so.{V}"),
    (
        "libnvidia-sandboxutils.so.{V}",
        "libnvidia-sandboxutils.so.1",
    ),
    ("libnvidia-vksc-core.so.{V}", "libnvidia-vksc-core.so.1"),
    ("libnvidia-nvvm70.so.4", "libnvidia-nvvm70.so.4"),
    ("libEGL.so.1.1.0", "libEGL.so.1"),
    ("libOpenCL.so.1.0.0", "libOpenCL.so.1"),
];

/// Binaries the driver (or its IMEX package) installs that libnvidia-container does not list.
const EXTRA_BINARIES: &[&str] = &["nvidia-imex", "nvidia-imex-ctl"];

pub fn write_driver_files(spec: &Spec, gpus: &[MockGpu]) -> Result<()> {
    let v = &spec.driver_version;
    let (lib64, machine64, flags64) = native();
    // 32-bit x86 libraries only exist next to x86-64 ones.
    let with32 = machine64 == Machine::X86_64;
    let mut cache = Vec::new();
    for (prefix, _) in tables::LIBRARIES {
        let file = format!("{prefix}.{v}");
        let soname =
            soname_suffix(prefix).map_or_else(|| file.clone(), |s| format!("{prefix}.{s}"));
        let abi = (*prefix == tables::TLS_LIBRARY_PREFIX).then_some(tables::TLS_ABI_TAG);
        let mut dirs = vec![(lib64, machine64, flags64)];
        if with32 && has_compat32(prefix) {
            dirs.push((LIB32, Machine::I386, FLAG_ELF_LIBC6));
        }
        for (dir, machine, flags) in dirs {
            let base = spec.dir.join(dir.trim_start_matches('/'));
            let path = base.join(&file);
            let layout = (!spec.stub_libraries).then(|| layouts::layout(v, prefix));
            let image = library_image(machine, &soname, &["libc.so.6"], abi, layout.as_ref());
            std::fs::create_dir_all(&base)?;
            image
                .write_to(&path)
                .with_context(|| format!("write {}", path.display()))?;
            if soname != file {
                link(&file, &base.join(&soname))?;
            }
            cache.push(OwnedEntry {
                flags,
                soname: soname.clone(),
                path: format!("{dir}/{soname}"),
                osversion: 0,
                hwcap: 0,
            });
        }
    }
    // Libraries outside libnvidia-container's tables: upstream's CDI specs take some of them.
    for (file, soname) in EXTRA_LIBRARIES {
        let (file, soname) = (file.replace("{V}", v), soname.replace("{V}", v));
        let base = spec.dir.join(lib64.trim_start_matches('/'));
        write(
            &base.join(&file),
            shared_object(machine64, &soname, &["libc.so.6"], None),
        )?;
        if soname != file {
            link(&file, &base.join(&soname))?;
        }
        cache.push(OwnedEntry {
            flags: flags64,
            soname: soname.clone(),
            path: format!("{lib64}/{soname}"),
            osversion: 0,
            hwcap: 0,
        });
    }
    // The development links the driver also installs; they must never end up in the cache.
    for (target, name) in [
        ("libcuda.so.1", "libcuda.so"),
        ("libnvidia-ml.so.1", "libnvidia-ml.so"),
    ] {
        link(
            target,
            &spec.dir.join(lib64.trim_start_matches('/')).join(name),
        )?;
    }
    write(&spec.dir.join("etc/ld.so.cache"), write_cache(&cache))?;
    write(
        &spec.dir.join("etc/ld.so.conf"),
        "include /etc/ld.so.conf.d/*.conf\n",
    )?;
    write(
        &spec.dir.join("etc/ld.so.conf.d/nvidia.conf"),
        format!("{lib64}\n{LIB32}\n"),
    )?;
    write_binaries(spec, gpus)?;
    let fw = spec.dir.join(format!("lib/firmware/nvidia/{v}"));
    // At their real sizes (Debian's 535.261.03 firmware-nvidia-gsp), sparse past a marker.
    for (name, size) in [("gsp_ga10x.bin", 38_254_112), ("gsp_tu10x.bin", 23_873_824)] {
        let marker = format!("nvbox mock GSP firmware {name}\n");
        write(&fw.join(name), &marker)?;
        if !spec.stub_libraries {
            std::fs::OpenOptions::new()
                .write(true)
                .open(fw.join(name))
                .and_then(|f| f.set_len(size))
                .with_context(|| format!("extend {name}"))?;
        }
    }
    write_persistenced_socket(spec)
}

fn link(target: &str, at: &Path) -> Result<()> {
    let _ = std::fs::remove_file(at);
    symlink(target, at).with_context(|| format!("symlink {}", at.display()))
}

/// Shell-script stand-ins; `nvidia-smi -L` prints the simulated GPUs the way the real one does,
/// so an end-to-end test can compare what a container sees with the host.
fn write_binaries(spec: &Spec, gpus: &[MockGpu]) -> Result<()> {
    let mut listing = String::new();
    for (i, gpu) in gpus.iter().enumerate() {
        listing.push_str(&format!(
            "GPU {i}: {} (UUID: {})\n",
            spec.model.name, gpu.uuid
        ));
    }
    let smi = format!(
        "#!/bin/sh\n# nvbox mock nvidia-smi (driver {})\ncase \"$1\" in\n-L) cat <<'EOF'\n{listing}EOF\n;;\n*) echo \"nvbox mock nvidia-smi: driver {} with {} GPUs\";;\nesac\n",
        spec.driver_version,
        spec.driver_version,
        gpus.len()
    );
    let names = tables::BINARIES
        .iter()
        .map(|(n, _)| *n)
        .chain(EXTRA_BINARIES.iter().copied());
    for name in names {
        let path = spec.dir.join("usr/bin").join(name);
        let body = if name == "nvidia-smi" {
            smi.clone()
        } else {
            format!("#!/bin/sh\necho \"nvbox mock {name}\"\n")
        };
        write(&path, body)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}

/// A real unix socket file, as nvidia-persistenced leaves under /run; /var/run links to /run as
/// on every modern distribution, so lookups must resolve it inside the root.
fn write_persistenced_socket(spec: &Spec) -> Result<()> {
    let run = spec.dir.join("run/nvidia-persistenced");
    std::fs::create_dir_all(&run)?;
    if spec.var_run_link {
        std::fs::create_dir_all(spec.dir.join("var"))?;
        link("../run", &spec.dir.join("var/run"))?;
    }
    let sock = run.join("socket");
    let _ = std::fs::remove_file(&sock);
    std::os::unix::net::UnixListener::bind(&sock)
        .with_context(|| format!("bind {}", sock.display()))?;
    Ok(())
}
