//! What a GPU container must contain, and what it does contain. Both sides are one map from
//! container path to a description in busybox `stat -c %F` words ("regular file",
//! "character special file 195:255", "-> libcuda.so.1", …), so one comparison shows every
//! missing, unexpected and wrong entry at once.

use super::{Host, lib_dirs, text};
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::process::Command;

/// The container half: one `stat` over every place the hook may put something, then the
/// procfs files whose content matters. Globs that match nothing are left to stat's stderr.
pub const PROBE: &str = "stat -c '%F|%t:%T|%N' /dev/nvidia* /dev/nvidia-caps/* \
/dev/nvidia-caps-imex-channels/* /usr/lib/* /usr/lib/x86_64-linux-gnu/* /usr/lib/i386-linux-gnu/* \
/usr/lib64/* /usr/lib32/* /usr/bin/nvidia* /usr/bin/nv-* /lib/firmware/nvidia/*/* /run/*/* \
/tmp/nvidia-mps /proc/driver/nvidia/gpus/* /proc/driver/nvidia/capabilities/gpu*/mig/gi*/access \
/proc/driver/nvidia/capabilities/gpu*/mig/gi*/ci*/access 2>/dev/null
echo @@params; cat /proc/driver/nvidia/params 2>/dev/null
echo @@version; cat /proc/driver/nvidia/version 2>/dev/null
echo @@cgroup; cat /sys/fs/cgroup/devices/devices.list 2>/dev/null
echo @@end";

pub const ALL_CAPS: [&str; 7] = [
    "compat32", "compute", "display", "graphics", "ngx", "utility", "video",
];

/// Library name prefixes per capability group (reference §3.1), matched against file names.
const UTILITY_LIBS: &[&str] = &["libnvidia-ml.so", "libnvidia-cfg.so", "libnvidia-nscq.so"];
const COMPUTE_LIBS: &[&str] = &[
    "libcuda.so",
    "libcudadebugger.so",
    "libnvidia-opencl.so",
    "libnvidia-gpucomp.so",
    "libnvidia-ptxjitcompiler.so",
    "libnvidia-fatbinaryloader.so",
    "libnvidia-allocator.so",
    "libnvidia-compiler.so",
    "libnvidia-pkcs11.so",
    "libnvidia-pkcs11-openssl3.so",
    "libnvidia-nvvm.so",
    "libnvidia-tileiras.so",
];
const NGX_LIBS: &[&str] = &["libnvidia-ngx.so"];
const VIDEO_LIBS: &[&str] = &[
    "libvdpau_nvidia.so",
    "libnvidia-encode.so",
    "libnvidia-opticalflow.so",
    "libnvcuvid.so",
];
const GRAPHICS_LIBS: &[&str] = &[
    "libnvidia-eglcore.so",
    "libnvidia-glcore.so",
    "libnvidia-tls.so",
    "libnvidia-glsi.so",
    "libnvidia-fbc.so",
    "libnvidia-ifr.so",
    "libnvidia-rtcore.so",
    "libnvoptix.so",
    "libGLX_nvidia.so",
    "libEGL_nvidia.so",
    "libGLESv2_nvidia.so",
    "libGLESv1_CM_nvidia.so",
    "libnvidia-glvkspirv.so",
    "libnvidia-cbl.so",
];
/// Binaries (§3.2): utility tools, and the MPS pair with compute.
const UTILITY_BINS: &[&str] = &[
    "nvidia-smi",
    "nvidia-debugdump",
    "nvidia-persistenced",
    "nv-fabricmanager",
];
const COMPUTE_BINS: &[&str] = &["nvidia-cuda-mps-control", "nvidia-cuda-mps-server"];

/// The paths the comparison looks at: everything else in the container is not ours to judge.
fn watched(path: &str) -> bool {
    [
        "/dev/",
        "/usr/lib",
        "/usr/bin/",
        "/lib/firmware/",
        "/run/",
        "/tmp/nvidia-mps",
        "/proc/driver/nvidia/",
    ]
    .iter()
    .any(|p| path.starts_with(p))
}

/// What the container printed for [`PROBE`].
#[derive(Debug, Default)]
pub struct Probe {
    pub entries: BTreeMap<String, String>,
    pub params: String,
    pub version: String,
    pub cgroup: String,
}

pub fn parse_probe(out: &str) -> Probe {
    assert!(out.contains("@@end"), "the probe did not finish:\n{out}");
    let mut probe = Probe::default();
    let mut section = "";
    for line in out.lines() {
        if let Some(s) = line.strip_prefix("@@") {
            section = if s == "end" { "done" } else { s };
            continue;
        }
        let push = |s: &mut String| {
            s.push_str(line);
            s.push('\n');
        };
        match section {
            "" => {
                let mut f = line.splitn(3, '|');
                let (kind, dev, name) = (
                    f.next().unwrap(),
                    f.next().unwrap_or(""),
                    f.next().unwrap_or(""),
                );
                let (path, desc) = match name.split_once(" -> ") {
                    Some((l, t)) => (l.trim_matches('\''), format!("-> {}", t.trim_matches('\''))),
                    None if kind.starts_with("character") || kind.starts_with("block") => {
                        let (ma, mi) = dev.split_once(':').unwrap();
                        let hex = |h: &str| u64::from_str_radix(h, 16).unwrap();
                        (name, format!("{kind} {}:{}", hex(ma), hex(mi)))
                    }
                    None => (name, kind.to_string()),
                };
                let keep_dir =
                    path.starts_with("/proc/driver/nvidia/gpus/") || path == "/tmp/nvidia-mps";
                if watched(path) && (desc != "directory" || keep_dir) {
                    probe.entries.insert(path.to_string(), desc);
                }
            }
            "params" => push(&mut probe.params),
            "version" => push(&mut probe.version),
            "cgroup" => push(&mut probe.cgroup),
            _ => {}
        }
    }
    probe
}

/// A host file described as busybox's stat describes it inside the container.
fn describe(path: &Path) -> String {
    let m = std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let ft = m.file_type();
    if ft.is_symlink() {
        format!("-> {}", std::fs::read_link(path).unwrap().display())
    } else if ft.is_char_device() {
        let (ma, mi) = super::split_rdev(m.rdev());
        format!("character special file {ma}:{mi}")
    } else if ft.is_socket() {
        "socket".into()
    } else if ft.is_dir() {
        "directory".into()
    } else if m.len() == 0 {
        "regular empty file".into()
    } else {
        "regular file".into()
    }
}

/// What the hook must inject for one request.
pub struct Expected {
    pub entries: BTreeMap<String, String>,
    /// `(soname, ldconfig arch, path)` the container's /etc/ld.so.cache must hold.
    pub ldcache: BTreeSet<(String, String, String)>,
    pub lib_dirs: (&'static str, &'static str),
    /// `c MAJ:MIN` of every device node, for the device cgroup.
    pub cgroup: BTreeSet<String>,
}

/// `devices` is the `--device` value for the oracle ("" = driver only, NVIDIA_VISIBLE_DEVICES=none);
/// `caps` the driver capabilities (`all` expands); `rootfs` as it is before the run.
pub fn expected(host: &Host, devices: &str, caps: &[&str], rootfs: &Path) -> Expected {
    let caps: BTreeSet<&str> = if caps.contains(&"all") {
        ALL_CAPS.into()
    } else {
        caps.iter().copied().collect()
    };
    let has = |c: &str| caps.contains(c);
    let compute_libs = has("compute") || has("video");
    let graphics = has("graphics") || has("display");
    let mut e = Expected {
        entries: BTreeMap::new(),
        ldcache: BTreeSet::new(),
        lib_dirs: lib_dirs(rootfs),
        cgroup: BTreeSet::new(),
    };
    let add = |e: &mut Expected, path: &str| {
        e.entries
            .insert(path.to_string(), describe(&host.file(path)));
    };

    for path in host.list(&[&format!("--device={devices}")]) {
        let keep = match path.as_str() {
            "/dev/nvidia-uvm" | "/dev/nvidia-uvm-tools" => compute_libs,
            "/dev/nvidia-modeset" => has("display"),
            _ => true,
        };
        if !keep {
            continue;
        }
        add(&mut e, &path);
        if let Some(minor) = path
            .strip_prefix("/dev/nvidia")
            .and_then(|m| m.parse::<u64>().ok())
        {
            let gpu = host.gpus().into_iter().find(|g| g.minor == minor).unwrap();
            e.entries.insert(
                format!("/proc/driver/nvidia/gpus/{}", gpu.bus),
                "directory".into(),
            );
        }
        if path.starts_with("/dev/") {
            let (ma, mi) = host.rdev(&path);
            e.cgroup.insert(format!("c {ma}:{mi}"));
        }
    }

    let enabled = |name: &str| {
        let any = |group: &[&str]| group.iter().any(|p| name.starts_with(p));
        (has("utility") && any(UTILITY_LIBS))
            || (compute_libs && any(COMPUTE_LIBS))
            || (has("ngx") && any(NGX_LIBS))
            || (has("video") && any(VIDEO_LIBS))
            || (graphics && any(GRAPHICS_LIBS))
    };
    let libs64 = host.list(&["--libraries"]);
    let mut libs: Vec<(String, &str)> = libs64.iter().map(|l| (l.clone(), "64")).collect();
    if has("compat32") {
        for l in host.list(&["--libraries", "--compat32"]) {
            if !libs64.contains(&l) {
                libs.push((l, "32"));
            }
        }
    }
    for (lib, bits) in libs {
        let base = lib.rsplit('/').next().unwrap().to_string();
        if !enabled(&base) {
            continue;
        }
        let (dir, arch) = if bits == "64" {
            (e.lib_dirs.0, "libc6,x86-64")
        } else {
            (e.lib_dirs.1, "libc6")
        };
        e.entries
            .insert(format!("{dir}/{base}"), describe(&host.file(&lib)));
        let soname = host.soname(&lib);
        if soname != base {
            e.entries
                .insert(format!("{dir}/{soname}"), format!("-> {base}"));
        }
        e.ldcache
            .insert((soname.clone(), arch.to_string(), format!("{dir}/{soname}")));
        // The development links of §5.5 step 6, next to the mounted file.
        if base.starts_with("libcuda.so.") {
            e.entries
                .insert(format!("{dir}/libcuda.so"), format!("-> {soname}"));
        }
        if base.starts_with("libGLX_nvidia.so.") && has("graphics") {
            e.entries
                .insert(format!("{dir}/libGLX_indirect.so.0"), format!("-> {base}"));
        }
        if base.starts_with("libnvidia-opticalflow.so.") {
            e.entries.insert(
                format!("{dir}/libnvidia-opticalflow.so"),
                format!("-> {soname}"),
            );
        }
    }

    for bin in host.list(&["--binaries"]) {
        let name = bin.rsplit('/').next().unwrap();
        if (has("utility") && UTILITY_BINS.contains(&name))
            || (has("compute") && COMPUTE_BINS.contains(&name))
        {
            add(&mut e, &format!("/usr/bin/{name}"));
        }
    }
    for ipc in host.list(&["--ipcs"]) {
        let daemon = ipc.contains("nvidia-persistenced") || ipc.contains("nvidia-fabricmanager");
        if (daemon && has("utility")) || (!daemon && compute_libs) {
            add(&mut e, &ipc);
        }
    }
    for fw in host.list(&["--firmwares"]) {
        add(&mut e, &fw);
    }
    e
}

/// Every expected entry and nothing else at the watched paths, with the driver's procfs files.
pub fn assert_injected(probe: &Probe, want: &Expected, host: &Host) {
    assert_entries(&probe.entries, &want.entries);
    let params = host.read("/proc/driver/nvidia/params").replacen(
        "ModifyDeviceFiles: 1",
        "ModifyDeviceFiles: 0",
        1,
    );
    assert!(
        params.contains("ModifyDeviceFiles: 0"),
        "mock params lack ModifyDeviceFiles"
    );
    assert_eq!(
        probe.params, params,
        "/proc/driver/nvidia/params in the container"
    );
    assert_eq!(
        probe.version,
        host.read("/proc/driver/nvidia/version"),
        "/proc/driver/nvidia/version"
    );
}

/// Nothing of the driver: the container sees what plain runc gives (this host's own procfs).
pub fn assert_nothing_injected(probe: &Probe) {
    let mut own = BTreeMap::new();
    for e in std::fs::read_dir("/proc/driver/nvidia/gpus")
        .into_iter()
        .flatten()
        .flatten()
    {
        own.insert(e.path().display().to_string(), "directory".to_string());
    }
    assert_entries(&probe.entries, &own);
    let host_file = |f: &str| std::fs::read_to_string(f).unwrap_or_default();
    assert_eq!(probe.params, host_file("/proc/driver/nvidia/params"));
}

/// The container's entries are exactly `want`: nothing missing, nothing extra, nothing different.
pub fn assert_entries(got: &BTreeMap<String, String>, want: &BTreeMap<String, String>) {
    let missing: Vec<_> = want.iter().filter(|(k, _)| !got.contains_key(*k)).collect();
    let extra: Vec<_> = got.iter().filter(|(k, _)| !want.contains_key(*k)).collect();
    let wrong: Vec<_> = want
        .iter()
        .filter_map(|(k, v)| {
            got.get(k)
                .filter(|g| *g != v)
                .map(|g| format!("{k}: want {v}, got {g}"))
        })
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty() && wrong.is_empty(),
        "container contents differ\nmissing: {missing:#?}\nunexpected: {extra:#?}\nwrong: {wrong:#?}"
    );
}

/// The device cgroup allows `rw` on every injected node and nothing else of the driver's majors.
/// `want` holds `c MAJ:MIN` entries ([`Expected::cgroup`], or empty for a plain container).
pub fn assert_cgroup(devices_list: &str, want: &BTreeSet<String>, host: &Host) {
    assert_cgroup_rules(devices_list, want, host, "rw");
}

/// The device cgroup rules for the driver's majors are exactly `want` with `access` (runc
/// writes the spec's `rwm`; the legacy hook writes `rw`).
pub fn assert_cgroup_rules(devices_list: &str, want: &BTreeSet<String>, host: &Host, access: &str) {
    let majors: BTreeSet<String> = host
        .read("/proc/devices")
        .lines()
        .take_while(|l| !l.starts_with("Block"))
        .filter_map(|l| l.trim().split_once(' '))
        .filter(|(_, name)| name.starts_with("nvidia"))
        .map(|(m, _)| m.to_string())
        .collect();
    let ours: BTreeSet<String> = devices_list
        .lines()
        .filter(|l| {
            let node = l.split(' ').nth(1).unwrap_or("");
            majors.contains(node.split(':').next().unwrap_or(""))
        })
        .map(str::to_string)
        .collect();
    let want: BTreeSet<String> = want.iter().map(|c| format!("{c} {access}")).collect();
    assert_eq!(
        ours, want,
        "device cgroup rules for the driver's majors:\n{devices_list}"
    );
}

/// `ldconfig -p` of the rootfs's cache names `libcuda.so.1` in `dir`; the whole listing.
pub fn assert_libcuda_cached(rootfs: &Path, dir: &str) -> String {
    let out = Command::new("ldconfig")
        .arg("-p")
        .arg("-C")
        .arg(rootfs.join("etc/ld.so.cache"))
        .output()
        .unwrap();
    assert!(out.status.success(), "ldconfig -p: {}", text(&out.stderr));
    let listing = text(&out.stdout);
    let want = format!("libcuda.so.1 (libc6,x86-64) => {dir}/libcuda.so.1");
    assert!(
        listing.lines().any(|l| l.trim() == want),
        "no {want:?} in:\n{listing}"
    );
    listing
}

/// The rootfs's ld.so.cache, read by the host's glibc `ldconfig -p`: every soname maps into the
/// container's library directories, and nothing points elsewhere.
pub fn assert_ldcache(rootfs: &Path, want: &Expected) {
    let cache = rootfs.join("etc/ld.so.cache");
    let out = Command::new("ldconfig")
        .arg("-p")
        .arg("-C")
        .arg(&cache)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ldconfig -p -C {}: {}",
        cache.display(),
        text(&out.stderr)
    );
    let mut got = BTreeSet::new();
    for line in text(&out.stdout).lines().skip(1) {
        let Some((left, path)) = line.trim().split_once(" => ") else {
            continue;
        };
        let Some((name, arch)) = left.split_once(" (") else {
            continue;
        };
        // "libc6,x86-64, OS ABI: Linux 3.2.0" → "libc6,x86-64": the ABI note is the ELF's, not ours.
        let arch = arch
            .trim_end_matches(')')
            .split(',')
            .filter(|p| !p.contains(':'))
            .collect::<Vec<_>>()
            .join(",");
        got.insert((name.to_string(), arch, path.to_string()));
    }
    let missing: Vec<_> = want.ldcache.difference(&got).collect();
    assert!(
        missing.is_empty(),
        "ld.so.cache lacks {missing:#?}\nit holds {got:#?}"
    );
    let (d64, d32) = want.lib_dirs;
    for (_, _, path) in &got {
        let dir = path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
        assert!(
            dir == d64 || dir == d32,
            "ld.so.cache entry outside the library dirs: {path}"
        );
    }
}
