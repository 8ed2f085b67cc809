//! The prestart hook's command line and its decisions before any container is touched: flags in
//! Go's style, the no-op commands, "not a GPU container" (exit 0, nothing read beyond the spec),
//! and the errors upstream gives for bad state, bad specs and refused requests. Real containers
//! are in tests/e2e_runc.rs and tests/e2e_docker.rs.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Output, Stdio};

use common::*;

fn hook(args: &[&str], stdin: &str, config: Option<&Path>) -> Output {
    let mut c = command(nvbox());
    if let Some(cfg) = config {
        c.env("NVIDIA_CTK_CONFIG_FILE_PATH", cfg);
    }
    let mut child = c
        .arg("nvidia-container-runtime-hook")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The no-op commands do not read stdin: a closed pipe must not matter.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    child.wait_with_output().unwrap()
}

/// A bundle whose config.json has `env`, and the state naming it.
fn bundle(dir: &Path, env: &[&str], caps: &[&str]) -> String {
    let spec = serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {"env": env, "capabilities": {"bounding": caps}},
        "root": {"path": "rootfs"},
    });
    std::fs::write(dir.join("config.json"), spec.to_string()).unwrap();
    format!(
        r#"{{"ociVersion":"1.0.2","id":"x","pid":1,"bundle":"{}"}}"#,
        dir.display()
    )
}

#[test]
fn version_and_noop_commands() {
    let out = hook(&["-version"], "", None);
    assert!(out.status.success());
    assert!(
        stdout(&out).starts_with("NVIDIA Container Runtime Hook version "),
        "{}",
        stdout(&out)
    );
    for cmd in ["poststart", "poststop"] {
        let out = hook(&[cmd], "", None);
        assert!(out.status.success(), "{cmd}");
        assert_eq!(stderr(&out), "");
    }
    let out = hook(&[], "", None);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).starts_with("Usage of nvidia-container-runtime-hook:"));
    let out = hook(&["--bogus", "prestart"], "", None);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).starts_with("flag provided but not defined: -bogus\n"));
}

#[test]
fn a_container_without_gpus_is_left_alone() {
    let dir = TempDir::new("hook-cpu");
    for env in [
        vec!["PATH=/bin"],
        vec!["NVIDIA_VISIBLE_DEVICES=void"],
        vec!["NVIDIA_VISIBLE_DEVICES="],
    ] {
        let state = bundle(dir.path(), &env, &[]);
        // pid 1 and a rootfs that does not exist: neither may be looked at.
        let out = hook(&["prestart"], &state, None);
        assert!(out.status.success(), "{env:?}: {}", stderr(&out));
        assert_eq!(stderr(&out), "");
    }
}

#[test]
fn refused_requests_and_bad_input() {
    let dir = TempDir::new("hook-errors");
    let cases: &[(&[&str], &[&str], &str)] = &[
        (
            &[
                "NVIDIA_VISIBLE_DEVICES=all",
                "NVIDIA_MIG_CONFIG_DEVICES=all",
            ],
            &[],
            "nvidia-container-runtime-hook: cannot set MIG_CONFIG_DEVICES in non privileged container\n",
        ),
        (
            &[
                "NVIDIA_VISIBLE_DEVICES=all",
                "NVIDIA_DRIVER_CAPABILITIES=compute,profile",
            ],
            &["CAP_SYS_ADMIN"],
            "nvidia-container-runtime-hook: unsupported capabilities found in 'compute,profile' (allowed 'compute')\n",
        ),
        (
            &["NVIDIA_VISIBLE_DEVICES=all", "BROKEN"],
            &[],
            "nvidia-container-runtime-hook: invalid environment variable \"BROKEN\"\n",
        ),
    ];
    for (env, caps, want) in cases {
        let state = bundle(dir.path(), env, caps);
        let out = hook(&["prestart"], &state, None);
        assert_eq!(out.status.code(), Some(1), "{env:?}");
        assert_eq!(stderr(&out), *want, "{env:?}");
    }
    let out = hook(&["prestart"], "{not json", None);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out)
            .starts_with("nvidia-container-runtime-hook: could not decode container state:"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn other_modes_are_refused_with_upstreams_advice() {
    let dir = TempDir::new("hook-mode");
    let cfg = dir.path().join("config.toml");
    std::fs::write(&cfg, "[nvidia-container-runtime]\nmode = \"cdi\"\n").unwrap();
    let state = bundle(dir.path(), &["NVIDIA_VISIBLE_DEVICES=all"], &[]);
    let out = hook(&["prestart"], &state, Some(&cfg));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "nvidia-container-runtime-hook: invoking the NVIDIA Container Runtime Hook directly (e.g. specifying the docker --gpus flag) is not supported. Please use the NVIDIA Container Runtime (e.g. specify the --runtime=nvidia flag) instead\n"
    );
    // -config names the file explicitly, and it must exist.
    let out = hook(
        &["-config=/nonexistent/config.toml", "prestart"],
        &state,
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("/nonexistent/config.toml"),
        "{}",
        stderr(&out)
    );
}

/// An external nvidia-container-cli has no flag for the gated devices: the hook refuses in one
/// line rather than start the container without them (and execs nothing).
#[test]
fn gated_devices_with_an_external_cli_are_refused() {
    let dir = TempDir::new("hook-gated-cli");
    let cfg = dir.path().join("config.toml");
    std::fs::write(&cfg, "[nvidia-container-cli]\npath = \"/bin/false\"\n").unwrap();
    let state = bundle(
        dir.path(),
        &["NVIDIA_VISIBLE_DEVICES=all", "NVIDIA_GDRCOPY=enabled"],
        &[],
    );
    let out = hook(&["prestart"], &state, Some(&cfg));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "nvidia-container-runtime-hook: NVIDIA_GDRCOPY=enabled needs nvbox's own configure, but [nvidia-container-cli] path = \"/bin/false\" is set\n"
    );
}
