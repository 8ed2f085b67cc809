//! The toolkit's graphics pieces as plan data: the same for jit-cdi, `cdi generate` and the
//! legacy runtime, so the three cannot drift apart.

use super::{Kind, Layout, Options, Plan, Root, native_arch_flag};
use crate::discover::graphics::{GLXSERVER, Graphics, VULKAN_PRODUCER};
use crate::discover::host::Host;
use crate::discover::ldcache;
use crate::request::Caps;
use crate::select::Selection;

/// Only the graphics pieces: what upstream's legacy-mode graphics modifier adds to the spec
/// beside the prestart hook.
pub fn build_graphics_plan(host: &Host, sel: &Selection, o: &Options, layout: &Layout) -> Plan {
    let mut p = Plan::default();
    add_graphics(&mut p, host, sel, o, layout);
    p
}

/// Upstream's graphics discoverers (internal/discover/graphics.go), on with `graphics` or
/// `display`: the loaders' config files at their standard container paths, the EGL platform
/// libraries next to the driver's, the X.Org modules and `nvidia-xconfig` at their own paths,
/// the links GBM, the Vulkan producer and the GLX server module are opened by, and the DRM
/// nodes of the GPUs selected whole (a MIG device has none) with their `/dev/dri/by-path` links.
pub(super) fn add_graphics(
    p: &mut Plan,
    host: &Host,
    sel: &Selection,
    o: &Options,
    layout: &Layout,
) {
    let allocator = format!("libnvidia-allocator.so.{}", host.driver.version);
    let has_allocator = host.libs.iter().any(|l| l.path.ends_with(&allocator));
    let facts = Facts {
        graphics: &host.graphics,
        version: &host.driver.version,
        has_allocator,
    };
    add_graphics_from(p, &facts, sel, o, layout);
}

/// What the graphics plan is made of: discovery's graphics findings, the driver version, and
/// whether the driver's GBM allocator library was found.
struct Facts<'a> {
    graphics: &'a Graphics,
    version: &'a str,
    has_allocator: bool,
}

fn add_graphics_from(p: &mut Plan, f: &Facts, sel: &Selection, o: &Options, layout: &Layout) {
    let caps = o.caps;
    if !caps.contains(Caps::GRAPHICS) && !caps.contains(Caps::DISPLAY) {
        return;
    }
    let g = f.graphics;
    let version = f.version;
    let libs = layout.libs.trim_end_matches('/');
    let native = ldcache::FLAG_ELF_LIBC6 | native_arch_flag();
    for lib in &g.libs {
        let file = p.bind_file(Root::Driver, &lib.path, &layout.libs);
        p.add_cache(&layout.libs, &lib.soname, &file, native);
        if !p.cache_dirs.contains(&layout.libs) {
            p.cache_dirs.push(layout.libs.clone());
        }
        if lib.prefix == VULKAN_PRODUCER {
            p.add_symlink(format!("{libs}/{}", lib.prefix), file);
        }
    }
    if f.has_allocator {
        p.add_symlink(
            format!("{libs}/gbm/nvidia-drm_gbm.so"),
            "../libnvidia-allocator.so.1".to_owned(),
        );
    }
    for path in &g.files {
        p.bind(Root::Driver, path, path, Kind::File);
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        if name == format!("{}.{version}", GLXSERVER) {
            p.add_symlink(format!("{dir}/{}", GLXSERVER), name.to_owned());
        }
    }
    for (source, target) in &g.configs {
        p.bind(Root::Driver, source, target, Kind::File);
    }
    for &i in &sel.gpus {
        if sel.migs.iter().any(|&(gpu, _)| gpu == i) {
            continue;
        }
        for node in g.drm.iter().filter(|n| n.gpu == i) {
            p.add_device(o, &node.path, node.major, node.minor);
            if let Some((link, target)) = &node.by_path {
                p.add_symlink(link.clone(), target.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discover::files::Library;
    use crate::discover::graphics::DrmNode;
    use crate::discover::tables::Group;

    fn found() -> Graphics {
        let drm = |gpu: usize, name: &str, minor: u32, bus: &str, kind: &str| DrmNode {
            gpu,
            path: format!("/dev/dri/{name}"),
            major: 226,
            minor,
            by_path: Some((
                format!("/dev/dri/by-path/pci-{bus}-{kind}"),
                format!("../{name}"),
            )),
        };
        Graphics {
            configs: vec![(
                "/usr/share/vulkan/icd.d/nvidia_icd.json".into(),
                "/etc/vulkan/icd.d/nvidia_icd.json".into(),
            )],
            libs: vec![Library {
                path: "/usr/lib/x86_64-linux-gnu/libnvidia-egl-gbm.so.1.1.0".into(),
                soname: "libnvidia-egl-gbm.so.1".into(),
                prefix: "libnvidia-egl-gbm.so",
                group: Group::Graphics,
            }],
            files: vec!["/usr/lib/xorg/modules/extensions/libglxserver_nvidia.so.535.1".into()],
            drm: vec![
                drm(0, "card1", 1, "0000:18:00.0", "card"),
                drm(0, "renderD128", 128, "0000:18:00.0", "render"),
                drm(1, "card2", 2, "0000:2a:00.0", "card"),
                drm(1, "renderD129", 129, "0000:2a:00.0", "render"),
            ],
        }
    }

    fn plan(caps: Caps, sel: &Selection) -> String {
        let g = found();
        let f = Facts {
            graphics: &g,
            version: "535.1",
            has_allocator: true,
        };
        let layout = Layout {
            libs: "/usr/lib64".into(),
            libs32: "/usr/lib".into(),
            bins: "/usr/bin".into(),
            compat_libs: Vec::new(),
        };
        let o = Options {
            caps,
            graphics: true,
            ..Options::default()
        };
        let mut p = Plan::default();
        add_graphics_from(&mut p, &f, sel, &o, &layout);
        p.to_string()
    }

    #[test]
    fn one_gpus_nodes_links_and_the_files() {
        let sel = Selection {
            gpus: vec![1],
            ..Selection::default()
        };
        assert_eq!(
            plan(Caps::DISPLAY, &sel),
            "tmpfs /proc/driver/nvidia ()\n\
             bind /usr/lib64/libnvidia-egl-gbm.so.1.1.0 <- driver-root:/usr/lib/x86_64-linux-gnu/libnvidia-egl-gbm.so.1.1.0 (ro,nosuid,nodev)\n\
             bind /usr/lib/xorg/modules/extensions/libglxserver_nvidia.so.535.1 <- driver-root:/usr/lib/xorg/modules/extensions/libglxserver_nvidia.so.535.1 (ro,nosuid,nodev)\n\
             bind /etc/vulkan/icd.d/nvidia_icd.json <- driver-root:/usr/share/vulkan/icd.d/nvidia_icd.json (ro,nosuid,nodev)\n\
             device /dev/dri/card2 <- dev-root:/dev/dri/card2 (c 226:2)\n\
             device /dev/dri/renderD129 <- dev-root:/dev/dri/renderD129 (c 226:129)\n\
             symlink /usr/lib64/gbm/nvidia-drm_gbm.so -> ../libnvidia-allocator.so.1\n\
             symlink /usr/lib/xorg/modules/extensions/libglxserver_nvidia.so -> libglxserver_nvidia.so.535.1\n\
             symlink /dev/dri/by-path/pci-0000:2a:00.0-card -> ../card2\n\
             symlink /dev/dri/by-path/pci-0000:2a:00.0-render -> ../renderD129\n\
             ldcache /usr/lib64/libnvidia-egl-gbm.so.1 -> libnvidia-egl-gbm.so.1.1.0 (libc6,x86-64)\n\
             ldcache-dir /usr/lib64\n\
             cgroup c 226:2 rw\n\
             cgroup c 226:129 rw\n"
        );
    }

    #[test]
    fn nothing_without_graphics_or_display() {
        let sel = Selection {
            gpus: vec![0, 1],
            all: true,
            ..Selection::default()
        };
        assert_eq!(
            plan(Caps::COMPUTE.union(Caps::UTILITY), &sel),
            "tmpfs /proc/driver/nvidia ()\n"
        );
    }

    #[test]
    fn a_mig_device_gets_no_drm_nodes() {
        let sel = Selection {
            gpus: vec![0],
            migs: vec![(0, 0)],
            all: false,
        };
        let p = plan(Caps::GRAPHICS, &sel);
        assert!(!p.contains("/dev/dri"), "{p}");
        assert!(p.contains("/etc/vulkan/icd.d/nvidia_icd.json"), "{p}");
    }
}
