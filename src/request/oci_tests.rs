use super::*;
use serde_json::json;

fn err_of(spec: Value) -> String {
    match read_container(&spec) {
        Ok(_) => panic!("spec should be rejected: {spec}"),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn container_view_of_a_typical_spec() {
    let spec = json!({
        "ociVersion": "1.2.0",
        "process": {
            "env": ["PATH=/usr/bin", "NVIDIA_VISIBLE_DEVICES=all"],
            "capabilities": {
                "bounding": ["CAP_CHOWN", "CAP_SYS_ADMIN"],
                "effective": ["CAP_CHOWN"]
            },
            "unknownField": 1
        },
        "root": {"path": "rootfs", "readonly": false},
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/tmp"}
        ],
        "annotations": {"a": "1", "cdi.k8s.io/x": "nvidia.com/gpu=0"}
    });
    let c = read_container(&spec).unwrap();
    assert_eq!(c.root_path, "rootfs");
    assert_eq!(c.env, ["PATH=/usr/bin", "NVIDIA_VISIBLE_DEVICES=all"]);
    assert!(c.privileged);
    assert_eq!(
        c.mounts,
        [
            ("proc".to_owned(), "/proc".to_owned()),
            (String::new(), "/tmp".to_owned())
        ]
    );
    assert_eq!(c.annotations.len(), 2);
    assert_eq!(c.annotations["cdi.k8s.io/x"], "nvidia.com/gpu=0");
}

#[test]
fn optional_parts_may_be_missing() {
    let spec = json!({"ociVersion": "1.0.2", "process": {}, "root": {}});
    let c = read_container(&spec).unwrap();
    assert_eq!(c.root_path, "");
    assert!(c.env.is_empty());
    assert!(!c.privileged);
    assert!(c.mounts.is_empty());
    assert!(c.annotations.is_empty());
}

#[test]
fn required_parts_missing_are_errors() {
    let e = err_of(json!({"ociVersion": "1.0.2", "root": {"path": "r"}}));
    assert_eq!(e, "process is empty in OCI spec");
    let e = err_of(json!({"ociVersion": "1.0.2", "process": null, "root": {"path": "r"}}));
    assert_eq!(e, "process is empty in OCI spec");
    let e = err_of(json!({"ociVersion": "1.0.2", "process": {}}));
    assert_eq!(e, "root is empty in OCI spec");
    let e = err_of(json!({"process": {}, "root": {}}));
    assert_eq!(e, "version is empty in OCI spec");
    let e = err_of(json!([]));
    assert!(e.contains("not a JSON object"), "{e}");
}

#[test]
fn wrong_types_are_errors() {
    let base = |process: Value| json!({"ociVersion": "1.0.2", "process": process, "root": {}});
    assert!(err_of(base(json!({"env": "A=1"}))).contains("process.env"));
    assert!(err_of(base(json!({"env": [1]}))).contains("process.env"));
    assert!(err_of(base(json!({"capabilities": ["CAP_SYS_ADMIN"]}))).contains("capabilities"));
    let e = err_of(json!({"ociVersion": 1, "process": {}, "root": {}}));
    assert!(e.contains("ociVersion"), "{e}");
    let e = err_of(json!({"ociVersion": "1.0.2", "process": {}, "root": {}, "mounts": [1]}));
    assert!(e.contains("mounts"), "{e}");
    let e = err_of(json!({"ociVersion": "1.0.2", "process": {}, "root": {},
        "annotations": {"a": 1}}));
    assert!(e.contains("annotations"), "{e}");
}

#[test]
fn privileged_needs_cap_sys_admin_in_bounding() {
    let spec =
        |caps: Value| json!({"ociVersion": "1.0.2", "process": {"capabilities": caps}, "root": {}});
    let privileged = |caps: Value| read_container(&spec(caps)).unwrap().privileged;
    assert!(!privileged(
        json!({"effective": ["CAP_SYS_ADMIN"], "permitted": ["CAP_SYS_ADMIN"]})
    ));
    assert!(!privileged(json!({"bounding": ["CAP_NET_ADMIN"]})));
    assert!(!privileged(json!({"bounding": null})));
    assert!(!privileged(json!(null)));
    assert!(privileged(json!({"bounding": ["CAP_SYS_ADMIN"]})));
}

#[test]
fn flat_capability_list_for_early_release_candidates() {
    let spec = |version: &str, caps: Value| json!({"ociVersion": version, "process": {"capabilities": caps}, "root": {}});
    for version in ["1.0.0-rc1", "1.0.0-rc2", "1.0.0-rc4", "1.0.0-rc2-dev"] {
        let c = read_container(&spec(version, json!(["CAP_SYS_ADMIN"]))).unwrap();
        assert!(c.privileged, "{version}");
        let c = read_container(&spec(version, json!(["CAP_CHOWN"]))).unwrap();
        assert!(!c.privileged, "{version}");
    }
    for version in ["1.0.0-rc5", "1.0.0", "1.1.0", "1.0.0-rc0", "0.6.0", "bogus"] {
        let e = read_container(&spec(version, json!(["CAP_SYS_ADMIN"])));
        assert!(e.is_err(), "{version}: flat list accepted outside rc1..rc5");
        let c = read_container(&spec(version, json!({"bounding": ["CAP_SYS_ADMIN"]}))).unwrap();
        assert!(c.privileged, "{version}");
    }
}

#[test]
fn semver_precedence() {
    let cmp = |a: &str, b: &str| {
        Semver::parse(a)
            .unwrap()
            .cmp_precedence(&Semver::parse(b).unwrap())
    };
    assert_eq!(cmp("1.0.0-rc1", "1.0.0-rc5"), Ordering::Less);
    assert_eq!(cmp("1.0.0", "1.0.0-rc5"), Ordering::Greater);
    assert_eq!(cmp("1.0.0-1", "1.0.0-rc1"), Ordering::Less);
    assert_eq!(cmp("1.0.0-2", "1.0.0-10"), Ordering::Less);
    assert_eq!(cmp("1.0.0-rc1", "1.0.0-rc1.1"), Ordering::Less);
    assert_eq!(cmp("v1.0", "1.0.0+build"), Ordering::Equal);
    assert_eq!(cmp("0.9.9", "1.0.0-rc1"), Ordering::Less);
    for bad in ["", "1..0", "1.0.0.0", "1.0.0-", "x", "1.0.0-rc1..2"] {
        assert!(Semver::parse(bad).is_none(), "{bad:?}");
    }
}

#[test]
fn state_bundle_and_legacy_bundle_path() {
    let s = read_state(br#"{"ociVersion":"1.2.0","id":"c","status":"creating","pid":12345,"bundle":"/run/b","annotations":{}}"#).unwrap();
    assert_eq!(
        s,
        State {
            pid: 12345,
            bundle: "/run/b".into()
        }
    );
    let s = read_state(br#"{"pid":7,"bundlePath":"/old/b"}"#).unwrap();
    assert_eq!(
        s,
        State {
            pid: 7,
            bundle: "/old/b".into()
        }
    );
    let s = read_state(br#"{"pid":7,"bundle":"","bundlePath":"/old/b"}"#).unwrap();
    assert_eq!(s.bundle, "/old/b");
    let s = read_state(br#"{"pid":7,"bundle":"/new","bundlePath":"/old"}"#).unwrap();
    assert_eq!(s.bundle, "/new");
    // The decoder reads one value and leaves the rest of stdin alone.
    let s = read_state(b"{\"pid\":1,\"bundle\":\"/b\"}\ntrailing").unwrap();
    assert_eq!(
        s,
        State {
            pid: 1,
            bundle: "/b".into()
        }
    );
}

#[test]
fn malformed_state_is_an_error() {
    for bad in [
        &b""[..],
        b"   ",
        b"{",
        b"not json",
        b"[]",
        br#"{"pid":"12","bundle":"/b"}"#,
        br#"{"pid":1.5,"bundle":"/b"}"#,
        br#"{"pid":4294967296,"bundle":"/b"}"#,
        br#"{"pid":1,"bundle":7}"#,
        br#"{"pid":1}"#,
    ] {
        let e = read_state(bad).expect_err(&String::from_utf8_lossy(bad));
        let msg = format!("{e:#}");
        assert!(msg.starts_with("could not decode container state"), "{msg}");
        assert!(!msg.contains('\n'), "{msg:?}");
    }
}
