//! Graphics discovery on crafted driver roots: search order, confinement, what is skipped.

use super::*;

#[test]
fn platform_library_versions() {
    assert!(matches_version(
        "libnvidia-egl-gbm.so.1.1.0",
        "libnvidia-egl-gbm.so",
        None
    ));
    assert!(!matches_version(
        "libnvidia-egl-gbm.so.1",
        "libnvidia-egl-gbm.so",
        None
    ));
    // `wayland` must not take `wayland2`'s files.
    assert!(!matches_version(
        "libnvidia-egl-wayland2.so.1.0.0",
        "libnvidia-egl-wayland.so",
        None
    ));
    assert!(matches_version(
        "libnvidia-vulkan-producer.so.535.104.05",
        VULKAN_PRODUCER,
        Some("535.104.05")
    ));
    assert!(!matches_version(
        "libnvidia-vulkan-producer.so.1",
        VULKAN_PRODUCER,
        Some("535.104.05")
    ));
}

use std::os::unix::fs::symlink;
use std::path::PathBuf;

use crate::discover::gpus::BusId;
use nix::sys::stat::{Mode, SFlag, makedev, mknod};

struct Tree(PathBuf);

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Tree {
    fn new(tag: &str) -> Tree {
        let p = std::env::temp_dir().join(format!("nvbox-gfx-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Tree(p)
    }

    fn file(&self, path: &str, text: &str) {
        let p = self.0.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    fn link(&self, path: &str, target: &str) {
        let p = self.0.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        symlink(target, p).unwrap();
    }

    fn read(&self, lib_dirs: &[&str], gpus: &[Gpu]) -> Graphics {
        let root = RootDir::open(&self.0).unwrap();
        let roots = Roots::new(Some(&self.0), Some(&self.0), Some(&self.0), Some(&self.0));
        let dirs: Vec<String> = lib_dirs.iter().map(|d| (*d).to_owned()).collect();
        let search: Vec<String> = ["/etc", "/usr/local/share", "/usr/share"]
            .iter()
            .map(|d| (*d).to_owned())
            .collect();
        read_graphics(&root, &roots, gpus, "535.1", &dirs, &search)
    }
}

fn container_path<'a>(g: &'a Graphics, container: &str) -> Option<&'a str> {
    g.configs
        .iter()
        .find(|(_, c)| c == container)
        .map(|(h, _)| h.as_str())
}

#[test]
fn config_files_resolve_inside_the_driver_root() {
    let t = Tree::new("cfg");
    // GKE: the Vulkan ICD at the root's top.
    t.file("/vulkan/icd.d/nvidia_icd.json", "{}");
    // An absolute link means the driver root's /opt, not the host's.
    t.file("/opt/nv/10_nvidia.json", "{}");
    t.link(
        "/usr/share/glvnd/egl_vendor.d/10_nvidia.json",
        "/opt/nv/10_nvidia.json",
    );
    // An escape is clamped to the root, where nothing is.
    t.link(
        "/usr/share/egl/egl_external_platform.d/15_nvidia_gbm.json",
        "../../../../../../../../etc/passwd",
    );
    // A FIFO under a config's name is never a config.
    std::fs::create_dir_all(t.0.join("etc/OpenCL/vendors")).unwrap();
    nix::unistd::mkfifo(&t.0.join("etc/OpenCL/vendors/nvidia.icd"), Mode::S_IRWXU).unwrap();
    // /etc before /usr/share; one host file is mounted once.
    t.file("/etc/vulkan/implicit_layer.d/nvidia_layers.json", "{}");
    t.file(
        "/usr/share/vulkan/implicit_layer.d/nvidia_layers.json",
        "{}",
    );
    t.link(
        "/etc/vulkan/icd.d/nvidia_layers.json",
        "../implicit_layer.d/nvidia_layers.json",
    );
    let g = t.read(&[], &[]);
    assert_eq!(
        container_path(&g, "/etc/vulkan/icd.d/nvidia_icd.json"),
        Some("/vulkan/icd.d/nvidia_icd.json")
    );
    assert_eq!(
        container_path(&g, "/usr/share/glvnd/egl_vendor.d/10_nvidia.json"),
        Some("/opt/nv/10_nvidia.json")
    );
    assert_eq!(
        container_path(
            &g,
            "/usr/share/egl/egl_external_platform.d/15_nvidia_gbm.json"
        ),
        None
    );
    assert_eq!(container_path(&g, "/etc/OpenCL/vendors/nvidia.icd"), None);
    let layers: Vec<&(String, String)> = g
        .configs
        .iter()
        .filter(|(h, _)| h == "/etc/vulkan/implicit_layer.d/nvidia_layers.json")
        .collect();
    assert_eq!(layers.len(), 1, "{:?}", g.configs);
    assert_eq!(layers[0].1, "/etc/vulkan/icd.d/nvidia_layers.json");
}

#[test]
fn libraries_and_xorg_modules_in_search_order() {
    let t = Tree::new("libs");
    let so = |soname: &str| {
        crate::mock::elf::shared_object(crate::mock::elf::Machine::X86_64, soname, &[], None)
    };
    let write = |path: &str, bytes: Vec<u8>| {
        let p = t.0.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    };
    write(
        "/opt/drv/libnvidia-egl-gbm.so.1.1.0",
        so("libnvidia-egl-gbm.so.1"),
    );
    write(
        "/opt/drv/libnvidia-egl-gbm.so.1.1.2",
        so("libnvidia-egl-gbm.so.1"),
    );
    write(
        "/usr/lib64/libnvidia-egl-gbm.so.1.9.9",
        so("libnvidia-egl-gbm.so.1"),
    );
    write(
        "/usr/lib64/libnvidia-egl-wayland2.so.1.0.0",
        so("libnvidia-egl-wayland2.so.1"),
    );
    write(
        "/usr/lib64/libnvidia-vulkan-producer.so.535.1",
        so("libnvidia-vulkan-producer.so.535.1"),
    );
    write("/usr/lib64/libnvidia-vulkan-producer.so.530.9", so("x"));
    write("/opt/drv/nvidia/xorg/nvidia_drv.so", so("nvidia_drv.so"));
    write(
        "/usr/lib/xorg/modules/drivers/nvidia_drv.so",
        so("nvidia_drv.so"),
    );
    write(
        "/usr/lib/xorg/modules/extensions/libglxserver_nvidia.so.535.1",
        so("g"),
    );
    let g = t.read(&["/opt/drv"], &[]);
    let libs: Vec<(&str, &str)> = g
        .libs
        .iter()
        .map(|l| (l.path.as_str(), l.soname.as_str()))
        .collect();
    assert_eq!(
        libs,
        [
            // The driver's own directory first, and the highest version there.
            (
                "/opt/drv/libnvidia-egl-gbm.so.1.1.2",
                "libnvidia-egl-gbm.so.1"
            ),
            // `wayland` found nothing: wayland2's file is not its.
            (
                "/usr/lib64/libnvidia-egl-wayland2.so.1.0.0",
                "libnvidia-egl-wayland2.so.1"
            ),
            (
                "/usr/lib64/libnvidia-vulkan-producer.so.535.1",
                "libnvidia-vulkan-producer.so.535.1"
            ),
        ]
    );
    assert_eq!(
        g.files,
        [
            "/opt/drv/nvidia/xorg/nvidia_drv.so",
            "/usr/lib/xorg/modules/extensions/libglxserver_nvidia.so.535.1"
        ]
    );
}

fn gpu(i: usize, bus: &str) -> Gpu {
    Gpu {
        index: i,
        minor: i as u32,
        uuid: format!("GPU-{i}"),
        bus_id: BusId::parse(bus).unwrap(),
        model: "NVIDIA H100".into(),
        proc_dir: bus.to_owned(),
        pci_device_id: None,
        arch: None,
        brand: "Nvidia",
        mig: Default::default(),
    }
}

#[test]
fn drm_nodes_of_each_gpu_with_their_links() {
    if !nix::unistd::geteuid().is_root() {
        crate::testing::skip_or_fail("DRM nodes need root");
        return;
    }
    let t = Tree::new("drm");
    let node = |name: &str, minor: u64| {
        let p = t.0.join("dev/dri").join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        mknod(
            &p,
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o660),
            makedev(226, minor),
        )
        .unwrap();
    };
    for (bus, names) in [
        ("0000:18:00.0", ["card1", "renderD128"]),
        ("0000:2a:00.0", ["card2", "renderD129"]),
    ] {
        for n in names {
            t.file(
                &format!("/sys/bus/pci/devices/{bus}/drm/{n}/dev"),
                "226:0\n",
            );
        }
    }
    node("card1", 1);
    node("renderD128", 128);
    node("card2", 2);
    // renderD129 is in sysfs but has no node: it is left out.
    t.link("/dev/dri/by-path/pci-0000:18:00.0-card", "../card1");
    t.link("/dev/dri/by-path/pci-0000:18:00.0-render", "../renderD128");
    // A link that names another node is not this GPU's.
    t.link("/dev/dri/by-path/pci-0000:2a:00.0-card", "../card1");
    let g = t.read(&[], &[gpu(0, "0000:18:00.0"), gpu(1, "0000:2a:00.0")]);
    let got: Vec<(usize, &str, u32, Option<&str>)> = g
        .drm
        .iter()
        .map(|n| {
            let link = n.by_path.as_ref().map(|(l, _)| l.as_str());
            (n.gpu, n.path.as_str(), n.minor, link)
        })
        .collect();
    assert_eq!(
        got,
        [
            (
                0,
                "/dev/dri/card1",
                1,
                Some("/dev/dri/by-path/pci-0000:18:00.0-card")
            ),
            (
                0,
                "/dev/dri/renderD128",
                128,
                Some("/dev/dri/by-path/pci-0000:18:00.0-render")
            ),
            (1, "/dev/dri/card2", 2, None),
        ]
    );
}

/// The soname comes from the ELF (here one no name would give), also from a library laid out
/// like a real one: its dynamic section at the end, mapped by a second PT_LOAD.
#[test]
fn soname_read_from_a_real_layout() {
    let t = Tree::new("soname");
    let path = t.0.join("usr/lib64/libnvidia-egl-gbm.so.1.1.0");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let layout = crate::mock::elf::Layout::like_nvidia(68880);
    crate::mock::elf::library_image(
        crate::mock::elf::Machine::X86_64,
        "libnvidia-egl-gbm.so.7",
        &["libc.so.6"],
        None,
        Some(&layout),
    )
    .write_to(&path)
    .unwrap();
    let g = t.read(&[], &[]);
    assert_eq!(g.libs[0].soname, "libnvidia-egl-gbm.so.7");
}
