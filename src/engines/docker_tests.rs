use super::*;

fn cfg(text: &str) -> Map<String, Value> {
    parse(Some(text)).unwrap()
}

#[test]
fn missing_or_blank_file_is_an_empty_object() {
    assert!(parse(None).unwrap().is_empty());
    assert!(parse(Some(" \n")).unwrap().is_empty());
    assert!(parse(Some("[1]")).is_err());
    assert!(parse(Some("{")).is_err());
}

#[test]
fn add_keeps_unrelated_keys_and_runtimes() {
    let mut c = cfg(
        r#"{"log-level":"warn","runtimes":{"runsc":{"path":"/usr/bin/runsc","runtimeArgs":["--nvproxy"]}},"x":{"y":[1,2]}}"#,
    );
    add_runtime(&mut c, "nvidia", "nvidia-container-runtime", false).unwrap();
    assert_eq!(
        Value::Object(c),
        json!({
            "log-level": "warn",
            "runtimes": {
                "runsc": {"path": "/usr/bin/runsc", "runtimeArgs": ["--nvproxy"]},
                "nvidia": {"args": [], "path": "nvidia-container-runtime"}
            },
            "x": {"y": [1, 2]}
        })
    );
}

#[test]
fn default_runtime_is_set_only_when_asked() {
    let mut c = cfg(r#"{"default-runtime":"runsc"}"#);
    add_runtime(&mut c, "nvidia", "/p", false).unwrap();
    assert_eq!(c["default-runtime"], "runsc");
    add_runtime(&mut c, "nvidia", "/p", true).unwrap();
    assert_eq!(c["default-runtime"], "nvidia");
}

#[test]
fn an_existing_entry_of_that_name_is_replaced() {
    let mut c = cfg(r#"{"runtimes":{"nvidia":{"path":"/old","runtimeArgs":[]}}}"#);
    add_runtime(&mut c, "nvidia", "/new", false).unwrap();
    assert_eq!(c["runtimes"]["nvidia"], json!({"args": [], "path": "/new"}));
}

#[test]
fn cdi_is_merged_into_existing_features() {
    let mut c = cfg(r#"{"features":{"containerd-snapshotter":true,"cdi":false}}"#);
    enable_cdi(&mut c).unwrap();
    assert_eq!(
        c["features"],
        json!({"containerd-snapshotter": true, "cdi": true})
    );
}

#[test]
fn non_object_sections_are_errors_not_overwritten() {
    let mut c = cfg(r#"{"features":"on","runtimes":[]}"#);
    assert!(enable_cdi(&mut c).is_err());
    assert!(add_runtime(&mut c, "nvidia", "/p", false).is_err());
    assert_eq!(c["features"], "on");
}

#[test]
fn remove_resets_a_default_that_named_it() {
    let mut c =
        cfg(r#"{"default-runtime":"nvidia","runtimes":{"nvidia":{"path":"p"}},"debug":true}"#);
    assert!(remove_runtime(&mut c, "nvidia"));
    assert_eq!(
        Value::Object(c.clone()),
        json!({"default-runtime": "runc", "debug": true})
    );
    assert!(!remove_runtime(&mut c, "nvidia"));
    let mut other = cfg(r#"{"default-runtime":"runsc","runtimes":{"nvidia":{},"runsc":{}}}"#);
    assert!(remove_runtime(&mut other, "nvidia"));
    assert_eq!(
        Value::Object(other),
        json!({"default-runtime": "runsc", "runtimes": {"runsc": {}}})
    );
}

#[test]
fn render_matches_upstream_layout() {
    let mut c = Map::new();
    add_runtime(&mut c, "nvidia", "nvidia-container-runtime", true).unwrap();
    enable_cdi(&mut c).unwrap();
    assert_eq!(
        render(&c),
        "{\n    \"default-runtime\": \"nvidia\",\n    \"features\": {\n        \"cdi\": true\n    },\n    \"runtimes\": {\n        \"nvidia\": {\n            \"args\": [],\n            \"path\": \"nvidia-container-runtime\"\n        }\n    }\n}\n"
    );
}

/// Found by fuzz/fuzz_targets/daemon_json.rs: serde_json's default float parser may be one ulp
/// off, so a number beyond u64 (read as f64) changed each time the file was configured. With
/// `float_roundtrip` the parse is exact and the render reads back as the same value.
#[test]
fn numbers_survive_a_render_round_trip() {
    for text in [
        r#"{"data-root": 66666666666666666666666666666666666666666666}"#,
        r#"{"x": 0.1, "y": 1e308, "z": -2.2250738585072014e-308, "n": 18446744073709551615}"#,
    ] {
        let first = cfg(text);
        let again = cfg(&render(&first));
        assert_eq!(again, first, "{text}");
    }
    assert_eq!(
        cfg(r#"{"v": 66666666666666666666666666666666666666666666}"#)["v"].as_f64(),
        Some(6.666666666666666e43)
    );
}
