use super::*;
use crate::request::read_container;
use serde_json::json;

const LEGACY: &str = "CUDA_VERSION=9.0.176";
const MODERN: &[&str] = &["CUDA_VERSION=12.2.0", "NVIDIA_REQUIRE_CUDA=cuda>=12.2"];

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|&s| s.to_owned()).collect()
}

fn ids(items: &[&str]) -> Devices {
    Devices::Ids(strings(items))
}

fn caps(list: &str) -> Caps {
    Caps::parse_list(list).unwrap()
}

fn request<S: AsRef<str>>(env: &[S], privileged: bool, cfg: &Config) -> Result<Request> {
    let env: Vec<String> = env.iter().map(|s| s.as_ref().to_owned()).collect();
    request_from_env(&env, privileged, cfg)
}

fn ok<S: AsRef<str>>(env: &[S]) -> Request {
    request(env, false, &Config::default()).unwrap()
}

fn err<S: AsRef<str>>(env: &[S], privileged: bool, cfg: &Config) -> String {
    let e = request(env, privileged, cfg).expect_err("request should fail");
    let msg = format!("{e:#}");
    assert!(!msg.contains('\n'), "{msg:?}");
    msg
}

fn with(base: &[&str], extra: &[&str]) -> Vec<String> {
    base.iter().chain(extra).map(|&s| s.to_owned()).collect()
}

#[test]
fn devices_matrix_modern_and_legacy() {
    // (NVIDIA_VISIBLE_DEVICES, modern image, legacy image)
    let cases: &[(Option<&str>, Devices, Devices)] = &[
        (None, Devices::Unrequested, Devices::All),
        (Some(""), Devices::Unrequested, Devices::Unrequested),
        (Some(" , ,"), Devices::Unrequested, Devices::Unrequested),
        (Some("void"), Devices::Unrequested, Devices::Unrequested),
        (Some("0,void"), Devices::Unrequested, Devices::Unrequested),
        (Some("none"), Devices::DriverOnly, Devices::DriverOnly),
        (Some("all"), Devices::All, Devices::All),
        (Some("0,1"), ids(&["0", "1"]), ids(&["0", "1"])),
        (
            Some(" GPU-a , 1:0 "),
            ids(&["GPU-a", "1:0"]),
            ids(&["GPU-a", "1:0"]),
        ),
        (Some("0,0,1"), ids(&["0", "1"]), ids(&["0", "1"])),
        // The first special entry decides.
        (Some("0,none,all"), Devices::DriverOnly, Devices::DriverOnly),
        (Some("1,all,none"), Devices::All, Devices::All),
    ];
    for (value, modern, legacy) in cases {
        let var = value.map(|v| format!("NVIDIA_VISIBLE_DEVICES={v}"));
        let mut env = MODERN.to_vec();
        env.extend(var.as_deref());
        assert_eq!(&ok(&env).devices, modern, "modern {value:?}");
        let mut env = vec![LEGACY];
        env.extend(var.as_deref());
        assert_eq!(&ok(&env).devices, legacy, "legacy {value:?}");
    }
}

#[test]
fn later_duplicate_variables_win() {
    let r = ok(&["NVIDIA_VISIBLE_DEVICES=void", "NVIDIA_VISIBLE_DEVICES=1"]);
    assert_eq!(r.devices, ids(&["1"]));
    let r = ok(&["NVIDIA_VISIBLE_DEVICES=all", "NVIDIA_VISIBLE_DEVICES="]);
    assert_eq!(r.devices, Devices::Unrequested);
}

#[test]
fn entry_without_equals_is_an_error() {
    let e = err(&["PATH=/bin", "JUNK"], true, &Config::default());
    assert!(e.starts_with("invalid environment variable"), "{e}");
    // A value may itself hold '='.
    let r = ok(&["NVIDIA_VISIBLE_DEVICES=all", "X=a=b"]);
    assert_eq!(r.devices, Devices::All);
}

#[test]
fn non_gpu_container_is_never_failed() {
    // Garbage in the other NVIDIA_* variables must not fail a container that asks for no GPU.
    let env = [
        "NVIDIA_VISIBLE_DEVICES=void",
        "NVIDIA_DRIVER_CAPABILITIES=bogus",
        "NVIDIA_MIG_CONFIG_DEVICES=all",
        "NVIDIA_IMEX_CHANNELS=x",
        "CUDA_VERSION=not-a-version",
    ];
    assert_eq!(
        request(&env, false, &Config::default()).unwrap(),
        Request::unrequested()
    );
}

#[test]
fn capabilities_matrix() {
    let default = caps("compute,utility");
    // (NVIDIA_DRIVER_CAPABILITIES, modern image, legacy image)
    let cases: &[(Option<&str>, Caps, Caps)] = &[
        (None, default, Caps::ALL),
        (Some(""), default, default),
        (Some(" , "), default, default),
        (Some("all"), Caps::ALL, Caps::ALL),
        (Some("utility,all"), Caps::ALL, Caps::ALL),
        (
            Some("video,display"),
            caps("display,video"),
            caps("display,video"),
        ),
        (
            Some(" compute , graphics,compute"),
            caps("compute,graphics"),
            caps("compute,graphics"),
        ),
    ];
    for (value, modern, legacy) in cases {
        let var = value.map(|v| format!("NVIDIA_DRIVER_CAPABILITIES={v}"));
        let mut env = with(MODERN, &["NVIDIA_VISIBLE_DEVICES=all"]);
        env.extend(var.clone());
        assert_eq!(&ok(&env).caps, modern, "modern {value:?}");
        let mut env = vec![LEGACY];
        env.extend(var.as_deref());
        assert_eq!(&ok(&env).caps, legacy, "legacy {value:?}");
    }
    assert_eq!(
        ok(&[
            "NVIDIA_VISIBLE_DEVICES=0",
            "NVIDIA_DRIVER_CAPABILITIES=video,display"
        ])
        .caps
        .names(),
        ["display", "video"]
    );
}

#[test]
fn capabilities_limited_by_supported_set() {
    let cfg = Config {
        supported_driver_capabilities: "video,display".into(),
        ..Config::default()
    };
    let r = |env: &[&str]| request(env, false, &cfg).unwrap().caps;
    assert_eq!(
        r(&["NVIDIA_VISIBLE_DEVICES=0", "NVIDIA_DRIVER_CAPABILITIES=all"]).names(),
        ["display", "video"]
    );
    // The default (compute,utility) intersected with what is supported: nothing.
    assert!(r(&["NVIDIA_VISIBLE_DEVICES=0"]).is_empty());
    assert_eq!(r(&[LEGACY]), caps("display,video"));
    let e = err(
        &[
            "NVIDIA_VISIBLE_DEVICES=0",
            "NVIDIA_DRIVER_CAPABILITIES=video,compute",
        ],
        false,
        &cfg,
    );
    assert_eq!(
        e,
        "unsupported capabilities found in 'compute,video' (allowed 'video')"
    );

    let all = Config {
        supported_driver_capabilities: "all".into(),
        ..Config::default()
    };
    assert_eq!(
        request(
            &["NVIDIA_VISIBLE_DEVICES=0", "NVIDIA_DRIVER_CAPABILITIES=all"],
            false,
            &all
        )
        .unwrap()
        .caps,
        Caps::ALL
    );
    let bad = Config {
        supported_driver_capabilities: "compute,warp".into(),
        ..Config::default()
    };
    let e = err(&["NVIDIA_VISIBLE_DEVICES=0"], false, &bad);
    assert_eq!(
        e,
        "Invalid value for config option 'supported-driver-capabilities'"
    );
}

#[test]
fn unknown_capability_is_an_error_in_upstreams_words() {
    let e = err(
        &[
            "NVIDIA_VISIBLE_DEVICES=0",
            "NVIDIA_DRIVER_CAPABILITIES=utility,profile,compute",
        ],
        false,
        &Config::default(),
    );
    assert_eq!(
        e,
        "unsupported capabilities found in 'compute,profile,utility' (allowed 'compute,utility')"
    );
}

#[test]
fn requirements_sorted_by_name_legacy_last() {
    let r = ok(&[
        "NVIDIA_VISIBLE_DEVICES=all",
        "NVIDIA_REQUIRE_ZZZ=driver>=400",
        "NVIDIA_REQUIRE_ARCH=arch>=7.0",
        "NVIDIA_REQUIRE_JETPACK=csv-mounts=all",
        "NVIDIA_REQUIRE_JETPACK_HOST_MOUNTS=x",
        "NVIDIA_REQUIRE_EMPTY=",
        "NVIDIA_REQUIREMENT=not-a-requirement-var",
        "CUDA_VERSION=10.1.243",
    ]);
    assert_eq!(r.requirements, ["arch>=7.0", "driver>=400", "cuda>=10.1"]);
    let r = ok(&with(MODERN, &["NVIDIA_VISIBLE_DEVICES=0"]));
    assert_eq!(r.requirements, ["cuda>=12.2"]);
}

#[test]
fn legacy_cuda_version_forms() {
    for (version, want) in [
        ("9.0.176", "cuda>=9.0"),
        ("10.1.243", "cuda>=10.1"),
        ("11", "cuda>=11.0"),
        ("v11.4", "cuda>=11.4"),
        ("12.2.0-rc1", "cuda>=12.2"),
        ("12.2.0+build.5", "cuda>=12.2"),
    ] {
        let var = format!("CUDA_VERSION={version}");
        assert_eq!(ok(&[&var]).requirements, [want], "{version}");
    }
    for version in ["abc", "10.x", "10..1", ".1", "10.1a", "-1"] {
        let var = format!("CUDA_VERSION={version}");
        let e = err(&[&var], false, &Config::default());
        assert!(e.starts_with("invalid CUDA_VERSION"), "{version}: {e}");
    }
    // NVIDIA_REQUIRE_CUDA set but empty still makes a legacy image.
    let r = ok(&["CUDA_VERSION=9.2", "NVIDIA_REQUIRE_CUDA="]);
    assert_eq!(r.devices, Devices::All);
    assert_eq!(r.requirements, ["cuda>=9.2"]);
    // An empty CUDA_VERSION does not.
    assert_eq!(ok(&["CUDA_VERSION="]).devices, Devices::Unrequested);
}

#[test]
fn disable_require() {
    let base = ["CUDA_VERSION=9.0", "NVIDIA_REQUIRE_ARCH=arch>=7.0"];
    for truthy in ["1", "t", "T", "TRUE", "true", "True"] {
        let var = format!("NVIDIA_DISABLE_REQUIRE={truthy}");
        let r = ok(&with(&base, &[&var]));
        assert!(r.requirements.is_empty(), "{truthy}");
    }
    for falsy in ["0", "false", "yes", "on", "", "tRUE"] {
        let var = format!("NVIDIA_DISABLE_REQUIRE={falsy}");
        let r = ok(&with(&base, &[&var]));
        assert_eq!(r.requirements, ["arch>=7.0", "cuda>=9.0"], "{falsy}");
    }
    let cfg = Config {
        disable_require: true,
        ..Config::default()
    };
    assert!(request(&base, false, &cfg).unwrap().requirements.is_empty());
    // Disabled requirements never parse CUDA_VERSION.
    let r = request(&["CUDA_VERSION=bogus"], false, &cfg).unwrap();
    assert_eq!(r.devices, Devices::All);
}

#[test]
fn mig_variables_need_privilege() {
    let cfg = Config::default();
    for (var, label) in [
        ("NVIDIA_MIG_CONFIG_DEVICES", "MIG_CONFIG_DEVICES"),
        ("NVIDIA_MIG_MONITOR_DEVICES", "MIG_MONITOR_DEVICES"),
    ] {
        let set = format!("{var}=all");
        let env = ["NVIDIA_VISIBLE_DEVICES=0", set.as_str()];
        let e = err(&env, false, &cfg);
        assert_eq!(e, format!("cannot set {label} in non privileged container"));
        let r = request(&env, true, &cfg).unwrap();
        let got = if label == "MIG_CONFIG_DEVICES" {
            &r.mig_config
        } else {
            &r.mig_monitor
        };
        assert_eq!(got.as_deref(), Some("all"));
        // Empty counts as unset.
        let empty = format!("{var}=");
        let r = request(&["NVIDIA_VISIBLE_DEVICES=0", &empty], false, &cfg).unwrap();
        assert_eq!((r.mig_config, r.mig_monitor), (None, None));
    }
}

#[test]
fn unprivileged_env_gate() {
    let closed = Config {
        accept_nvidia_visible_devices_envvar_when_unprivileged: false,
        ..Config::default()
    };
    for env in [
        &["NVIDIA_VISIBLE_DEVICES=all"][..],
        &[LEGACY],
        &["NVIDIA_VISIBLE_DEVICES=none"],
    ] {
        assert_eq!(
            request(env, false, &closed).unwrap(),
            Request::unrequested(),
            "{env:?}"
        );
        assert!(
            request(env, true, &closed).unwrap().is_gpu_container(),
            "{env:?}"
        );
        assert!(
            request(env, false, &Config::default())
                .unwrap()
                .is_gpu_container(),
            "{env:?}"
        );
    }
}

#[test]
fn swarm_resource_variables() {
    let single = Config {
        swarm_resource: "DOCKER_RESOURCE_GPU".into(),
        ..Config::default()
    };
    let r = |env: &[&str], cfg: &Config| request(env, false, cfg).unwrap().devices;
    assert_eq!(
        r(
            &["DOCKER_RESOURCE_GPU=GPU-1", "NVIDIA_VISIBLE_DEVICES=all"],
            &single
        ),
        ids(&["GPU-1"])
    );
    assert_eq!(r(&["NVIDIA_VISIBLE_DEVICES=all"], &single), Devices::All);
    // Present but empty still takes precedence: nothing requested.
    assert_eq!(
        r(
            &["DOCKER_RESOURCE_GPU=", "NVIDIA_VISIBLE_DEVICES=all"],
            &single
        ),
        Devices::Unrequested
    );

    let list = Config {
        swarm_resource: " DOCKER_RESOURCE_GPU , ,DOCKER_RESOURCE_NVIDIA_GPU".into(),
        ..Config::default()
    };
    let env = [
        "DOCKER_RESOURCE_NVIDIA_GPU=GPU-2,GPU-3",
        "DOCKER_RESOURCE_GPU=GPU-1",
        "NVIDIA_VISIBLE_DEVICES=void",
    ];
    // Config order, not environment order.
    assert_eq!(r(&env, &list), ids(&["GPU-1", "GPU-2", "GPU-3"]));
    assert_eq!(
        r(&["DOCKER_RESOURCE_NVIDIA_GPU=none"], &list),
        Devices::DriverOnly
    );
    assert_eq!(
        r(
            &["DOCKER_RESOURCE_NVIDIA_GPU=0", "DOCKER_RESOURCE_GPU=0"],
            &list
        ),
        ids(&["0"])
    );
}

#[test]
fn imex_channels() {
    let cfg = Config::default();
    let r = |env: &[&str], privileged: bool, cfg: &Config| {
        request(env, privileged, cfg).unwrap().imex_channels
    };
    assert_eq!(
        r(
            &[
                "NVIDIA_VISIBLE_DEVICES=0",
                "NVIDIA_IMEX_CHANNELS=3, 0,3,1048575"
            ],
            false,
            &cfg
        ),
        [3, 0, 1048575]
    );
    assert!(
        r(
            &["NVIDIA_VISIBLE_DEVICES=0", "NVIDIA_IMEX_CHANNELS=all"],
            false,
            &cfg
        )
        .is_empty()
    );
    assert!(
        r(
            &["NVIDIA_VISIBLE_DEVICES=0", "NVIDIA_IMEX_CHANNELS="],
            false,
            &cfg
        )
        .is_empty()
    );
    // Upstream also takes the node's name.
    assert_eq!(
        r(
            &[
                "NVIDIA_VISIBLE_DEVICES=0",
                "NVIDIA_IMEX_CHANNELS=channel0,channel7,0"
            ],
            false,
            &cfg
        ),
        [0, 7]
    );
    for bad in [
        "1048576",
        "x",
        "-1",
        "+1",
        "1.0",
        "channel",
        "channel-1",
        "chan0",
    ] {
        let var = format!("NVIDIA_IMEX_CHANNELS={bad}");
        let e = err(&["NVIDIA_VISIBLE_DEVICES=0", &var], false, &cfg);
        assert!(e.starts_with("invalid IMEX channel"), "{bad}: {e}");
    }
    let ignore = Config {
        features: crate::config::Features {
            ignore_imex_channel_requests: Some(true),
            ..Default::default()
        },
        ..Config::default()
    };
    assert!(
        r(
            &["NVIDIA_VISIBLE_DEVICES=0", "NVIDIA_IMEX_CHANNELS=1"],
            true,
            &ignore
        )
        .is_empty()
    );
    // The unprivileged gate drops IMEX requests with the devices; privileged passes.
    let closed = Config {
        accept_nvidia_visible_devices_envvar_when_unprivileged: false,
        accept_nvidia_visible_devices_as_volume_mounts: true,
        ..Config::default()
    };
    let spec = json!({"ociVersion": "1.0.2", "root": {"path": "rootfs"},
        "process": {"env": ["NVIDIA_IMEX_CHANNELS=5"]},
        "mounts": [{"source": "/dev/null", "destination": "/var/run/nvidia-container-devices/0"}]});
    let c = read_container(&spec).unwrap();
    let req = request_from_container(&c, &closed).unwrap();
    assert_eq!(req.devices, ids(&["0"]));
    assert!(req.imex_channels.is_empty());
    assert_eq!(
        r(
            &["NVIDIA_VISIBLE_DEVICES=0", "NVIDIA_IMEX_CHANNELS=5"],
            true,
            &closed
        ),
        [5]
    );
}

#[test]
fn gated_devices_need_enabled_and_a_gpu_request() {
    use crate::discover::gated::Gated;
    let all = [
        "NVIDIA_VISIBLE_DEVICES=0",
        "NVIDIA_GDS=enabled",
        "NVIDIA_MOFED=enabled",
        "NVIDIA_GDRCOPY=enabled",
        "NVIDIA_NVSWITCH=enabled",
    ];
    assert_eq!(
        ok(&all).gated,
        [Gated::Gds, Gated::Mofed, Gated::Gdrcopy, Gated::Nvswitch]
    );
    // Only the exact value counts, as upstream compares it.
    for other in ["true", "1", "Enabled", "enabled ", ""] {
        let var = format!("NVIDIA_GDRCOPY={other}");
        assert!(
            ok(&["NVIDIA_VISIBLE_DEVICES=0", &var]).gated.is_empty(),
            "{other:?}"
        );
    }
    // No device request, no gated devices (upstream's modifier returns first).
    assert!(ok(&["NVIDIA_GDRCOPY=enabled"]).gated.is_empty());
    assert!(
        ok(&["NVIDIA_VISIBLE_DEVICES=void", "NVIDIA_GDS=enabled"])
            .gated
            .is_empty()
    );
    assert_eq!(
        ok(&["NVIDIA_VISIBLE_DEVICES=none", "NVIDIA_GDRCOPY=enabled"]).gated,
        [Gated::Gdrcopy]
    );
}
