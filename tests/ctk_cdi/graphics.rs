//! Generated specs on a graphics host (`nvbox mock --graphics`): the golden spec, and Podman
//! running it: a container gets the loaders' files, the OpenCL ICD, and the DRM nodes and
//! by-path links of the GPU it asked for, never another GPU's.

use super::*;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};

const MOCK: &[&str] = &["--gpus", "2", "--graphics"];

#[test]
fn graphics_host_golden() {
    if !rooted() {
        return;
    }
    golden("2gpu-graphics.yaml", &generate(MOCK, &[]));
}

#[test]
fn podman_runs_generated_graphics_spec() {
    if !have_prerequisites(&[PODMAN, BUSYBOX, "/usr/bin/unshare", "/usr/bin/conmon"]) {
        return;
    }
    // A host of its own: Podman 4.3 (Debian 12) reads CDI specs up to 0.6.0, and the udev
    // default 0660 `video` card nodes make the spec 0.7.0 (their group becomes an
    // additionalGids entry, as upstream 1.19+ does), so here every DRM node is opened to all.
    let dir = TempDir::new("gfx-host");
    let root = dir.path().join("host");
    let config = dir.path().join("config.toml");
    std::fs::write(&config, common::mock(&root, MOCK)).unwrap();
    for e in std::fs::read_dir(root.join("dev/dri")).unwrap().flatten() {
        if e.file_type().unwrap().is_char_device() {
            std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(0o666)).unwrap();
        }
    }
    let host = common::container::Host { root, config };
    let hook = applet_dir().join("nvidia-cdi-hook");
    let spec_dir = TempDir::new("podman-cdi-gfx");
    let spec_file = spec_dir.path().join("nvidia.yaml");
    ok(&ctk(
        &host.config,
        &[
            "cdi",
            "generate",
            "--nvidia-cdi-hook-path",
            hook.to_str().unwrap(),
            "--output",
            spec_file.to_str().unwrap(),
        ],
    ));
    let podman = CdiPodman::new();
    let rootfs = TempDir::new("podman-rootfs-gfx");
    make_rootfs(rootfs.path(), true);
    podman.import(rootfs.path(), "nvbox-cdi-gfx");
    let script = "cat /etc/vulkan/icd.d/nvidia_icd.json /etc/OpenCL/vendors/nvidia.icd \
        /usr/share/glvnd/egl_vendor.d/10_nvidia.json; \
        echo NODES; stat -c '%n %t:%T' /dev/dri/card* /dev/dri/renderD* | sort; \
        echo LINKS; stat -c '%N' /dev/dri/by-path/* | sort; \
        echo GBM; readlink /usr/lib/x86_64-linux-gnu/gbm/nvidia-drm_gbm.so; \
        echo CACHE=$(grep -c libnvidia-egl-gbm.so.1 /etc/ld.so.cache)";
    for (index, card, render) in [(0usize, 1u32, 128u32), (1, 2, 129)] {
        let device = format!("nvidia.com/gpu={index}");
        let out = podman.run(spec_dir.path(), &device, "nvbox-cdi-gfx", script);
        let stdout = text(&out.stdout);
        assert!(
            out.status.success(),
            "{device}: {}\n{stdout}",
            text(&out.stderr)
        );
        let (files, rest) = stdout.split_once("NODES\n").unwrap();
        let want = format!(
            "{}{}{}",
            std::fs::read_to_string(host.root.join("usr/share/vulkan/icd.d/nvidia_icd.json"))
                .unwrap(),
            std::fs::read_to_string(host.root.join("etc/OpenCL/vendors/nvidia.icd")).unwrap(),
            std::fs::read_to_string(
                host.root
                    .join("usr/share/glvnd/egl_vendor.d/10_nvidia.json")
            )
            .unwrap(),
        );
        assert_eq!(files, want, "{device}: the loaders' files");
        let (nodes, rest) = rest.split_once("LINKS\n").unwrap();
        assert_eq!(
            nodes,
            format!("/dev/dri/card{card} e2:{card:x}\n/dev/dri/renderD{render} e2:{render:x}\n"),
            "{device}: only its own DRM nodes"
        );
        let bus = host.gpus()[index].bus.to_lowercase();
        let (links, rest) = rest.split_once("GBM\n").unwrap();
        assert_eq!(
            links,
            format!(
                "'/dev/dri/by-path/pci-{bus}-card' -> '../card{card}'\n'/dev/dri/by-path/pci-{bus}-render' -> '../renderD{render}'\n"
            ),
            "{device}: by-path links"
        );
        assert!(
            rest.starts_with("../libnvidia-allocator.so.1\n"),
            "{device}: {rest}"
        );
        assert!(
            !rest.contains("CACHE=0"),
            "{device}: EGL GBM not cached: {rest}"
        );
    }
}
