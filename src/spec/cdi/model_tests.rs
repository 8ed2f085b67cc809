use std::path::Path;

use super::*;

fn parse(text: &str) -> anyhow::Result<Spec> {
    parse_spec(text.as_bytes(), Path::new("/etc/cdi/test.yaml"))
}

fn parse_err(text: &str) -> String {
    format!("{:#}", parse(text).expect_err("spec must be rejected"))
}

/// A minimal spec of `version` and `kind` with one device named `name` holding `edits` (YAML).
fn spec_yaml(version: &str, kind: &str, name: &str, edits: &str) -> String {
    format!(
        "cdiVersion: \"{version}\"\nkind: {kind}\ndevices:\n  - name: \"{name}\"\n    containerEdits:\n{edits}"
    )
}

const NODE: &str = "      deviceNodes:\n        - path: /dev/nvidia0\n";

#[test]
fn json_spec_parses_with_every_field() {
    let text = r#"{
      "cdiVersion": "0.3.0", "kind": "nvidia.com/gpu",
      "devices": [{"name": "gpu0", "containerEdits": {
        "deviceNodes": [{"path": "/dev/nvidia0", "type": "c", "major": 195, "minor": 0,
                         "fileMode": 438, "permissions": "rw", "uid": 1000, "gid": 44}]}}],
      "containerEdits": {
        "env": ["NVIDIA_VISIBLE_DEVICES=void"],
        "hooks": [{"hookName": "createContainer", "path": "/usr/bin/nvidia-cdi-hook",
                   "args": ["nvidia-cdi-hook", "update-ldcache"], "env": ["A=1"], "timeout": 5}],
        "mounts": [{"hostPath": "/usr/lib/libcuda.so.1", "containerPath": "/usr/lib/libcuda.so.1",
                    "options": ["ro", "nosuid", "nodev", "bind"]}]}
    }"#;
    let spec = parse_spec(text.as_bytes(), Path::new("x.json")).unwrap();
    assert_eq!(spec.vendor_class(), ("nvidia.com", "gpu"));
    let node = &spec.devices[0].container_edits.device_nodes[0];
    assert_eq!(
        (
            node.r#type.as_deref(),
            node.major,
            node.minor,
            node.file_mode,
            node.uid,
            node.gid
        ),
        (
            Some("c"),
            Some(195),
            Some(0),
            Some(0o666),
            Some(1000),
            Some(44)
        )
    );
    assert_eq!(node.permissions.as_deref(), Some("rw"));
    let hook = &spec.container_edits.hooks[0];
    assert_eq!(
        (hook.hook_name.as_str(), hook.timeout, hook.env.len()),
        ("createContainer", Some(5), 1)
    );
    assert_eq!(
        spec.container_edits.mounts[0].options,
        ["ro", "nosuid", "nodev", "bind"]
    );
    assert_eq!(spec.container_edits.env, ["NVIDIA_VISIBLE_DEVICES=void"]);
}

#[test]
fn yaml_spec_as_nvidia_ctk_writes_it() {
    // Unquoted numeric device name, 4-space indent, `---` prefix, flow sequences.
    let text = "---\ncdiVersion: 0.5.0\nkind: nvidia.com/gpu\ndevices:\n    - name: 0\n      containerEdits:\n        \
                deviceNodes:\n            - path: /dev/nvidia0\n              hostPath: /run/nvidia/driver/dev/nvidia0\n\
                containerEdits:\n    env:\n        - NVIDIA_VISIBLE_DEVICES=void\n    hooks:\n        - hookName: createContainer\n          \
                path: /usr/bin/nvidia-cdi-hook\n          args: [nvidia-cdi-hook, update-ldcache, --folder, /usr/lib]\n          \
                env: [NVIDIA_CTK_DEBUG=false]\n    mounts:\n        - hostPath: /usr/lib/libcuda.so.1\n          \
                containerPath: /usr/lib/libcuda.so.1\n          options: [ro, nosuid, nodev, rbind, rprivate]\n";
    let spec = parse(text).unwrap();
    assert_eq!(spec.devices[0].name, "0");
    let node = &spec.devices[0].container_edits.device_nodes[0];
    assert_eq!(
        node.host_path.as_deref(),
        Some("/run/nvidia/driver/dev/nvidia0")
    );
    assert_eq!(node.r#type, None);
    assert_eq!(
        spec.container_edits.hooks[0].args,
        ["nvidia-cdi-hook", "update-ldcache", "--folder", "/usr/lib"]
    );
    assert_eq!(spec.container_edits.mounts[0].options.len(), 5);
}

#[test]
fn null_lists_read_as_empty() {
    let text = spec_yaml("0.3.0", "vendor.com/dev", "d", NODE)
        + "containerEdits:\n  env:\n  mounts: null\n";
    let spec = parse(&text).unwrap();
    assert!(spec.container_edits.is_empty());
}

#[test]
fn each_version_gates_its_fields() {
    // (needed version, kind, device name, device edits)
    let mount_type = "      mounts:\n        - {hostPath: /a, containerPath: /a, type: tmpfs}\n";
    let host_path = "      deviceNodes:\n        - {path: /dev/x, hostPath: /dev/y}\n";
    let gids = "      additionalGids: [44]\n";
    let rdt = "      intelRdt: {closID: c1}\n";
    let schemata = "      intelRdt: {closID: c1, schemata: [\"L3:0=f\"]}\n";
    let net = "      netDevices:\n        - {hostInterfaceName: eth1, name: net0}\n";
    let cases = [
        ("0.4.0", "v.com/c", "d", mount_type),
        ("0.5.0", "v.com/c", "d", host_path),
        ("0.5.0", "v.com/c", "0", NODE),
        ("0.6.0", "v.com/c.x", "d", NODE),
        ("0.7.0", "v.com/c", "d", gids),
        ("0.7.0", "v.com/c", "d", rdt),
        ("1.1.0", "v.com/c", "d", schemata),
        ("1.1.0", "v.com/c", "d", net),
    ];
    let versions = [
        "0.3.0", "0.4.0", "0.5.0", "0.6.0", "0.7.0", "0.8.0", "1.0.0", "1.1.0",
    ];
    for (needed, kind, name, edits) in cases {
        for version in versions {
            let result = parse(&spec_yaml(version, kind, name, edits));
            if version_less(version, needed) {
                let err = format!("{:#}", result.expect_err(version));
                assert!(
                    err.ends_with(&format!("the spec version must be at least v{needed}")),
                    "{err}"
                );
            } else {
                result.unwrap_or_else(|e| panic!("{needed} field at {version}: {e:#}"));
            }
        }
    }
}

fn version_less(a: &str, b: &str) -> bool {
    let key = |v: &str| {
        v.split('.')
            .map(|p| p.parse::<u32>().unwrap())
            .collect::<Vec<_>>()
    };
    key(a) < key(b)
}

#[test]
fn annotations_need_0_6_0() {
    let base = spec_yaml("0.5.0", "v.com/c", "d", NODE);
    let err = parse_err(&(base.clone() + "annotations:\n  a.com/x: y\n"));
    assert!(
        err.ends_with("the spec version must be at least v0.6.0"),
        "{err}"
    );
    let spec = parse(&(base.replace("0.5.0", "0.6.0") + "annotations:\n  a.com/x: y\n")).unwrap();
    assert_eq!(spec.annotations["a.com/x"], "y");
}

#[test]
fn versions_outside_the_known_set_are_invalid() {
    for version in [
        "0.9.0",
        "1.2.0",
        "2.0.0",
        "0.3",
        "0.3.0.0",
        "abc",
        "",
        "0.3.0-rc1",
    ] {
        let err = parse_err(&spec_yaml(version, "v.com/c", "d", NODE));
        assert!(
            err.ends_with(&format!("invalid version \"{version}\"")),
            "{version}: {err}"
        );
    }
    for version in ["0.1.0", "0.2.0"] {
        let err = parse_err(&spec_yaml(version, "v.com/c", "d", NODE));
        assert!(
            err.ends_with("the spec version must be at least v0.3.0"),
            "{version}: {err}"
        );
    }
    for version in ["v0.3.0", "v1.0.0", "0.8.0"] {
        parse(&spec_yaml(version, "v.com/c", "d", NODE)).unwrap();
    }
}

#[test]
fn bad_kinds_are_rejected() {
    let cases = [
        ("nvidia.com", "invalid vendor. empty name"),
        ("/gpu", "invalid vendor. empty name"),
        (
            "1nvidia.com/gpu",
            "invalid vendor. \"1nvidia.com\", should start with letter",
        ),
        (
            "nvidia.com-/gpu",
            "invalid vendor. \"nvidia.com-\", should end with a letter or digit",
        ),
        (
            "nvidia.com/g@u",
            "invalid class. invalid character '@' in name \"g@u\"",
        ),
        (
            "nvidia.com/gpu/x",
            "invalid class. invalid character '/' in name \"gpu/x\"",
        ),
    ];
    for (kind, want) in cases {
        let err = parse_err(&spec_yaml("0.6.0", kind, "d", NODE));
        assert!(err.ends_with(want), "{kind}: {err}");
    }
}

#[test]
fn bad_devices_are_rejected() {
    let cases = [
        (
            spec_yaml("0.5.0", "v.com/c", "-0", NODE),
            "failed add device \"-0\": invalid class \"-0\", should start with a letter or digit",
        ),
        (
            spec_yaml("0.5.0", "v.com/c", "a=b", NODE),
            "invalid character '=' in device name \"a=b\"",
        ),
        (
            spec_yaml("0.5.0", "v.com/c", "gpu0", "      env: []\n"),
            "invalid device, empty device edits",
        ),
        (
            spec_yaml("0.5.0", "v.com/c", "d", NODE) + "  - name: d\n    containerEdits:\n" + NODE,
            "invalid spec, multiple device \"d\"",
        ),
        (
            "cdiVersion: 0.3.0\nkind: v.com/c\ndevices: []\n".to_string(),
            "invalid spec, no devices",
        ),
        (
            spec_yaml("0.5.0", "v.com/c", "d", "      env: [NOEQUALS]\n"),
            "invalid environment variable \"NOEQUALS\"",
        ),
        (
            spec_yaml(
                "0.5.0",
                "v.com/c",
                "d",
                "      hooks:\n        - {hookName: preStart, path: /x}\n",
            ),
            "invalid hook name \"preStart\"",
        ),
        (
            spec_yaml(
                "0.5.0",
                "v.com/c",
                "d",
                "      hooks:\n        - {hookName: prestart, path: \"\"}\n",
            ),
            "invalid hook \"prestart\" with empty path",
        ),
        (
            spec_yaml(
                "0.5.0",
                "v.com/c",
                "d",
                "      deviceNodes:\n        - {path: /dev/x, permissions: rx}\n",
            ),
            "device \"/dev/x\": invalid permissions \"rx\"",
        ),
        (
            spec_yaml(
                "0.5.0",
                "v.com/c",
                "d",
                "      deviceNodes:\n        - {path: /dev/x, type: z}\n",
            ),
            "device \"/dev/x\": invalid type \"z\"",
        ),
        (
            spec_yaml(
                "0.5.0",
                "v.com/c",
                "d",
                "      deviceNodes:\n        - {path: /dev/x, type: c, major: -1}\n",
            ),
            "invalid (negative) device number -1:0",
        ),
        (
            spec_yaml(
                "0.5.0",
                "v.com/c",
                "d",
                "      mounts:\n        - {hostPath: /a, containerPath: \"\"}\n",
            ),
            "invalid mount, empty container path",
        ),
    ];
    for (text, want) in cases {
        let err = parse_err(&text);
        assert!(err.ends_with(want), "want …{want}\n got {err}");
        assert!(
            err.starts_with("invalid CDI Spec \"/etc/cdi/test.yaml\": "),
            "{err}"
        );
    }
}

#[test]
fn unknown_fields_are_rejected() {
    let err = parse_err(&spec_yaml(
        "0.5.0",
        "v.com/c",
        "d",
        "      deviceNodes:\n        - {path: /dev/x, hostpath: /y}\n",
    ));
    assert!(
        err.starts_with(
            "failed to parse CDI Spec \"/etc/cdi/test.yaml\": failed to unmarshal CDI Spec: "
        ),
        "{err}"
    );
    assert!(err.contains("unknown field `hostpath`"), "{err}");
    let err = parse_spec(
        br#"{"cdiVersion":"0.5.0","kind":"v.com/c","devices":[],"extra":1}"#,
        Path::new("a.json"),
    )
    .expect_err("unknown top-level field");
    assert!(
        format!("{err:#}").contains("unknown field `extra`"),
        "{err:#}"
    );
}

#[test]
fn qualified_names() {
    let good = [
        ("nvidia.com/gpu=0", ("nvidia.com", "gpu", "0")),
        ("nvidia.com/gpu=all", ("nvidia.com", "gpu", "all")),
        (
            "nvidia.com/gpu=GPU-4e2a1a4c-0ab5-4b4b-9c1e-2b3f0e8e1a77",
            (
                "nvidia.com",
                "gpu",
                "GPU-4e2a1a4c-0ab5-4b4b-9c1e-2b3f0e8e1a77",
            ),
        ),
        ("nvidia.com/mig=0:1", ("nvidia.com", "mig", "0:1")),
        ("runtime.nvidia.com/gpu=MIG-GPU-x/1/0", ("", "", "")),
        ("a/b=c", ("a", "b", "c")),
        (
            "vendor_x/class.y=dev_1.2-3",
            ("vendor_x", "class.y", "dev_1.2-3"),
        ),
    ];
    for (input, (vendor, class, name)) in good {
        let got = parse_qualified_name(input);
        if vendor.is_empty() {
            // '/' is not allowed inside a device name.
            assert!(got.is_err(), "{input}");
            continue;
        }
        let got = got.unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(
            got,
            (vendor.to_string(), class.to_string(), name.to_string()),
            "{input}"
        );
    }
    let bad = [
        ("", "unqualified device \"\", missing vendor"),
        ("0", "unqualified device \"0\", missing vendor"),
        (
            "nvidia.com/gpu",
            "unqualified device \"nvidia.com/gpu\", missing vendor",
        ),
        (
            "nvidia.com/gpu=",
            "unqualified device \"nvidia.com/gpu=\", missing vendor",
        ),
        (
            "nvidia.com=0",
            "unqualified device \"nvidia.com=0\", missing vendor",
        ),
        (
            "/dev/nvidia0=x/y",
            "unqualified device \"/dev/nvidia0=x/y\", missing vendor",
        ),
        ("/gpu=0", "unqualified device \"/gpu=0\", missing vendor"),
        (
            "1v.com/gpu=0",
            "invalid device \"1v.com/gpu=0\": invalid vendor. \"1v.com\", should start with letter",
        ),
        (
            "v.com/gpu_=0",
            "invalid device \"v.com/gpu_=0\": invalid class. \"gpu_\", should end with a letter or digit",
        ),
        (
            "v.com/gpu=0:",
            "invalid device \"v.com/gpu=0:\": invalid name \"0:\", should end with a letter or digit",
        ),
        (
            "v.com/gpu=a b",
            "invalid device \"v.com/gpu=a b\": invalid character ' ' in device name \"a b\"",
        ),
    ];
    for (input, want) in bad {
        let err = parse_qualified_name(input).expect_err(input).to_string();
        assert_eq!(err, want);
        assert!(!is_qualified_name(input));
    }
    assert!(is_qualified_name("nvidia.com/gpu=all"));
}

#[test]
fn edits_built_in_code_serialize_and_read_back() {
    let edits = ContainerEdits {
        env: vec!["NVIDIA_VISIBLE_DEVICES=void".into()],
        device_nodes: vec![DeviceNode {
            path: "/dev/nvidiactl".into(),
            major: Some(195),
            minor: Some(255),
            ..Default::default()
        }],
        hooks: vec![Hook {
            hook_name: "createContainer".into(),
            path: "/usr/bin/nvidia-cdi-hook".into(),
            ..Default::default()
        }],
        mounts: vec![Mount {
            host_path: "/a".into(),
            container_path: "/b".into(),
            r#type: None,
            options: vec!["ro".into()],
        }],
        additional_gids: vec![44],
        ..Default::default()
    };
    let json = serde_json::to_value(&edits).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "env": ["NVIDIA_VISIBLE_DEVICES=void"],
            "deviceNodes": [{"path": "/dev/nvidiactl", "major": 195, "minor": 255}],
            "hooks": [{"hookName": "createContainer", "path": "/usr/bin/nvidia-cdi-hook"}],
            "mounts": [{"hostPath": "/a", "containerPath": "/b", "options": ["ro"]}],
            "additionalGids": [44]
        })
    );
    let spec = Spec {
        cdi_version: "0.7.0".into(),
        kind: "runtime.nvidia.com/gpu".into(),
        devices: vec![Device {
            name: "0".into(),
            container_edits: edits.clone(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let yaml = serde_yaml_ng::to_string(&spec).unwrap();
    let back = parse_spec(yaml.as_bytes(), Path::new("gen.yaml")).unwrap();
    assert_eq!(back, spec);
    assert_eq!(minimum_version(&spec), (0, 7, 0));
}
