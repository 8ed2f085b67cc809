//! The OCI state on the hook's stdin, and the bundle's config.json as the hook and the runtime
//! shim's `create` read it.

use super::*;

const HOOK: &str = "nvidia-container-runtime-hook";
const GPU_SPEC: &str = r#"{"ociVersion":"1.0.2","process":{"env":["NVIDIA_VISIBLE_DEVICES=all"]},"root":{"path":"rootfs"}}"#;

/// Runs the hook on `state`; it must be refused with `want`, bundle and mounts untouched.
#[track_caller]
fn assert_hook_refused(host: &Host, bundle: &Bundle, state: &[u8], want: &str, case: &str) {
    let before = bundle.tree();
    let out = run_with(&host.config, HOOK, &["prestart"], Some(state));
    assert_refused(HOOK, &out, want, case);
    assert_eq!(bundle.tree(), before, "{case}: bundle changed");
    assert_eq!(
        mounts_under(host.dir.path()),
        Vec::<String>::new(),
        "{case}"
    );
}

#[test]
fn state_json_on_stdin() {
    let host = Host::new("mal-state");
    let bundle = Bundle::new(&host, "b", GPU_SPEC.as_bytes());
    let b = bundle.dir.display().to_string();
    let huge = format!(
        r#"{{"pid":{NO_PID},"bundle":"{b}","annotations":{{"x":"{}"}}"#,
        "y".repeat(10 << 20)
    );
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", b"".to_vec(), "could not decode container state: "),
        (
            "truncated",
            br#"{"pid":1,"bund"#.to_vec(),
            "could not decode container state: ",
        ),
        (
            "not an object",
            b"[1,2]".to_vec(),
            "could not decode container state: not a JSON object",
        ),
        (
            "a string",
            br#""state""#.to_vec(),
            "could not decode container state: not a JSON object",
        ),
        (
            "pid a string",
            format!(r#"{{"pid":"1","bundle":"{b}"}}"#).into_bytes(),
            "could not decode container state: pid \"1\" is not an int",
        ),
        (
            "pid too big",
            format!(r#"{{"pid":99999999999,"bundle":"{b}"}}"#).into_bytes(),
            "is not an int",
        ),
        (
            "bundle a number",
            br#"{"pid":1,"bundle":5}"#.to_vec(),
            "could not decode container state: bundle is not a string",
        ),
        (
            "bundle missing",
            br#"{"pid":1}"#.to_vec(),
            "could not decode container state: no bundle path",
        ),
        (
            "bundle empty",
            br#"{"pid":1,"bundle":""}"#.to_vec(),
            "could not decode container state: no bundle path",
        ),
        (
            "bundle pointing nowhere",
            br#"{"pid":1,"bundle":"/nonexistent/nvbox-bundle"}"#.to_vec(),
            "/nonexistent/nvbox-bundle/config.json",
        ),
        // §5.2: pid > 0; Go decodes a missing pid as 0, which nvidia-container-cli refuses.
        (
            "pid missing",
            format!(r#"{{"bundle":"{b}"}}"#).into_bytes(),
            "input error: invalid pid: 0",
        ),
        (
            "pid negative",
            format!(r#"{{"pid":-5,"bundle":"{b}"}}"#).into_bytes(),
            "input error: invalid pid: -5",
        ),
        (
            "huge and truncated",
            huge.into_bytes(),
            "could not decode container state: ",
        ),
        (
            "non-UTF-8",
            b"{\"pid\":1,\"bundle\":\"\xff\xfe\"}".to_vec(),
            "could not decode container state: ",
        ),
    ];
    for (case, state, want) in &cases {
        assert_hook_refused(&host, &bundle, state, want, case);
    }
}

/// The same specs through the hook (stdin names the bundle) and through `create`.
#[test]
fn config_json_for_the_hook_and_the_runtime() {
    let host = Host::new("mal-spec");
    let shim = Shim::new(&host, "jit-cdi", "");
    let env_obj = |env: &str| {
        format!(r#"{{"ociVersion":"1.0.2","process":{{"env":{env}}},"root":{{"path":"rootfs"}}}}"#)
    };
    let mut huge = GPU_SPEC.trim_end_matches('}').to_owned();
    huge.push_str(&format!(
        r#","annotations":{{"pad":"{}"}}"#,
        "z".repeat(10 << 20)
    ));
    // (case, config.json, the hook says, `create` says)
    let cases: Vec<(&str, Vec<u8>, &str, &str)> = vec![
        (
            "empty",
            Vec::new(),
            "could not decode OCI spec",
            "error reading OCI specification: ",
        ),
        (
            "truncated",
            GPU_SPEC.as_bytes()[..60].to_vec(),
            "could not decode OCI spec",
            "error reading OCI specification: ",
        ),
        (
            "not an object",
            b"[]".to_vec(),
            "not a JSON object",
            "error reading OCI specification: ",
        ),
        (
            "env a string",
            env_obj(r#""NVIDIA_VISIBLE_DEVICES=all""#).into_bytes(),
            "process.env is not a list of strings",
            "process.env is not a list of strings",
        ),
        (
            "env entries not strings",
            env_obj("[1, true]").into_bytes(),
            "process.env is not a list of strings",
            "process.env is not a list of strings",
        ),
        (
            "env entry without =",
            env_obj(r#"["NVIDIA_VISIBLE_DEVICES=all","BROKEN"]"#).into_bytes(),
            "invalid environment variable \"BROKEN\"",
            "invalid environment variable \"BROKEN\"",
        ),
        (
            "mounts an object",
            GPU_SPEC
                .replace(r#""root""#, r#""mounts":{},"root""#)
                .into_bytes(),
            "mounts is not a list",
            "mounts is not a list",
        ),
        (
            "mounts of numbers",
            GPU_SPEC
                .replace(r#""root""#, r#""mounts":[5],"root""#)
                .into_bytes(),
            "mounts is not a list of objects",
            "mounts is not a list of objects",
        ),
        (
            "root.path a number",
            GPU_SPEC.replace(r#""rootfs""#, "5").into_bytes(),
            "root.path is not a string",
            "root.path is not a string",
        ),
        (
            "capabilities a list",
            GPU_SPEC
                .replace(r#""env""#, r#""capabilities":[1],"env""#)
                .into_bytes(),
            "process.capabilities is not an object",
            "process.capabilities is not an object",
        ),
        (
            "ociVersion a number",
            GPU_SPEC.replace(r#""1.0.2""#, "5").into_bytes(),
            "ociVersion is not a string",
            "ociVersion is not a string",
        ),
        (
            "huge and truncated",
            huge.into_bytes(),
            "could not decode OCI spec",
            "error reading OCI specification: ",
        ),
        (
            "raw non-UTF-8",
            GPU_SPEC
                .replace("=all", "=@")
                .bytes()
                .map(|b| if b == b'@' { 0xff } else { b })
                .collect(),
            "could not decode OCI spec",
            "error reading OCI specification: ",
        ),
        (
            "lone surrogate",
            GPU_SPEC.replace("=all", "=\\ud800").into_bytes(),
            "could not decode OCI spec",
            "error reading OCI specification: ",
        ),
    ];
    for (case, spec, hook_want, create_want) in &cases {
        let bundle = Bundle::new(&host, case, spec);
        assert_hook_refused(
            &host,
            &bundle,
            &bundle.state(NO_PID),
            hook_want,
            &format!("hook: {case}"),
        );
        assert_create_refused(&shim, &bundle, create_want, &format!("create: {case}"));
    }
    // §4.3: ociVersion, process and root must be present (the hook's minimal schema).
    for (case, spec, want) in [
        (
            "no root",
            r#"{"ociVersion":"1.0.2","process":{"env":["NVIDIA_VISIBLE_DEVICES=all"]}}"#,
            "root is empty in OCI spec",
        ),
        (
            "no version",
            r#"{"process":{"env":["NVIDIA_VISIBLE_DEVICES=all"]},"root":{"path":"rootfs"}}"#,
            "version is empty in OCI spec",
        ),
        (
            "process null",
            r#"{"ociVersion":"1.0.2","process":null,"root":{"path":"rootfs"}}"#,
            "process is empty in OCI spec",
        ),
    ] {
        let bundle = Bundle::new(&host, case, spec.as_bytes());
        assert_hook_refused(&host, &bundle, &bundle.state(NO_PID), want, case);
    }
}

/// A NUL byte decoded from JSON reaches a path or a device list: refused, and shown escaped so
/// the one line stays printable.
#[test]
fn nul_bytes_in_the_spec() {
    let host = Host::new("mal-nul");
    let shim = Shim::new(&host, "jit-cdi", "");
    let env_nul = GPU_SPEC.replace("=all", "=all\\u0000");
    let bundle = Bundle::new(&host, "env", env_nul.as_bytes());
    assert_hook_refused(
        &host,
        &bundle,
        &bundle.state(NO_PID),
        "device error: all\\u{0}: unknown device",
        "hook env NUL",
    );
    assert_create_refused(
        &shim,
        &bundle,
        "device error: all\\u{0}: unknown device",
        "create env NUL",
    );
    let root_nul = GPU_SPEC.replace(r#""rootfs""#, r#""root\u0000fs""#);
    let bundle = Bundle::new(&host, "root", root_nul.as_bytes());
    assert_hook_refused(
        &host,
        &bundle,
        &bundle.state(NO_PID),
        "unexpected NUL byte",
        "hook root.path NUL",
    );
}
