use std::path::PathBuf;
use std::process::Command;

use serde_json::{Value, json};

use super::*;

/// A regular file every checkout has.
const CARGO_TOML: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");

const EMBEDDED_RUNC_SPEC: &str = include_str!("testdata/runc-spec-config.json");

/// config.json as `runc spec` writes it, from the installed runc when there is one.
fn runc_config() -> Value {
    // One bundle per call: tests run in parallel and would remove each other's.
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let bundle = std::env::temp_dir().join(format!("nvbox-cdi-runc-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&bundle);
    std::fs::create_dir_all(&bundle).unwrap();
    let ran = Command::new("runc")
        .arg("spec")
        .arg("--bundle")
        .arg(&bundle)
        .status();
    let text = match ran {
        Ok(status) if status.success() => {
            std::fs::read_to_string(bundle.join("config.json")).unwrap()
        }
        _ => EMBEDDED_RUNC_SPEC.to_string(),
    };
    let _ = std::fs::remove_dir_all(&bundle);
    serde_json::from_str(&text).unwrap()
}

fn node(path: &str) -> DeviceNode {
    DeviceNode {
        path: path.into(),
        ..Default::default()
    }
}

fn hook(name: &str, path: &str) -> Hook {
    Hook {
        hook_name: name.into(),
        path: path.into(),
        args: vec![path.into()],
        ..Default::default()
    }
}

fn mount(host: &str, container: &str) -> Mount {
    Mount {
        host_path: host.into(),
        container_path: container.into(),
        r#type: None,
        options: vec!["ro".into(), "rbind".into()],
    }
}

fn depth_sorted(mounts: &[Value]) -> Vec<Value> {
    let mut sorted = mounts.to_vec();
    sorted.sort_by_key(|m| apply::mount_depth(m["destination"].as_str().unwrap()));
    sorted
}

#[test]
fn runc_spec_keeps_everything_but_our_additions() {
    let mut original = runc_config();
    // Fields no OCI struct knows must survive untouched.
    original["org.example.future"] = json!({"nested": [1, 2, {"x": null}]});
    original["process"]["x-extra"] = json!("kept");
    let mut spec = original.clone();
    let edits = ContainerEdits {
        env: vec!["TERM=dumb".into(), "NVIDIA_VISIBLE_DEVICES=void".into()],
        device_nodes: vec![node("/dev/null")],
        hooks: vec![hook("createContainer", "/usr/bin/nvidia-cdi-hook")],
        mounts: vec![mount(
            "/usr/lib/libcuda.so.1",
            "/usr/lib/x86_64-linux-gnu/libcuda.so.1",
        )],
        additional_gids: vec![0, 44],
        ..Default::default()
    };
    apply_edits(&mut spec, &edits).unwrap();

    let env = spec["process"]["env"].as_array().unwrap().clone();
    let mut want_env = original["process"]["env"].as_array().unwrap().clone();
    let term = want_env
        .iter()
        .position(|v| v.as_str().unwrap().starts_with("TERM="))
        .unwrap();
    want_env[term] = json!("TERM=dumb");
    want_env.push(json!("NVIDIA_VISIBLE_DEVICES=void"));
    assert_eq!(env, want_env);
    assert_eq!(spec["process"]["user"]["additionalGids"], json!([44]));
    assert_eq!(
        spec["linux"]["devices"],
        json!([{"path": "/dev/null", "type": "c", "major": 1, "minor": 3}])
    );
    let rules = spec["linux"]["resources"]["devices"].as_array().unwrap();
    let original_rules = original["linux"]["resources"]["devices"]
        .as_array()
        .unwrap();
    assert_eq!(rules[..original_rules.len()], original_rules[..]);
    assert_eq!(
        rules[original_rules.len()..],
        [json!({"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"})]
    );
    assert_eq!(
        spec["hooks"],
        json!({"createContainer": [{"path": "/usr/bin/nvidia-cdi-hook", "args": ["/usr/bin/nvidia-cdi-hook"]}]})
    );
    let mut want_mounts = original["mounts"].as_array().unwrap().clone();
    want_mounts.push(json!({"destination": "/usr/lib/x86_64-linux-gnu/libcuda.so.1", "source": "/usr/lib/libcuda.so.1", "options": ["ro", "rbind"]}));
    assert_eq!(
        spec["mounts"].as_array().unwrap(),
        &depth_sorted(&want_mounts)
    );

    // Take our additions back out: what remains must be the original, byte for byte.
    let mut stripped = spec.clone();
    stripped["process"]["env"] = original["process"]["env"].clone();
    stripped["process"]["user"]
        .as_object_mut()
        .unwrap()
        .remove("additionalGids");
    stripped["linux"].as_object_mut().unwrap().remove("devices");
    stripped["linux"]["resources"]["devices"] = json!(original_rules);
    stripped.as_object_mut().unwrap().remove("hooks");
    stripped["mounts"] = original["mounts"].clone();
    assert_eq!(stripped, original);
}

#[test]
fn env_replaces_by_key_and_appends_new_keys() {
    let mut spec = json!({"process": {"env": ["A=1", "B=2", "AB=3", "C"]}});
    let edits = ContainerEdits {
        env: vec!["B=x".into(), "A=".into(), "D=4".into(), "D=5".into()],
        ..Default::default()
    };
    apply_edits(&mut spec, &edits).unwrap();
    assert_eq!(
        spec["process"]["env"],
        json!(["A=", "B=x", "AB=3", "C", "D=5"])
    );
    // No process yet: created.
    let mut bare = json!({"ociVersion": "1.0.2"});
    apply_edits(&mut bare, &edits).unwrap();
    assert_eq!(bare["process"]["env"], json!(["B=x", "A=", "D=5"]));
}

#[test]
fn device_nodes_are_stated_and_deduplicated() {
    let mut spec = json!({"process": {"user": {"uid": 1000, "gid": 0}}, "linux": {"devices": [
        {"path": "/dev/nvidia0", "type": "c", "major": 9, "minor": 9}, {"path": "/dev/other", "type": "c", "major": 5, "minor": 1}
    ]}});
    let from_host = DeviceNode {
        host_path: Some("/dev/null".into()),
        permissions: Some("rw".into()),
        ..node("/dev/nvidia0")
    };
    let given = DeviceNode {
        r#type: Some("c".into()),
        major: Some(195),
        minor: Some(255),
        gid: Some(44),
        permissions: Some("none".into()),
        file_mode: Some(0o666),
        ..node("/dev/nvidiactl")
    };
    let fifo = DeviceNode {
        r#type: Some("p".into()),
        ..node("/dev/missing-fifo")
    };
    let edits = ContainerEdits {
        device_nodes: vec![from_host, given, fifo],
        ..Default::default()
    };
    apply_edits(&mut spec, &edits).unwrap();
    assert_eq!(
        spec["linux"]["devices"],
        json!([
            {"path": "/dev/other", "type": "c", "major": 5, "minor": 1},
            {"path": "/dev/nvidia0", "type": "c", "major": 1, "minor": 3, "uid": 1000},
            {"path": "/dev/nvidiactl", "type": "c", "major": 195, "minor": 255, "fileMode": 438, "uid": 1000, "gid": 44},
            {"path": "/dev/missing-fifo", "type": "p", "major": 0, "minor": 0, "uid": 1000}
        ])
    );
    assert_eq!(
        spec["linux"]["resources"]["devices"],
        json!([
            {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rw"},
            {"allow": true, "type": "c", "major": 195, "minor": 255}
        ])
    );
}

#[test]
fn device_node_errors() {
    let cases = [
        (
            node("/nonexistent/nvbox-dev"),
            "failed to stat CDI host device \"/nonexistent/nvbox-dev\": ",
        ),
        (
            node(CARGO_TOML),
            concat!(
                "failed to stat CDI host device \"",
                env!("CARGO_MANIFEST_DIR"),
                "/Cargo.toml\": not a device node"
            ),
        ),
        (
            DeviceNode {
                r#type: Some("b".into()),
                ..node("/dev/null")
            },
            "CDI device (\"/dev/null\", \"/dev/null\"), host type mismatch (b, c)",
        ),
    ];
    for (dev, want) in cases {
        let mut spec = json!({});
        let err = apply_edits(
            &mut spec,
            &ContainerEdits {
                device_nodes: vec![dev],
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(err.to_string().starts_with(want), "{err}");
    }
    let mut spec = json!({"linux": []});
    let err = apply_edits(
        &mut spec,
        &ContainerEdits {
            device_nodes: vec![node("/dev/null")],
            ..Default::default()
        },
    );
    assert_eq!(
        err.unwrap_err().to_string(),
        "can't edit OCI spec: linux is not an object"
    );
}

#[test]
fn hooks_go_to_the_named_list() {
    let mut spec = json!({"hooks": {"prestart": [{"path": "/existing"}]}});
    let edits = ContainerEdits {
        hooks: HOOK_NAMES
            .iter()
            .map(|name| hook(name, &format!("/bin/{name}")))
            .collect(),
        ..Default::default()
    };
    apply_edits(&mut spec, &edits).unwrap();
    let hooks = spec["hooks"].as_object().unwrap();
    assert_eq!(hooks.len(), 6);
    for name in HOOK_NAMES {
        let list = hooks[name].as_array().unwrap();
        assert_eq!(
            list.last().unwrap()["path"],
            json!(format!("/bin/{name}")),
            "{name}"
        );
    }
    assert_eq!(hooks["prestart"][0], json!({"path": "/existing"}));
    let timed = Hook {
        env: vec!["A=1".into()],
        timeout: Some(7),
        ..hook("poststop", "/x")
    };
    apply_edits(
        &mut spec,
        &ContainerEdits {
            hooks: vec![timed],
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        spec["hooks"]["poststop"][1],
        json!({"path": "/x", "args": ["/x"], "env": ["A=1"], "timeout": 7})
    );
    let bad = ContainerEdits {
        hooks: vec![hook("preStart", "/x")],
        ..Default::default()
    };
    assert_eq!(
        apply_edits(&mut spec, &bad).unwrap_err().to_string(),
        "invalid hook name \"preStart\""
    );
}

#[test]
fn mounts_replace_by_destination_then_sort_by_depth() {
    let mut spec = json!({"mounts": [
        {"destination": "/a/b/c", "source": "x"}, {"destination": "/dev", "type": "tmpfs", "source": "tmpfs"}
    ]});
    let tmpfs = Mount {
        r#type: Some("tmpfs".into()),
        ..mount("tmpfs", "/a/b/c")
    };
    let edits = ContainerEdits {
        mounts: vec![mount("/h/lib", "/usr/lib/x"), tmpfs, mount("/h/y", "/y/")],
        ..Default::default()
    };
    apply_edits(&mut spec, &edits).unwrap();
    let order: Vec<_> = spec["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["destination"].as_str().unwrap())
        .collect();
    assert_eq!(order, ["/dev", "/y/", "/usr/lib/x", "/a/b/c"]);
    assert_eq!(
        spec["mounts"][3],
        json!({"destination": "/a/b/c", "type": "tmpfs", "source": "tmpfs", "options": ["ro", "rbind"]})
    );
}

#[test]
fn mount_depth_counts_cleaned_separators() {
    let cases = [
        ("/", 1),
        ("", 0),
        ("a", 0),
        ("a/b", 1),
        ("/a", 1),
        ("/a/", 1),
        ("/a//b/./c", 3),
        ("/a/../b", 1),
        ("/..", 1),
        ("../a", 1),
    ];
    for (path, want) in cases {
        assert_eq!(apply::mount_depth(path), want, "{path}");
    }
}

#[test]
fn gids_rdt_and_net_devices() {
    let mut spec = json!({"process": {"user": {"uid": 0, "gid": 0, "additionalGids": [44]}}});
    let edits = ContainerEdits {
        additional_gids: vec![0, 44, 45],
        intel_rdt: Some(IntelRdt {
            clos_id: Some("gpu".into()),
            l3_cache_schema: Some("L3:0=f".into()),
            ..Default::default()
        }),
        net_devices: vec![NetDevice {
            host_interface_name: "eth1".into(),
            name: "net0".into(),
        }],
        ..Default::default()
    };
    apply_edits(&mut spec, &edits).unwrap();
    assert_eq!(spec["process"]["user"]["additionalGids"], json!([44, 45]));
    assert_eq!(
        spec["linux"]["intelRdt"],
        json!({"closID": "gpu", "l3CacheSchema": "L3:0=f"})
    );
    assert_eq!(
        spec["linux"]["netDevices"],
        json!({"eth1": {"name": "net0"}})
    );
}

#[test]
fn resolved_registry_edits_apply_in_order() {
    let dir: PathBuf = std::env::temp_dir().join(format!("nvbox-cdi-apply-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let text = "cdiVersion: 0.5.0\nkind: nvidia.com/gpu\ncontainerEdits:\n  env: [NVIDIA_VISIBLE_DEVICES=void, X=spec]\n\
                devices:\n  - name: \"0\"\n    containerEdits:\n      env: [X=dev]\n      deviceNodes:\n        - {path: /dev/nvidia0, hostPath: /dev/null}\n";
    std::fs::write(dir.join("nvidia.yaml"), text).unwrap();
    let reg = load_registry(&[dir]).unwrap();
    let mut spec = runc_config();
    for edits in reg.resolve(&["nvidia.com/gpu=0".to_string()]).unwrap() {
        apply_edits(&mut spec, &edits).unwrap();
    }
    let env = spec["process"]["env"].as_array().unwrap();
    assert!(env.contains(&json!("NVIDIA_VISIBLE_DEVICES=void")));
    assert!(env.contains(&json!("X=dev")) && !env.contains(&json!("X=spec")));
    assert_eq!(
        spec["linux"]["devices"],
        json!([{"path": "/dev/nvidia0", "type": "c", "major": 1, "minor": 3}])
    );
}
