//! Upstream 1.20 parity, end to end with real runc through the runtime shim and real Podman
//! with a generated spec (issue 14, gaps 2-5): device nodes that keep the host's 0660
//! `root:video` and the group a non-root user needs, the `none` device, `runtime.nvidia.com/gpu`
//! names, `channelN` IMEX spellings, and every feature flag and setting both ways.

mod common;

use std::path::Path;
use std::process::Output;

use common::container::*;
use common::engines::*;
use common::{TempDir, command, nvbox};
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

fn created(run: &ShimRun) {
    assert!(
        run.created,
        "create through the shim failed:\n{}",
        run.create_stderr
    );
}

/// A create that must fail with one line from the shim, before runc runs.
fn assert_refused(run: &ShimRun, words: &str) {
    assert!(!run.created, "create must fail");
    let err = run.create_stderr.trim_end();
    assert_eq!(err.lines().count(), 1, "one line:\n{err}");
    assert!(err.starts_with("nvidia-container-runtime: "), "{err}");
    assert!(err.contains(words), "{err}");
    assert!(!run.state_dir_left, "runc ran");
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
        created(&run);
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
        created(&run);
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

fn ctk(config: &Path, args: &[&str]) -> Output {
    command(nvbox())
        .env("NVIDIA_CTK_CONFIG_FILE_PATH", config)
        .arg("nvidia-ctk")
        .args(args)
        .output()
        .unwrap()
}

/// `cdi generate ARGS` for `host` into `dir/nvidia.json`, hooks calling the applet directory's
/// nvidia-cdi-hook; the spec.
fn generate_into(host: &Host, dir: &Path, args: &[&str]) -> Value {
    let hook = applet_dir().join("nvidia-cdi-hook");
    let out_file = dir.join("nvidia.json");
    let mut all = vec![
        "cdi",
        "generate",
        "--nvidia-cdi-hook-path",
        hook.to_str().unwrap(),
        "--output",
        out_file.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    let out = ctk(&host.config, &all);
    assert!(out.status.success(), "generate: {}", text(&out.stderr));
    serde_json::from_slice(&std::fs::read(out_file).unwrap()).unwrap()
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
    created(&run);
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
        created(&run);
        assert_jit_injected(&parse_probe(&run.stdout), &want);
    }
    // A device plugin's annotation, cdi mode.
    let config = ShimConfig::mode(host, "cdi");
    let mut bundle = Bundle::new(true);
    bundle.script(&probe_with_env());
    bundle.spec["annotations"] = json!({"cdi.k8s.io/plugin": "runtime.nvidia.com/gpu=3"});
    let want = expected_jit(host, "3", &bundle.rootfs);
    let run = run_shim(&mut bundle, &config.path, &[]);
    created(&run);
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
    created(&run);
    let (ma, _) = host.rdev("/dev/nvidia-caps-imex-channels/channel0");
    assert_eq!(
        run.stdout.trim(),
        format!("/dev/nvidia-caps-imex-channels/channel0 character special file {ma:x}:0")
    );
}

fn mount_paths(edits: &Value) -> Vec<String> {
    edits["mounts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| m["containerPath"].as_str().unwrap().to_string())
        .collect()
}

const SOCKET: &str = "/run/nvidia-persistenced/socket";

/// Each `--feature-flag` of `cdi generate` both ways, through the flag and the env; the ones
/// nvbox cannot honour, and the search paths, are refused with one line.
#[test]
fn generate_feature_flags_both_ways() {
    let host = shared_host(&["--gpus", "2"]);
    let dir = TempDir::new("flags");
    let plain = generate_into(host, dir.path(), &[]);
    let mounts = mount_paths(&plain["containerEdits"]);
    assert!(mounts.iter().any(|m| m == SOCKET), "{mounts:?}");
    assert!(
        !mounts.iter().any(|m| m.contains("libEGL.so")),
        "{mounts:?}"
    );
    let no_ipc = generate_into(
        host,
        dir.path(),
        &["--feature-flag", "disable-ipc-discoverer"],
    );
    assert!(
        !mount_paths(&no_ipc["containerEdits"])
            .iter()
            .any(|m| m == SOCKET)
    );
    let explicit = generate_into(
        host,
        dir.path(),
        &["--feature-flag", "enable-explicit-driver-libraries"],
    );
    let mounts = mount_paths(&explicit["containerEdits"]);
    for lib in ["libEGL.so.1.1.0", "libOpenCL.so.1.0.0"] {
        let path = format!("/usr/lib/x86_64-linux-gnu/{lib}");
        assert!(mounts.contains(&path), "{lib}: {mounts:?}");
    }
    // The same through the environment.
    let by_env = command(nvbox())
        .env("NVIDIA_CTK_CONFIG_FILE_PATH", &host.config)
        .env(
            "NVIDIA_CTK_CDI_GENERATE_FEATURE_FLAGS",
            "disable-ipc-discoverer",
        )
        .args(["nvidia-ctk", "cdi", "generate", "--format", "json"])
        .output()
        .unwrap();
    assert!(by_env.status.success(), "{}", text(&by_env.stderr));
    let spec: Value = serde_json::from_slice(&by_env.stdout).unwrap();
    assert!(
        !mount_paths(&spec["containerEdits"])
            .iter()
            .any(|m| m == SOCKET)
    );

    for (args, words) in [
        (
            &["--feature-flag", "enable-coherent-annotations"][..],
            "feature flag \"enable-coherent-annotations\" is not supported by nvbox",
        ),
        (
            &["--feature-flag", "no-such-flag"][..],
            "unknown feature flag \"no-such-flag\"",
        ),
        (
            &["--library-search-path", "/opt/lib"][..],
            "--library-search-path is not supported by nvbox",
        ),
        (
            &["--config-search-path", "/opt/etc"][..],
            "--config-search-path is not supported by nvbox",
        ),
    ] {
        let mut all = vec!["cdi", "generate"];
        all.extend_from_slice(args);
        let out = ctk(&host.config, &all);
        let err = text(&out.stderr);
        assert!(!out.status.success(), "{args:?} must fail");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains(words), "{args:?}: {err}");
        assert!(out.stdout.is_empty());
    }
}

/// A driver root without the `/var/run -> /run` link still gives its persistenced socket.
#[test]
fn sockets_found_under_run() {
    let host = shared_host(&["--gpus", "1", "--no-var-run-link"]);
    assert!(!host.root.join("var/run").exists());
    let dir = TempDir::new("run-only");
    let spec = generate_into(host, dir.path(), &[]);
    assert!(
        mount_paths(&spec["containerEdits"])
            .iter()
            .any(|m| m == SOCKET)
    );
}

fn create_container_hooks(config: &[u8]) -> Vec<Vec<String>> {
    let spec: Value = serde_json::from_slice(config).unwrap();
    spec["hooks"]["createContainer"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|h| {
            h["args"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap().to_string())
                .collect()
        })
        .collect()
}

fn oci_mounts(config: &[u8]) -> Vec<String> {
    let spec: Value = serde_json::from_slice(config).unwrap();
    spec["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["destination"].as_str().unwrap().to_string())
        .collect()
}

const PROFILE: &str = "/etc/nvidia/nvidia-application-profiles-rc.d/10-container.conf";

/// `[nvidia-container-runtime.modes.jit-cdi]` settings both ways, and what jit-cdi sets like
/// generated specs do: `NVIDIA_CTK_LIBCUDA_DIR` and the application profile.
#[test]
fn jit_cdi_settings_both_ways() {
    if !ready() {
        return;
    }
    let host = shared_host(&["--gpus", "2"]);
    let jit = |lines: &str| {
        format!(
            "{}[nvidia-container-runtime.modes.jit-cdi]\n{lines}",
            mode_toml("jit-cdi")
        )
    };
    let run_with = |lines: &str| {
        let config = ShimConfig::new(host, &jit(lines));
        let mut bundle = Bundle::new(true);
        bundle.script(&format!(
            "echo LIBCUDA_DIR=$NVIDIA_CTK_LIBCUDA_DIR; cat {PROFILE} 2>/dev/null | grep -o 'EGLVisibleDGPUDevices\", 0x[0-9a-f]*'"
        ));
        bundle.env(&["NVIDIA_VISIBLE_DEVICES=1"]);
        run_shim(&mut bundle, &config.path, &[])
    };
    let plain = run_with("");
    created(&plain);
    let hooks = create_container_hooks(&plain.config_after);
    assert_eq!(hooks.len(), 1, "{hooks:?}");
    assert!(hooks[0].contains(&"--update-application-profile".to_string()));
    assert!(oci_mounts(&plain.config_after).iter().any(|m| m == SOCKET));
    assert!(
        plain
            .stdout
            .contains("LIBCUDA_DIR=/usr/lib/x86_64-linux-gnu\n"),
        "{}",
        plain.stdout
    );
    let minor = host.gpus()[1].minor;
    assert!(
        plain
            .stdout
            .contains(&format!("EGLVisibleDGPUDevices\", {:#x}", 1u64 << minor)),
        "{}",
        plain.stdout
    );

    let all_off = run_with("nvcdi-disable-hooks = [\"all\"]\n");
    created(&all_off);
    assert!(create_container_hooks(&all_off.config_after).is_empty());
    let no_profile = run_with("nvcdi-disable-hooks = [\"update-application-profile\"]\n");
    created(&no_profile);
    let hooks = create_container_hooks(&no_profile.config_after);
    assert_eq!(hooks.len(), 1);
    assert!(!hooks[0].contains(&"--update-application-profile".to_string()));
    assert!(!no_profile.stdout.contains("EGLVisibleDGPUDevices"));
    let no_ipc = run_with("nvcdi-feature-flags = [\"disable-ipc-discoverer\"]\n");
    created(&no_ipc);
    assert!(!oci_mounts(&no_ipc.config_after).iter().any(|m| m == SOCKET));

    assert_refused(
        &run_with("nvcdi-disable-hooks = [\"update-ldcahce\"]\n"),
        "nvcdi-disable-hooks: unknown hook \"update-ldcahce\"",
    );
    assert_refused(
        &run_with("nvcdi-feature-flags = [\"enable-coherent-annotations\"]\n"),
        "nvcdi-feature-flags",
    );
}

/// Legacy `cuda-compat-mode = "hook"`: the CLI leaves the image's compat libraries alone and
/// the runtime adds upstream's enable-cuda-compat and update-ldcache hooks, which put them in
/// the container's loader cache; `disabled` (or the feature flag) adds nothing.
#[test]
fn legacy_cuda_compat_hook_mode() {
    if !ready() {
        return;
    }
    let host = shared_host(&["--gpus", "2"]);
    let (libcuda, _) = mock_libcuda(host);
    let cases = [
        ("cuda-compat-mode = \"hook\"\n", "", true),
        ("cuda-compat-mode = \"disabled\"\n", "", false),
        (
            "cuda-compat-mode = \"hook\"\n",
            "[features]\ndisable-cuda-compat-lib-hook = true\n",
            false,
        ),
    ];
    for (mode, features, hooked) in cases {
        let config = ShimConfig::new(
            host,
            &format!(
                "{}[nvidia-container-runtime.modes.legacy]\n{mode}{features}",
                mode_toml("legacy")
            ),
        );
        let mut bundle = Bundle::new(true);
        let compat = bundle.rootfs.join("usr/local/cuda/compat");
        std::fs::create_dir_all(&compat).unwrap();
        std::fs::copy(&libcuda, compat.join("libcuda.so.999.1.2")).unwrap();
        bundle.script("grep -c /usr/local/cuda/compat/libcuda.so.1 /etc/ld.so.cache || true");
        bundle.env(&["NVIDIA_VISIBLE_DEVICES=0"]);
        let run = run_shim(&mut bundle, &config.path, &[]);
        created(&run);
        let hooks = create_container_hooks(&run.config_after);
        if hooked {
            assert_eq!(hooks.len(), 2, "{hooks:?}");
            assert_eq!(
                hooks[0][1..],
                ["enable-cuda-compat", "--host-driver-version=535.104.05"]
            );
            assert_eq!(hooks[1][1..], ["update-ldcache"]);
            assert_ne!(run.stdout.trim(), "0", "compat libcuda not in the cache");
        } else {
            assert!(hooks.is_empty(), "{mode}{features}: {hooks:?}");
            assert_eq!(run.stdout.trim(), "0", "{mode}{features}");
        }
    }
}
