//! Upstream 1.20 parity, end to end with real runc through the runtime shim and real Podman
//! with a generated spec (issue 14, gaps 2-5): device nodes that keep the host's 0660
//! `root:video` and the group a non-root user needs, the `none` device, `runtime.nvidia.com/gpu`
//! names, `channelN` IMEX spellings, and every feature flag and setting both ways.

mod common;

use common::TempDir;
use common::container::*;
use common::engines::*;
use common::podman_cdi::CdiPodman;
use serde_json::{Value, json};

/// A host whose driver made its nodes 0660 `root:video` (`NVreg_DeviceFileMode=0660`,
/// `NVreg_DeviceFileGID=44`).
fn video_host() -> &'static Host {
    shared_host(&["--gpus", "2", "--dev-mode", "0660", "--dev-group", "44"])
}

fn ready() -> bool {
    have_prerequisites(&[RUNC, BUSYBOX])
}

/// Mode and group of the GPU node, the user's groups, and what opening the node gives.
const NODE_PROBE: &str = "stat -c 'NODE %n %a %g' /dev/nvidia0; echo \"GROUPS $(id -G)\"; \
    echo \"OPEN $(cat /dev/nvidia0 2>&1 | head -n 1)\"";

struct NodeSeen {
    mode_group: String,
    groups: Vec<String>,
    open: String,
}

fn node_seen(stdout: &str) -> NodeSeen {
    let line = |key: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} line in:\n{stdout}"))
            .trim()
            .to_string()
    };
    NodeSeen {
        mode_group: line("NODE /dev/nvidia0 "),
        groups: line("GROUPS ")
            .split_whitespace()
            .map(str::to_string)
            .collect(),
        open: line("OPEN "),
    }
}

/// uid 1000 opened its GPU node: the simulated host has no driver behind major 195, so the
/// kernel answers ENXIO; EACCES or EPERM would mean the permissions stopped it.
fn assert_opened(seen: &NodeSeen, what: &str) {
    assert!(
        seen.open.contains("No such device or address"),
        "{what}: opening /dev/nvidia0 as uid 1000 gave {:?}",
        seen.open
    );
    assert_eq!(
        seen.mode_group, "660 44",
        "{what}: the node's mode and group"
    );
}

fn user_1000_bundle(env: &[&str]) -> Bundle {
    let mut bundle = Bundle::new(true);
    bundle.script(NODE_PROBE);
    bundle.env(env);
    bundle.spec["process"]["user"] = json!({"uid": 1000, "gid": 1000});
    bundle
}

fn additional_gids(config: &[u8]) -> Value {
    let spec: Value = serde_json::from_slice(config).unwrap();
    spec["process"]["user"]["additionalGids"].clone()
}

const NO_GIDS_FEATURE: &str = "[features]\nno-additional-gids-for-device-nodes = true\n";

#[test]
fn jit_cdi_keeps_0660_video_nodes_and_adds_the_group() {
    if !ready() {
        return;
    }
    let host = video_host();
    let flag = "[nvidia-container-runtime.modes.jit-cdi]\n\
                nvcdi-feature-flags = [\"no-additional-gids-for-device-nodes\"]\n";
    for (extra, with_gid) in [("", true), (NO_GIDS_FEATURE, false), (flag, false)] {
        let config = ShimConfig::new(host, &format!("{}{extra}", mode_toml("jit-cdi")));
        let mut bundle = user_1000_bundle(&["NVIDIA_VISIBLE_DEVICES=0"]);
        let run = run_shim(&mut bundle, &config.path, &[]);
        assert_created(&run);
        let spec: Value = serde_json::from_slice(&run.config_after).unwrap();
        let node = spec["linux"]["devices"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["path"] == "/dev/nvidia0")
            .unwrap();
        assert_eq!(node["fileMode"], json!(0o660), "{extra}: {node}");
        assert_eq!(node["gid"], json!(44), "{extra}: {node}");
        let seen = node_seen(&run.stdout);
        assert_opened(&seen, extra);
        let gids = additional_gids(&run.config_after);
        if with_gid {
            assert_eq!(gids, json!([44]));
            assert!(seen.groups.contains(&"44".to_string()), "{:?}", seen.groups);
        } else {
            assert_eq!(gids, Value::Null, "{extra}");
            assert!(
                !seen.groups.contains(&"44".to_string()),
                "{:?}",
                seen.groups
            );
        }
    }
}

/// Legacy through the runtime: the hook bind-mounts the host's nodes, so their mode and group
/// hold in the container; the shim adds the group (upstream does not, and its non-root users
/// get EACCES, which the feature flag brings back here).
#[test]
fn legacy_adds_the_node_group_for_non_root_users() {
    if !ready() {
        return;
    }
    let host = video_host();
    for (extra, with_gid) in [("", true), (NO_GIDS_FEATURE, false)] {
        let config = ShimConfig::new(host, &format!("{}{extra}", mode_toml("legacy")));
        let mut bundle = user_1000_bundle(&["NVIDIA_VISIBLE_DEVICES=0"]);
        let run = run_shim(&mut bundle, &config.path, &[]);
        assert_created(&run);
        let seen = node_seen(&run.stdout);
        assert_eq!(seen.mode_group, "660 44");
        if with_gid {
            assert_eq!(additional_gids(&run.config_after), json!([44]));
            assert_opened(&seen, "legacy");
        } else {
            assert_eq!(additional_gids(&run.config_after), Value::Null);
            assert!(seen.open.contains("Permission denied"), "{}", seen.open);
        }
    }
}

fn podman_ready() -> bool {
    have_prerequisites(&[PODMAN, BUSYBOX, "/usr/bin/unshare", CONMON])
}

fn podman_with_image(tag: &str) -> CdiPodman {
    let podman = CdiPodman::new();
    let rootfs = TempDir::new(tag);
    make_rootfs(rootfs.path(), true);
    podman.import(rootfs.path(), "nvbox-parity");
    podman
}

/// A generated spec on the 0660 `root:video` host carries each node's mode and group and the
/// group as an additional GID (CDI 0.7.0). Debian 12's Podman 4.3 reads CDI specs up to 0.6.0
/// only, as it would upstream's, so Podman runs the spec made with
/// `no-additional-gids-for-device-nodes` (0.5.0): the CDI library makes the container's user own
/// the node, and uid 1000 opens it without the group.
#[test]
fn podman_generated_spec_on_0660_video_host() {
    if !podman_ready() {
        return;
    }
    let host = video_host();
    let dir = TempDir::new("parity-cdi");
    let spec = generate_into(host, dir.path(), &[]);
    assert_eq!(spec["cdiVersion"], "0.7.0");
    assert_eq!(spec["containerEdits"]["additionalGids"], json!([44]));
    let spec = generate_into(
        host,
        dir.path(),
        &["--feature-flag", "no-additional-gids-for-device-nodes"],
    );
    assert_eq!(spec["cdiVersion"], "0.5.0");
    assert_eq!(spec["containerEdits"]["additionalGids"], Value::Null);
    let node = &spec["devices"][0]["containerEdits"]["deviceNodes"][0];
    assert_eq!(node["fileMode"], json!(0o660), "{node}");
    assert_eq!(node["gid"], json!(44), "{node}");
    let podman = podman_with_image("parity-rootfs");
    let out = podman.run_with(
        dir.path(),
        &["--user", "1000:1000", "--device", "nvidia.com/gpu=0"],
        "nvbox-parity",
        NODE_PROBE,
    );
    assert!(out.status.success(), "podman: {}", text(&out.stderr));
    let seen = node_seen(&text(&out.stdout));
    assert_opened(&seen, "podman");
    assert!(
        !seen.groups.contains(&"44".to_string()),
        "{:?}",
        seen.groups
    );
}

const DRIVER_ONLY_PROBE: &str = "ls /dev | grep '^nvidia' | sort | tr '\\n' ' '; echo; \
    test -f /usr/lib/x86_64-linux-gnu/libcuda.so.535.104.05 && echo LIBCUDA; \
    echo \"EMPTY=${NVCT_EMPTY_DEVICE-unset}\"";

/// `--device-id none` gives upstream's `none` device; `NVIDIA_VISIBLE_DEVICES=none` in cdi mode
/// and Podman's `--device nvidia.com/gpu=none` then give the driver and no GPU.
#[test]
fn none_device_resolves_in_cdi_mode_and_podman() {
    if !ready() {
        return;
    }
    let host = shared_host(&["--gpus", "2"]);
    let dir = TempDir::new("none-cdi");
    let spec = generate_into(host, dir.path(), &["--device-id", "none"]);
    assert_eq!(
        spec["devices"],
        json!([{"name": "none", "containerEdits": {"env": ["NVCT_EMPTY_DEVICE="]}}])
    );
    let config = ShimConfig::new(
        host,
        &format!(
            "{}[nvidia-container-runtime.modes.cdi]\nspec-dirs = [\"{}\"]\n",
            mode_toml("cdi"),
            dir.path().display()
        ),
    );
    let mut bundle = Bundle::new(true);
    bundle.script(DRIVER_ONLY_PROBE);
    bundle.env(&["NVIDIA_VISIBLE_DEVICES=none"]);
    let run = run_shim(&mut bundle, &config.path, &[]);
    assert_created(&run);
    let want_nodes = "nvidia-modeset nvidia-uvm nvidia-uvm-tools nvidiactl ";
    let check = |stdout: &str, what: &str| {
        let mut lines = stdout.lines();
        assert_eq!(lines.next(), Some(want_nodes), "{what}:\n{stdout}");
        assert!(stdout.contains("LIBCUDA"), "{what}:\n{stdout}");
        assert!(stdout.lines().any(|l| l == "EMPTY="), "{what}:\n{stdout}");
    };
    check(&run.stdout, "cdi mode");
    if podman_ready() {
        let podman = podman_with_image("none-rootfs");
        let out = podman.run(
            dir.path(),
            "nvidia.com/gpu=none",
            "nvbox-parity",
            DRIVER_ONLY_PROBE,
        );
        assert!(out.status.success(), "podman: {}", text(&out.stderr));
        check(&text(&out.stdout), "podman");
    }
}

/// `runtime.nvidia.com/gpu=<index|uuid|all>`: a spec made at `create` (jit-cdi), in auto mode
/// from the env and in cdi mode from a device plugin's annotation; never mixed with spec files.
#[test]
fn runtime_nvidia_com_names_are_just_in_time() {
    if !ready() {
        return;
    }
    let host = shared_host(&[]);
    let uuid = host.gpus()[2].uuid.clone();
    for (visible, devices) in [
        ("runtime.nvidia.com/gpu=1".to_string(), "1".to_string()),
        (format!("runtime.nvidia.com/gpu={uuid}"), uuid.clone()),
        ("runtime.nvidia.com/gpu=all".to_string(), "all".to_string()),
    ] {
        let config = ShimConfig::new(host, "");
        let mut bundle = Bundle::new(true);
        bundle.script(&probe_with_env());
        bundle.env(&[&format!("NVIDIA_VISIBLE_DEVICES={visible}")]);
        let want = expected_jit(host, &devices, &bundle.rootfs);
        let run = run_shim(&mut bundle, &config.path, &[]);
        assert_created(&run);
        assert_jit_injected(&parse_probe(&run.stdout), &want);
    }
    // A device plugin's annotation, cdi mode.
    let config = ShimConfig::mode(host, "cdi");
    let mut bundle = Bundle::new(true);
    bundle.script(&probe_with_env());
    bundle.spec["annotations"] = json!({"cdi.k8s.io/plugin": "runtime.nvidia.com/gpu=3"});
    let want = expected_jit(host, "3", &bundle.rootfs);
    let run = run_shim(&mut bundle, &config.path, &[]);
    assert_created(&run);
    assert_jit_injected(&parse_probe(&run.stdout), &want);
    // Mixed with a name from spec files: upstream's error.
    let config = ShimConfig::new(host, "");
    let mut bundle = Bundle::new(true);
    bundle.env(&["NVIDIA_VISIBLE_DEVICES=runtime.nvidia.com/gpu=0,nvidia.com/gpu=1"]);
    let run = run_shim(&mut bundle, &config.path, &[]);
    assert_refused(&run, "vendor 'runtime.nvidia.com' is not supported");
}

#[test]
fn imex_channel_spelled_as_its_node() {
    if !ready() {
        return;
    }
    let host = shared_host(&[]);
    let config = ShimConfig::mode(host, "jit-cdi");
    let mut bundle = Bundle::new(true);
    bundle.script("stat -c '%n %F %t:%T' /dev/nvidia-caps-imex-channels/channel0");
    bundle.env(&["NVIDIA_VISIBLE_DEVICES=0", "NVIDIA_IMEX_CHANNELS=channel0"]);
    let run = run_shim(&mut bundle, &config.path, &[]);
    assert_created(&run);
    let (ma, _) = host.rdev("/dev/nvidia-caps-imex-channels/channel0");
    assert_eq!(
        run.stdout.trim(),
        format!("/dev/nvidia-caps-imex-channels/channel0 character special file {ma:x}:0")
    );
}

/// jit-cdi's container holds what upstream 1.20's holds: libraries at the host's path even in
/// an image whose own directory is `/usr/lib64`, the GBM backend link and the `.so` links the
/// host has (`libnvidia-ml.so`).
#[test]
fn jit_cdi_matches_upstream_paths_and_links() {
    if !ready() {
        return;
    }
    let host = shared_host(&["--gpus", "2"]);
    let config = ShimConfig::mode(host, "jit-cdi");
    let mut bundle = Bundle::new(false);
    let dir = "/usr/lib/x86_64-linux-gnu";
    bundle.script(&format!(
        "for l in gbm/nvidia-drm_gbm.so libnvidia-ml.so libcuda.so; do readlink {dir}/$l; done; \
         ls /usr/lib64 2>/dev/null | grep -c nvidia"
    ));
    bundle.env(&["NVIDIA_VISIBLE_DEVICES=0"]);
    let run = run_shim(&mut bundle, &config.path, &[]);
    assert_created(&run);
    assert_eq!(
        run.stdout,
        "../libnvidia-allocator.so.1\nlibnvidia-ml.so.1\nlibcuda.so.1\n0\n"
    );
}
