//! `nvidia-ctk cdi generate --mode gds|mofed|gdrcopy|nvswitch|imex` on a mock HPC node
//! (`nvbox mock --gated`): each spec parses, names its kind after the mode, holds exactly the
//! host's nodes of that kind, and applies with real Podman; a host without them is an error.

mod common;

use std::path::Path;
use std::process::Output;

use common::container::{BUSYBOX, have_prerequisites, make_rootfs, shared_host, text};
use common::podman_cdi::{CdiPodman, PODMAN};
use common::{TempDir, command, nvbox};
use serde_json::Value;

fn ctk(config: &Path, args: &[&str]) -> Output {
    command(nvbox())
        .env("NVIDIA_CTK_CONFIG_FILE_PATH", config)
        .arg("nvidia-ctk")
        .args(args)
        .output()
        .unwrap()
}

fn generate(config: &Path, args: &[&str]) -> Value {
    let mut all = vec!["cdi", "generate", "--format", "json"];
    all.extend_from_slice(args);
    let out = ctk(config, &all);
    assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// (mode, kind, container paths of its nodes)
fn modes() -> Vec<(&'static str, &'static str, Vec<String>)> {
    let mut fs: Vec<String> = (0..16).map(|i| format!("/dev/nvidia-fs{i}")).collect();
    fs.sort();
    let mut sw: Vec<String> = (0..4).map(|i| format!("/dev/nvidia-nvswitch{i}")).collect();
    sw.push("/dev/nvidia-nvswitchctl".into());
    vec![
        ("gds", "nvidia.com/gds", fs),
        (
            "mofed",
            "nvidia.com/mofed",
            vec![
                "/dev/infiniband/rdma_cm".into(),
                "/dev/infiniband/uverbs0".into(),
            ],
        ),
        ("gdrcopy", "nvidia.com/gdrcopy", vec!["/dev/gdrdrv".into()]),
        ("nvswitch", "nvidia.com/nvswitch", sw),
        (
            "imex",
            "nvidia.com/imex-channel",
            vec!["/dev/nvidia-caps-imex-channels/channel0".into()],
        ),
    ]
}

fn node_paths(device: &Value) -> Vec<String> {
    device["containerEdits"]["deviceNodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["path"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn each_mode_lists_the_hosts_nodes() {
    if !common::is_root() {
        common::skip_or_fail("mock device nodes need root");
        return;
    }
    let host = shared_host(&["--gpus", "1", "--gated"]);
    for (mode, kind, nodes) in modes() {
        let spec = generate(&host.config, &["--mode", mode]);
        assert_eq!(spec["kind"], kind, "{mode}");
        assert_eq!(
            spec["containerEdits"]["env"],
            serde_json::json!(["NVIDIA_VISIBLE_DEVICES=void"]),
            "{mode}"
        );
        let devices = spec["devices"].as_array().unwrap();
        let names: Vec<&str> = devices
            .iter()
            .map(|d| d["name"].as_str().unwrap())
            .collect();
        let want_names = if mode == "imex" {
            vec!["0", "all"]
        } else {
            vec!["all"]
        };
        assert_eq!(names, want_names, "{mode}");
        let all = devices.iter().find(|d| d["name"] == "all").unwrap();
        assert_eq!(node_paths(all), nodes, "{mode}");
        for n in all["containerEdits"]["deviceNodes"].as_array().unwrap() {
            let path = n["path"].as_str().unwrap();
            let (ma, mi) = host.rdev(path);
            assert_eq!(
                (n["major"].as_u64(), n["minor"].as_u64()),
                (Some(ma), Some(mi)),
                "{path}"
            );
            assert_eq!(n["hostPath"], host.file(path).display().to_string());
        }
        let mounts: Vec<&str> = all["containerEdits"]["mounts"]
            .as_array()
            .map(|m| {
                m.iter()
                    .map(|m| m["containerPath"].as_str().unwrap())
                    .collect()
            })
            .unwrap_or_default();
        let want_mounts = if mode == "gds" {
            vec!["/etc/cufile.json", "/run/udev"]
        } else {
            vec![]
        };
        assert_eq!(mounts, want_mounts, "{mode}");
    }
    // --class wins over the mode's name; the MAD nodes are never MOFED's.
    let spec = generate(&host.config, &["--mode", "mofed", "--class", "rdma"]);
    assert_eq!(spec["kind"], "nvidia.com/rdma");
    // IMEX ids as upstream takes them, and their errors.
    let spec = generate(
        &host.config,
        &[
            "--mode",
            "imex",
            "--device-id",
            "channel0",
            "--no-all-device",
        ],
    );
    assert_eq!(spec["devices"].as_array().unwrap().len(), 1);
    for (id, err) in [
        ("5", "IMEX channel 5 not found at"),
        ("1048576", "invalid channel ID 1048576"),
        ("x", "invalid channel ID x"),
    ] {
        let out = ctk(
            &host.config,
            &["cdi", "generate", "--mode", "imex", "--device-id", id],
        );
        let e = text(&out.stderr);
        assert!(
            !out.status.success() && e.contains(err) && e.lines().count() == 1,
            "{id}: {e}"
        );
    }
}

/// A host without the drivers: one line naming what is missing, no spec.
#[test]
fn a_host_without_them_is_an_error() {
    if !common::is_root() {
        common::skip_or_fail("mock device nodes need root");
        return;
    }
    let host = shared_host(&["--gpus", "1"]);
    for mode in ["gds", "mofed", "gdrcopy", "nvswitch"] {
        let out = ctk(&host.config, &["cdi", "generate", "--mode", mode]);
        let e = text(&out.stderr);
        assert!(!out.status.success(), "{mode}");
        assert!(out.stdout.is_empty(), "{mode}");
        assert!(
            e.starts_with(&format!(
                "nvidia-ctk: failed to generate CDI spec: no {mode} device nodes under "
            )) && e.lines().count() == 1,
            "{mode}: {e}"
        );
    }
}

/// Every mode's spec, written to the spec directory, applies with Podman: the container has the
/// nodes with the host's numbers, and GDS's files.
#[test]
fn podman_applies_each_generated_spec() {
    if !have_prerequisites(&[PODMAN, BUSYBOX, "/usr/bin/unshare", "/usr/bin/conmon"]) {
        return;
    }
    let host = shared_host(&["--gpus", "1", "--gated"]);
    let spec_dir = TempDir::new("podman-gated-cdi");
    for (mode, _, _) in modes() {
        let file = spec_dir.path().join(format!("{mode}.yaml"));
        let out = ctk(
            &host.config,
            &[
                "cdi",
                "generate",
                "--mode",
                mode,
                "--output",
                file.to_str().unwrap(),
            ],
        );
        assert!(out.status.success(), "{mode}: {}", text(&out.stderr));
    }
    let podman = CdiPodman::new();
    let rootfs = TempDir::new("podman-gated-rootfs");
    make_rootfs(rootfs.path(), true);
    podman.import(rootfs.path(), "nvbox-gated");
    let script = "for n in /dev/nvidia-fs* /dev/gdrdrv /dev/infiniband/* /dev/nvidia-nvswitch* \
        /dev/nvidia-caps-imex-channels/*; do [ -c $n ] && stat -c '%n %t:%T' $n; done; \
        grep -c max_direct_io_size_kb /etc/cufile.json 2>/dev/null; ls /run/udev/data 2>/dev/null; true";
    for (mode, kind, nodes) in modes() {
        let device = format!("{kind}=all");
        let out = podman.run(spec_dir.path(), &device, "nvbox-gated", script);
        let stdout = text(&out.stdout);
        assert!(
            out.status.success(),
            "{device}: {}\n{stdout}",
            text(&out.stderr)
        );
        let mut want = String::new();
        for n in &nodes {
            let (ma, mi) = host.rdev(n);
            want.push_str(&format!("{n} {ma:x}:{mi:x}\n"));
        }
        if mode == "gds" {
            want.push_str("1\nb259:0\n");
        }
        let mut got: Vec<&str> = stdout.lines().collect();
        let mut w: Vec<&str> = want.lines().collect();
        got.sort();
        w.sort();
        assert_eq!(got, w, "{device}");
    }
}
