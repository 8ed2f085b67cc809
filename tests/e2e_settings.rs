//! Settings honoured both ways or refused with one line, never ignored (issue 14, gap 4):
//! `cdi generate --feature-flag` and the search paths, `[nvidia-container-runtime.modes.jit-cdi]`
//! `nvcdi-feature-flags` and `nvcdi-disable-hooks`, legacy `cuda-compat-mode = "hook"`; and what
//! discovery finds like upstream (sockets under `/run`).

mod common;

use common::TempDir;
use common::container::*;
use common::engines::*;
use common::{command, nvbox};
use serde_json::Value;

fn ready() -> bool {
    have_prerequisites(&[RUNC, BUSYBOX])
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
    assert_created(&plain);
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
    assert_created(&all_off);
    assert!(create_container_hooks(&all_off.config_after).is_empty());
    let no_profile = run_with("nvcdi-disable-hooks = [\"update-application-profile\"]\n");
    assert_created(&no_profile);
    let hooks = create_container_hooks(&no_profile.config_after);
    assert_eq!(hooks.len(), 1);
    assert!(!hooks[0].contains(&"--update-application-profile".to_string()));
    assert!(!no_profile.stdout.contains("EGLVisibleDGPUDevices"));
    let no_ipc = run_with("nvcdi-feature-flags = [\"disable-ipc-discoverer\"]\n");
    assert_created(&no_ipc);
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
        assert_created(&run);
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
