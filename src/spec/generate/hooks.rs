//! The spec-level hooks for the driver's files: the links upstream creates for the driver
//! libraries, CUDA compat, the loader cache and the application profile.

use std::path::Path;

use super::{GenerateOptions, parent};
use crate::discover::host::Host;
use crate::discover::under;
use crate::spec::cdi::ContainerEdits;

/// Upstream's links for the driver libraries at their host paths, as `(target, link)`: the
/// graphics ones (GBM, X.Org) and the others (development links, and the soname and `.so`
/// links the host itself has), each list without duplicates, in library order.
pub fn driver_links(host: &Host) -> [Vec<(String, String)>; 2] {
    let version = &host.driver.version;
    let mut graphics: Vec<(String, String)> = Vec::new();
    let mut links: Vec<(String, String)> = Vec::new();
    let push = |list: &mut Vec<(String, String)>, target: &str, link: String| {
        if !list.iter().any(|(t, l)| t == target && *l == link) {
            list.push((target.to_owned(), link));
        }
    };
    // The symlinks of each library directory, listed once (d_type, no stat per name).
    let mut links_in: Vec<(String, Vec<String>)> = Vec::new();
    for lib in &host.libs {
        let dir = parent(&lib.path);
        let file = lib.path.rsplit('/').next().unwrap_or(&lib.path);
        if !links_in.iter().any(|(d, _)| d == dir) {
            links_in.push((dir.to_owned(), symlinks_in(&under(&host.roots.driver, dir))));
        }
        let in_dir = &links_in
            .iter()
            .find(|(d, _)| d == dir)
            .expect("listed above")
            .1;
        let on_host = |name: &str| in_dir.binary_search_by(|n| n.as_str().cmp(name)).is_ok();
        if file.starts_with("libnvidia-allocator.so.") {
            push(
                &mut graphics,
                "../libnvidia-allocator.so.1",
                format!("{dir}/gbm/nvidia-drm_gbm.so"),
            );
        }
        if file.starts_with("libcuda.so.") {
            push(&mut links, "libcuda.so.1", format!("{dir}/libcuda.so"));
        }
        if *file == format!("libGLX_nvidia.so.{version}") {
            push(&mut links, file, format!("{dir}/libGLX_indirect.so.0"));
        }
        if file.starts_with("libnvidia-opticalflow.so.") {
            push(
                &mut links,
                "libnvidia-opticalflow.so.1",
                format!("{dir}/libnvidia-opticalflow.so"),
            );
        }
        if lib.soname != file && on_host(&lib.soname) {
            push(&mut links, file, format!("{dir}/{}", lib.soname));
        }
        let dev = format!("{}.so", file.split(".so").next().unwrap_or(file));
        if dev != lib.soname && on_host(&dev) {
            push(&mut links, &lib.soname, format!("{dir}/{dev}"));
        }
    }
    // Upstream's graphics discoverer orders its links by mount: the libraries, then X.Org.
    let extra = host
        .graphics
        .libs
        .iter()
        .map(|l| &l.path)
        .chain(&host.graphics.files);
    for path in extra {
        let dir = parent(path);
        let file = path.rsplit('/').next().unwrap_or(path);
        for base in [
            crate::discover::graphics::VULKAN_PRODUCER,
            crate::discover::graphics::GLXSERVER,
        ] {
            if *file == format!("{base}.{version}") {
                push(&mut graphics, file, format!("{dir}/{base}"));
            }
        }
    }
    [graphics, links]
}

/// The names of the symlinks in a host directory, sorted (none when it cannot be read).
fn symlinks_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_symlink()))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort_unstable();
    names
}

/// Hooks 1–6 of the spec-level edits, in upstream's order.
pub(super) fn add_driver_hooks(
    e: &mut ContainerEdits,
    host: &Host,
    o: &GenerateOptions,
    dirs: &[String],
) {
    let version = &host.driver.version;
    for list in driver_links(host) {
        if !list.is_empty() {
            let args: Vec<String> = list
                .iter()
                .flat_map(|(t, l)| ["--link".to_owned(), format!("{t}::{l}")])
                .collect();
            o.push_hook(e, "create-symlinks", &args);
        }
    }
    if !version.contains('*') {
        o.push_hook(
            e,
            "enable-cuda-compat",
            &[format!("--host-driver-version={version}")],
        );
    }
    if !dirs.is_empty() {
        let mut args = Vec::new();
        if let Some(p) = &o.ldconfig_path {
            args.push("--ldconfig-path".to_owned());
            args.push(p.clone());
        }
        for d in dirs {
            args.push("--folder".to_owned());
            args.push(d.clone());
        }
        o.push_hook(e, "update-ldcache", &args);
    }
    if !o.management {
        o.push_hook(e, "disable-device-node-modification", &[]);
    }
    o.push_hook(e, "update-application-profile", &[]);
}

pub(super) fn chmod_args(path: &str) -> Vec<String> {
    ["--mode", "755", "--path", path]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
}
