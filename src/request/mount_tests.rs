//! Device-plugin volume mounts and the container view feeding the request (toolkit §10 case 7).
use super::*;
use crate::request::read_container;
use serde_json::{Value, json};

fn ids(items: &[&str]) -> Devices {
    Devices::Ids(items.iter().map(|&s| s.to_owned()).collect())
}
const DEV: &str = "/var/run/nvidia-container-devices";

fn container(env: &[&str], privileged: bool, mounts: &[(&str, &str)]) -> Container {
    let caps = if privileged {
        json!({"bounding": ["CAP_SYS_ADMIN"]})
    } else {
        json!({"bounding": []})
    };
    let mounts: Vec<Value> = mounts
        .iter()
        .map(|(s, d)| json!({"source": s, "destination": d}))
        .collect();
    let spec = json!({"ociVersion": "1.2.0", "root": {"path": "rootfs"},
        "process": {"env": env, "capabilities": caps}, "mounts": mounts});
    read_container(&spec).unwrap()
}

#[test]
fn volume_mount_devices() {
    let accept = Config {
        accept_nvidia_visible_devices_as_volume_mounts: true,
        ..Config::default()
    };
    let mounts = [
        ("/dev/null", "/var/run/nvidia-container-devices/GPU-1"),
        ("/tmp/x", "/var/run/nvidia-container-devices/GPU-ignored"), // not /dev/null
        ("/dev/null", "/var/run/other/GPU-ignored"),                 // other prefix
        ("/dev/null", "/var/run/nvidia-container-devices"),          // the root itself
        ("/dev/null", "/var/run/nvidia-container-devices/"),         // the root, cleaned
        (
            "/dev/null",
            "/var/run/nvidia-container-devicesX/GPU-ignored",
        ),
        (
            "//dev/./null",
            "/var/run/nvidia-container-devices//GPU-0-MIG/0/1/",
        ), // nested kept
        ("/dev/null", "/var/run/nvidia-container-devices/GPU-1"), // duplicate destination
        (
            "/dev/null",
            "/var/run/nvidia-container-devices/cdi/nvidia.com/gpu/0",
        ),
        (
            "/dev/null",
            "/var/run/nvidia-container-devices/cdi/nvidia.com/gpu=1",
        ),
        ("/dev/null", "/var/run/nvidia-container-devices/imex/7"),
        ("/dev/null", "/var/run/x/../nvidia-container-devices/3"),
    ];
    let c = container(
        &["NVIDIA_VISIBLE_DEVICES=all", "NVIDIA_IMEX_CHANNELS=9"],
        false,
        &mounts,
    );
    let r = request_from_container(&c, &accept).unwrap();
    assert_eq!(
        r.devices,
        ids(&[
            "GPU-1",
            "GPU-0-MIG/0/1",
            "nvidia.com/gpu=0",
            "nvidia.com/gpu=1",
            "3"
        ])
    );
    // imex/<id> mounts are channels, not devices, and beat the variable.
    assert_eq!(r.imex_channels, [7]);
    // Not accepted: the variable decides and mounts are not read.
    let r = request_from_container(&c, &Config::default()).unwrap();
    assert_eq!(r.devices, Devices::All);
    assert_eq!(r.imex_channels, [9]);
}

#[test]
fn volume_mount_privilege_matrix() {
    // (accept mounts, accept env unprivileged, privileged, expected)
    let mounts = [("/dev/null", "/var/run/nvidia-container-devices/GPU-M")];
    let cases = [
        (true, true, false, ids(&["GPU-M"])),
        (true, false, false, ids(&["GPU-M"])),
        (true, false, true, ids(&["GPU-M"])),
        (false, true, false, ids(&["GPU-E"])),
        (false, false, false, Devices::Unrequested),
        (false, false, true, ids(&["GPU-E"])),
    ];
    for (mounts_ok, env_ok, privileged, want) in cases {
        let cfg = Config {
            accept_nvidia_visible_devices_as_volume_mounts: mounts_ok,
            accept_nvidia_visible_devices_envvar_when_unprivileged: env_ok,
            ..Config::default()
        };
        let c = container(&["NVIDIA_VISIBLE_DEVICES=GPU-E"], privileged, &mounts);
        let got = request_from_container(&c, &cfg).unwrap().devices;
        assert_eq!(
            got, want,
            "mounts {mounts_ok} env {env_ok} privileged {privileged}"
        );
    }
    // With mounts accepted but none present, the env gate applies again.
    let cfg = Config {
        accept_nvidia_visible_devices_as_volume_mounts: true,
        accept_nvidia_visible_devices_envvar_when_unprivileged: false,
        ..Config::default()
    };
    let c = container(
        &["NVIDIA_VISIBLE_DEVICES=GPU-E"],
        false,
        &[("/dev/null", DEV)],
    );
    assert_eq!(
        request_from_container(&c, &cfg).unwrap().devices,
        Devices::Unrequested
    );
}

#[test]
fn container_privilege_reaches_the_mig_gate() {
    let env = ["NVIDIA_VISIBLE_DEVICES=0", "NVIDIA_MIG_MONITOR_DEVICES=all"];
    assert!(request_from_container(&container(&env, false, &[]), &Config::default()).is_err());
    let r = request_from_container(&container(&env, true, &[]), &Config::default()).unwrap();
    assert_eq!(r.mig_monitor.as_deref(), Some("all"));
}

#[test]
fn clean_path_like_go() {
    for (input, want) in [
        ("/dev/null", "/dev/null"),
        ("//dev//./null/", "/dev/null"),
        ("/a/../../dev/null", "/dev/null"),
        ("/", "/"),
        ("", "."),
        ("a/../..", ".."),
        ("a/./b/", "a/b"),
    ] {
        assert_eq!(clean_path(input), want, "{input:?}");
    }
}

#[test]
fn cdi_names_from_mount_paths() {
    assert_eq!(cdi_name("nvidia.com/gpu/0"), "nvidia.com/gpu=0");
    assert_eq!(cdi_name("nvidia.com/gpu=all"), "nvidia.com/gpu=all");
    assert_eq!(cdi_name("nvidia.com/gpu"), "nvidia.com/gpu");
    assert_eq!(cdi_name("a//b"), "a//b");
}
