use std::path::{Path, PathBuf};

use super::*;
use crate::discover::host::{HostQuery, read_host};
use crate::mock;
use crate::spec::cdi::parse_spec;

struct MockHost(PathBuf);

impl Drop for MockHost {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn mock_host(tag: &str, gpus: usize, mig: u32) -> (MockHost, Host) {
    mock_host_with(tag, gpus, mig, false)
}

fn mock_host_with(tag: &str, gpus: usize, mig: u32, graphics: bool) -> (MockHost, Host) {
    let dir = std::env::temp_dir().join(format!("nvbox-gen-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let spec = mock::Spec {
        dir: dir.clone(),
        gpus,
        model: mock::MODELS[0],
        driver_version: mock::DEFAULT_DRIVER_VERSION.to_owned(),
        mig,
        driver_files: true,
        stub_libraries: false,
        dev_mode: 0o666,
        dev_group: 0,
        var_run_link: true,
        graphics,
        platform: mock::Platform::Dgpu,
        gated: false,
    };
    mock::write_host(&spec).unwrap();
    let roots = Roots::new(Some(&dir), Some(&dir), Some(&dir), Some(&dir));
    let q = HostQuery {
        gpus: true,
        path_env: Some("/usr/bin".to_owned()),
        graphics,
        ..HostQuery::default()
    };
    let host = read_host(&roots, &q).unwrap();
    (MockHost(dir), host)
}

fn options() -> GenerateOptions {
    GenerateOptions {
        vendor: "nvidia.com".to_owned(),
        class: "gpu".to_owned(),
        strategies: vec![NameStrategy::Index, NameStrategy::Uuid],
        device_ids: vec!["all".to_owned()],
        no_all_device: false,
        management: false,
        disabled_hooks: Vec::new(),
        enabled_hooks: Vec::new(),
        hook: HookCommand::new("/usr/bin/nvidia-cdi-hook".to_owned(), Vec::new()),
        ldconfig_path: None,
        features: Features::default(),
    }
}

fn roundtrip(spec: &Spec) {
    for bytes in [
        serde_json::to_vec(spec).unwrap(),
        serde_yaml_ng::to_string(spec).unwrap().into_bytes(),
    ] {
        let back = parse_spec(&bytes, Path::new("generated")).unwrap();
        assert_eq!(&back, spec);
    }
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[test]
fn spec_validates_at_its_minimum_version() {
    if !is_root() {
        crate::testing::skip_or_fail("mock device nodes need root");
        return;
    }
    let (_d, host) = mock_host("min", 2, 0);
    let spec = generate_spec(&host, &options()).unwrap();
    let (a, b, c) = minimum_version(&spec);
    assert_eq!(spec.cdi_version, format!("{a}.{b}.{c}"));
    roundtrip(&spec);
    let names: Vec<&str> = spec.devices.iter().map(|d| d.name.as_str()).collect();
    let uuids: Vec<&str> = host.gpus.iter().map(|g| g.uuid.as_str()).collect();
    let mut want = vec!["0", "1", uuids[0], uuids[1], "all"];
    want.sort();
    assert_eq!(names, want);
}

#[test]
fn mig_parents_get_no_full_gpu_entry() {
    if !is_root() {
        // Without root the mock has no device nodes, and MIG entries have nothing to carry.
        crate::testing::skip_or_fail("mock device nodes need root");
        return;
    }
    let (_d, host) = mock_host("mig", 1, 2);
    let mut o = options();
    o.strategies = vec![
        NameStrategy::Index,
        NameStrategy::TypeIndex,
        NameStrategy::Uuid,
    ];
    let spec = generate_spec(&host, &o).unwrap();
    let names: Vec<&str> = spec.devices.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["0:0", "0:1", "all", "mig0:0", "mig0:1"]);
    let nodes: Vec<&str> = spec.devices[0]
        .container_edits
        .device_nodes
        .iter()
        .map(|n| n.path.as_str())
        .collect();
    assert_eq!(nodes[0], "/dev/nvidia0");
    assert_eq!(nodes.len(), 3, "parent + gi and ci access caps: {nodes:?}");
    roundtrip(&spec);
}

#[test]
fn hooks_can_be_disabled_and_enabled() {
    let mut o = options();
    assert!(o.hook_enabled("update-ldcache"));
    assert!(!o.hook_enabled("chmod"));
    o.disabled_hooks = vec!["all".to_owned()];
    o.enabled_hooks = vec!["chmod".to_owned()];
    assert!(!o.hook_enabled("update-ldcache"));
    assert!(o.hook_enabled("chmod"));
}

#[test]
fn ctk_hook_path_switches_the_argument_form() {
    let h = HookCommand::new("/usr/bin/nvidia-ctk".to_owned(), Vec::new());
    assert_eq!(h.make("noop", &[]).args, ["nvidia-ctk", "hook", "noop"]);
    let h = HookCommand::new("/opt/nvidia-cdi-hook".to_owned(), Vec::new());
    assert_eq!(h.make("noop", &[]).args, ["nvidia-cdi-hook", "noop"]);
}

#[test]
fn devices_repeat_nothing_of_the_common_edits() {
    if !is_root() {
        crate::testing::skip_or_fail("mock device nodes need root");
        return;
    }
    let (_d, host) = mock_host("tidy", 2, 0);
    let spec = generate_spec(&host, &options()).unwrap();
    let common = &spec.container_edits;
    for d in &spec.devices {
        let e = &d.container_edits;
        assert!(
            e.mounts.iter().all(|m| !common.mounts.contains(m)),
            "{}",
            d.name
        );
        assert!(
            e.device_nodes
                .iter()
                .all(|n| !common.device_nodes.contains(n)),
            "{}",
            d.name
        );
    }
    assert!(
        common
            .mounts
            .iter()
            .any(|m| m.container_path.ends_with("/libcuda.so.535.104.05"))
    );
    let ldcache = common
        .hooks
        .iter()
        .find(|h| h.args.get(1).is_some_and(|a| a == "update-ldcache"))
        .unwrap();
    assert_eq!(ldcache.args[2..], ["--folder", "/usr/lib/x86_64-linux-gnu"]);
}

#[test]
fn graphics_files_are_common_and_drm_nodes_follow_their_gpu() {
    if !is_root() {
        crate::testing::skip_or_fail("mock device nodes need root");
        return;
    }
    let (_d, host) = mock_host_with("gfx", 2, 0, true);
    let spec = generate_spec(&host, &options()).unwrap();
    let mounts: Vec<(String, &str)> = spec
        .container_edits
        .mounts
        .iter()
        .map(|m| {
            let h = m
                .host_path
                .strip_prefix(host.roots.driver.to_str().unwrap());
            (h.unwrap().to_owned(), m.container_path.as_str())
        })
        .collect();
    for (h, c) in [
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
            "/etc/OpenCL/vendors/nvidia.icd",
            "/etc/OpenCL/vendors/nvidia.icd",
        ),
        (
            "/usr/lib/xorg/modules/drivers/nvidia_drv.so",
            "/usr/lib/xorg/modules/drivers/nvidia_drv.so",
        ),
    ] {
        assert!(
            mounts.iter().any(|(mh, mc)| mh == h && *mc == c),
            "{h} -> {c} missing from {mounts:#?}"
        );
    }
    let dev0 = &spec
        .devices
        .iter()
        .find(|d| d.name == "0")
        .unwrap()
        .container_edits;
    let nodes: Vec<&str> = dev0.device_nodes.iter().map(|n| n.path.as_str()).collect();
    assert_eq!(
        nodes,
        ["/dev/nvidia0", "/dev/dri/card1", "/dev/dri/renderD128"]
    );
    let links = &dev0.hooks[0].args;
    assert_eq!(
        links[1..],
        [
            "create-symlinks",
            "--link",
            "../card1::/dev/dri/by-path/pci-0000:18:00.0-card",
            "--link",
            "../renderD128::/dev/dri/by-path/pci-0000:18:00.0-render"
        ]
    );
    // The card node is 0660 root:video, so its group is added for the container's user.
    assert_eq!(dev0.additional_gids, [44]);
    roundtrip(&spec);
}
