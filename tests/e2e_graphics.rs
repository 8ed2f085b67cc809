//! Graphics end to end with the real runc through the runtime shim, on a simulated graphics host
//! (`nvbox mock --graphics`: 4 GPUs with DRM card/render nodes, a BMC on card0, the Vulkan, EGL,
//! GLVND and OpenCL loader files, X.Org modules). A container asking for every capability gets
//! the loaders' files at their standard paths with the host's content, the EGL platform
//! libraries in its loader cache, and the DRM nodes and by-path links of its own GPU only.
//! Per mode as upstream: legacy gives none of it without `graphics`/`display`; jit-cdi offers
//! every driver file whatever the capabilities say; the prestart hook alone (libnvidia-container)
//! gives the graphics libraries but none of these.

mod common;

use common::container::*;
use common::engines::*;
use std::collections::BTreeMap;
use std::process::Command;

/// Config files: (host path in the mock, container path).
const CONFIGS: &[(&str, &str)] = &[
    (
        "/usr/share/vulkan/icd.d/nvidia_icd.json",
        "/etc/vulkan/icd.d/nvidia_icd.json",
    ),
    (
        "/etc/vulkan/implicit_layer.d/nvidia_layers.json",
        "/etc/vulkan/implicit_layer.d/nvidia_layers.json",
    ),
    (
        "/usr/share/glvnd/egl_vendor.d/10_nvidia.json",
        "/usr/share/glvnd/egl_vendor.d/10_nvidia.json",
    ),
    (
        "/usr/share/egl/egl_external_platform.d/15_nvidia_gbm.json",
        "/usr/share/egl/egl_external_platform.d/15_nvidia_gbm.json",
    ),
    (
        "/usr/share/egl/egl_external_platform.d/10_nvidia_wayland.json",
        "/usr/share/egl/egl_external_platform.d/10_nvidia_wayland.json",
    ),
    (
        "/usr/share/egl/egl_external_platform.d/09_nvidia_wayland2.json",
        "/usr/share/egl/egl_external_platform.d/09_nvidia_wayland2.json",
    ),
    (
        "/usr/share/egl/egl_external_platform.d/20_nvidia_xcb.json",
        "/usr/share/egl/egl_external_platform.d/20_nvidia_xcb.json",
    ),
    (
        "/usr/share/egl/egl_external_platform.d/20_nvidia_xlib.json",
        "/usr/share/egl/egl_external_platform.d/20_nvidia_xlib.json",
    ),
    (
        "/usr/share/X11/xorg.conf.d/10-nvidia.conf",
        "/usr/share/X11/xorg.conf.d/10-nvidia.conf",
    ),
    (
        "/etc/OpenCL/vendors/nvidia.icd",
        "/etc/OpenCL/vendors/nvidia.icd",
    ),
];
const OPTIX: &str = "/usr/share/nvidia/nvoptix.bin";
const XORG: &[&str] = &[
    "/usr/lib/xorg/modules/drivers/nvidia_drv.so",
    "/usr/lib/xorg/modules/extensions/libglxserver_nvidia.so.535.104.05",
];
const GLX_LINK: &str = "/usr/lib/xorg/modules/extensions/libglxserver_nvidia.so";
const EGL_LIBS: &[(&str, &str)] = &[
    ("libnvidia-egl-gbm.so.1.1.0", "libnvidia-egl-gbm.so.1"),
    (
        "libnvidia-egl-wayland.so.1.1.11",
        "libnvidia-egl-wayland.so.1",
    ),
    (
        "libnvidia-egl-wayland2.so.1.0.0",
        "libnvidia-egl-wayland2.so.1",
    ),
    ("libnvidia-egl-xcb.so.1.0.0", "libnvidia-egl-xcb.so.1"),
    ("libnvidia-egl-xlib.so.1.0.0", "libnvidia-egl-xlib.so.1"),
];

fn ready() -> bool {
    have_prerequisites(&[RUNC, BUSYBOX])
}

fn graphics_host() -> &'static Host {
    shared_host(&["--gpus", "4", "--graphics"])
}

/// Every config file's content between markers, then one stat line per graphics path.
fn probe() -> String {
    let mut s = String::new();
    for (_, c) in CONFIGS {
        s.push_str(&format!("echo '@@{c}'; cat {c} 2>/dev/null; "));
    }
    let lib = "/usr/lib/x86_64-linux-gnu";
    let mut paths: Vec<String> = CONFIGS.iter().map(|(_, c)| c.to_string()).collect();
    paths.push(OPTIX.into());
    paths.extend(XORG.iter().map(|x| x.to_string()));
    paths.push(GLX_LINK.into());
    paths.push("/usr/bin/nvidia-xconfig".into());
    paths.push(format!("{lib}/libnvidia-egl-*"));
    paths.push(format!("{lib}/gbm/nvidia-drm_gbm.so"));
    paths.push("/dev/dri/*".into());
    paths.push("/dev/dri/by-path/*".into());
    s.push_str(&format!(
        "echo @@stat; stat -c '%n|%F|%t:%T|%s|%N' {} 2>/dev/null; echo @@end; \
         echo LIB64; ls /usr/lib64/gbm /usr/lib64/libnvidia-egl-* 2>/dev/null",
        paths.join(" ")
    ));
    s
}

struct Seen {
    /// Container path → text between its marker and the next.
    contents: BTreeMap<String, String>,
    /// Container path → (`%F`, `major:minor` in decimal for devices, size, link target).
    stat: BTreeMap<String, (String, String, u64, String)>,
}

fn parse(out: &str) -> Seen {
    assert!(out.contains("@@end"), "the probe did not finish:\n{out}");
    let mut seen = Seen {
        contents: BTreeMap::new(),
        stat: BTreeMap::new(),
    };
    let mut section = String::new();
    for line in out.lines() {
        if let Some(s) = line.strip_prefix("@@") {
            section = s.to_string();
            continue;
        }
        if section == "stat" {
            let f: Vec<&str> = line.splitn(5, '|').collect();
            let hex = |h: &str| u64::from_str_radix(h, 16).unwrap_or(0);
            let (ma, mi) = f[2].split_once(':').unwrap();
            let target = f[4]
                .split_once(" -> ")
                .map(|(_, t)| t.trim_matches('\'').to_string())
                .unwrap_or_default();
            seen.stat.insert(
                f[0].to_string(),
                (
                    f[1].to_string(),
                    format!("{}:{}", hex(ma), hex(mi)),
                    f[3].parse().unwrap(),
                    target,
                ),
            );
        } else if section.starts_with('/') {
            let c = seen.contents.entry(section.clone()).or_default();
            c.push_str(line);
            c.push('\n');
        }
    }
    seen
}

/// Everything of graphics, for the GPUs `indices` only.
fn assert_graphics(host: &Host, seen: &Seen, indices: &[usize]) {
    for (h, c) in CONFIGS {
        assert_eq!(
            seen.contents.get(*c).map(String::as_str),
            Some(host.read(h).as_str()),
            "{c} in the container must be the host's {h}"
        );
    }
    let optix = std::fs::metadata(host.file(OPTIX)).unwrap().len();
    assert_eq!(seen.stat.get(OPTIX).map(|s| s.2), Some(optix), "{OPTIX}");
    for x in XORG {
        assert_eq!(
            seen.stat.get(*x).map(|s| s.0.as_str()),
            Some("regular file"),
            "{x} at its host path"
        );
    }
    assert_eq!(
        seen.stat.get(GLX_LINK).map(|s| s.3.as_str()),
        Some("libglxserver_nvidia.so.535.104.05"),
        "{GLX_LINK}"
    );
    assert!(
        seen.stat.contains_key("/usr/bin/nvidia-xconfig"),
        "nvidia-xconfig"
    );
    let lib = "/usr/lib/x86_64-linux-gnu";
    for (file, _) in EGL_LIBS {
        assert_eq!(
            seen.stat
                .get(&format!("{lib}/{file}"))
                .map(|s| s.0.as_str()),
            Some("regular file"),
            "{file}"
        );
    }
    assert_eq!(
        seen.stat
            .get(&format!("{lib}/gbm/nvidia-drm_gbm.so"))
            .map(|s| s.3.as_str()),
        Some("../libnvidia-allocator.so.1"),
        "the GBM backend link"
    );
    // The DRM nodes of these GPUs (the BMC holds card0), with the host's numbers, and nothing
    // else.
    let mut want = BTreeMap::new();
    for &index in indices {
        let gpu = &host.gpus()[index];
        let card = format!("card{}", index + 1);
        let render = format!("renderD{}", 128 + index);
        for name in [&card, &render] {
            let (ma, mi) = host.rdev(&format!("/dev/dri/{name}"));
            want.insert(
                format!("/dev/dri/{name}"),
                ("character special file".to_string(), format!("{ma}:{mi}")),
            );
        }
        want.insert(
            format!("/dev/dri/by-path/pci-{}-card", gpu.bus.to_lowercase()),
            ("symbolic link".to_string(), format!("../{card}")),
        );
        want.insert(
            format!("/dev/dri/by-path/pci-{}-render", gpu.bus.to_lowercase()),
            ("symbolic link".to_string(), format!("../{render}")),
        );
    }
    let got: BTreeMap<String, (String, String)> = seen
        .stat
        .iter()
        .filter(|(p, s)| p.starts_with("/dev/dri/") && s.0 != "directory")
        .map(|(p, s)| {
            let what = if s.0 == "symbolic link" {
                s.3.clone()
            } else {
                s.1.clone()
            };
            (p.clone(), (s.0.clone(), what))
        })
        .collect();
    assert_eq!(got, want, "/dev/dri in the container");
}

fn assert_no_graphics(seen: &Seen) {
    let ours: Vec<&String> = seen.stat.keys().collect();
    assert!(
        ours.is_empty(),
        "graphics files without graphics: {ours:#?}"
    );
    assert!(seen.contents.values().all(|c| c.is_empty()));
}

/// The container's ld.so.cache (read by the host's ldconfig) names the EGL platform libraries.
fn assert_egl_cached(rootfs: &std::path::Path) {
    let out = Command::new("ldconfig")
        .arg("-p")
        .arg("-C")
        .arg(rootfs.join("etc/ld.so.cache"))
        .output()
        .unwrap();
    let cache = String::from_utf8_lossy(&out.stdout);
    for (_, soname) in EGL_LIBS {
        assert!(
            cache.contains(&format!("{soname} (libc6,x86-64")),
            "{soname} not in the container's cache:\n{cache}"
        );
    }
}

fn run(mode: &str, caps: &str, devices: &str) -> (ShimRun, Bundle) {
    run_in(mode, caps, devices, true)
}

fn run_in(mode: &str, caps: &str, devices: &str, debian: bool) -> (ShimRun, Bundle) {
    let host = graphics_host();
    let config = ShimConfig::mode(host, mode);
    let mut bundle = Bundle::new(debian);
    bundle.script(&probe());
    bundle.env(&[
        &format!("NVIDIA_VISIBLE_DEVICES={devices}"),
        &format!("NVIDIA_DRIVER_CAPABILITIES={caps}"),
    ]);
    let run = run_shim(&mut bundle, &config.path, &[]);
    assert!(run.created, "create failed:\n{}", run.create_stderr);
    (run, bundle)
}

fn assert_drm_cgroup(run: &ShimRun, indices: &[usize]) {
    // card0 (the BMC's) is never allowed.
    for i in 0..4u32 {
        for minor in [i + 1, 128 + i] {
            let rule = format!("c 226:{minor} rwm");
            assert_eq!(
                run.devices_list.lines().any(|l| l == rule),
                indices.contains(&(i as usize)),
                "{rule} in\n{}",
                run.devices_list
            );
        }
    }
}

#[test]
fn jit_cdi_all_capabilities() {
    if !ready() {
        return;
    }
    let (run, bundle) = run("jit-cdi", "all", "1");
    assert_graphics(graphics_host(), &parse(&run.stdout), &[1]);
    assert_drm_cgroup(&run, &[1]);
    assert_egl_cached(&bundle.rootfs);
}

/// Upstream's jit-cdi generates its spec without looking at NVIDIA_DRIVER_CAPABILITIES, so a
/// compute container gets the graphics files and its GPU's DRM nodes too.
#[test]
fn jit_cdi_compute_only_as_upstream() {
    if !ready() {
        return;
    }
    let (run, _bundle) = run("jit-cdi", "compute,utility", "2");
    assert_graphics(graphics_host(), &parse(&run.stdout), &[2]);
}

/// An image whose library directory is /usr/lib64: jit-cdi mounts the driver's files at their
/// host paths (upstream 1.20), and the GBM link goes with the allocator library, not to the
/// image's directory.
#[test]
fn jit_cdi_lib64_image() {
    if !ready() {
        return;
    }
    let (run, _bundle) = run_in("jit-cdi", "all", "0", false);
    let (probe_out, lib64) = run
        .stdout
        .split_once("LIB64\n")
        .unwrap_or((&run.stdout, ""));
    assert_graphics(graphics_host(), &parse(probe_out), &[0]);
    assert_eq!(lib64.trim(), "", "nothing of graphics under /usr/lib64");
}

/// Two GPUs by index: both GPUs' nodes and links, not the others', not the BMC's card0.
#[test]
fn jit_cdi_two_gpus() {
    if !ready() {
        return;
    }
    let (run, _bundle) = run("jit-cdi", "graphics", "0,3");
    assert_graphics(graphics_host(), &parse(&run.stdout), &[0, 3]);
    assert_drm_cgroup(&run, &[0, 3]);
}

#[test]
fn legacy_all_gpus() {
    if !ready() {
        return;
    }
    let (run, _bundle) = run("legacy", "graphics,compute", "all");
    assert_graphics(graphics_host(), &parse(&run.stdout), &[0, 1, 2, 3]);
    assert_drm_cgroup(&run, &[0, 1, 2, 3]);
}

#[test]
fn legacy_all_capabilities() {
    if !ready() {
        return;
    }
    let (run, bundle) = run("legacy", "all", "1");
    assert_graphics(graphics_host(), &parse(&run.stdout), &[1]);
    assert_drm_cgroup(&run, &[1]);
    assert_egl_cached(&bundle.rootfs);
}

#[test]
fn legacy_display_only_by_uuid() {
    if !ready() {
        return;
    }
    let host = graphics_host();
    let uuid = host.gpus()[3].uuid.clone();
    let (run, _bundle) = run("legacy", "display", &uuid);
    assert_graphics(host, &parse(&run.stdout), &[3]);
}

/// Upstream's legacy graphics modifier needs `graphics` or `display`: a compute container gets
/// no config file, no EGL library and no DRM node.
#[test]
fn legacy_compute_only_gets_no_graphics() {
    if !ready() {
        return;
    }
    let (run, _bundle) = run("legacy", "compute,utility", "1");
    assert_no_graphics(&parse(&run.stdout));
    assert_drm_cgroup(&run, &[]);
}

/// The prestart hook alone (Docker's `--gpus` without the runtime) behaves like
/// libnvidia-container: the graphics libraries, but no loader config file, no EGL platform
/// library and no DRM node: those come from the runtime, as upstream.
#[test]
fn hook_alone_gives_no_graphics_files() {
    if !ready() {
        return;
    }
    let host = graphics_host();
    let mut bundle = Bundle::new(true);
    bundle.script(&format!(
        "{} ; echo GLX; stat -c %n /usr/lib/x86_64-linux-gnu/libGLX_nvidia.so.*",
        probe()
    ));
    bundle.env(&["NVIDIA_VISIBLE_DEVICES=1", "NVIDIA_DRIVER_CAPABILITIES=all"]);
    bundle.hook(host);
    let run = run_runc(&mut bundle);
    assert!(run.created, "create failed:\n{}", run.create_stderr);
    let (probe_out, glx) = run.stdout.split_once("GLX\n").unwrap();
    assert_no_graphics(&parse(probe_out));
    assert!(
        glx.contains("/usr/lib/x86_64-linux-gnu/libGLX_nvidia.so.535.104.05"),
        "the graphics libraries: {glx}"
    );
}
