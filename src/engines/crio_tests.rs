use super::*;
use crate::engines::toml_doc::{parse, render};

const CRIO_CONF: &str = r#"# crio.conf
[crio]
log_dir = "/var/log/crio/pods"
[crio.runtime]
default_runtime = "crun"
[crio.runtime.runtimes.crun]
runtime_path = "/usr/bin/crun"
runtime_root = "/run/crun"
monitor_path = "/usr/libexec/crio/conmon"
allowed_annotations = ["io.containers.trace-syscall"]
[crio.runtime.runtimes.runc]
runtime_path = "/usr/sbin/runc"
runtime_root = "/run/runc"
"#;

#[test]
fn drop_in_inherits_the_default_runtime() {
    let src = parse(CRIO_CONF, "t").unwrap();
    let mut d = Table::new();
    add_runtime(
        &mut d,
        &src,
        "nvidia",
        "/usr/bin/nvidia-container-runtime",
        true,
    )
    .unwrap();
    assert_eq!(
        render(&d),
        r#"[crio]

  [crio.runtime]
    default_runtime = "nvidia"

    [crio.runtime.runtimes]

      [crio.runtime.runtimes.nvidia]
        allowed_annotations = ["io.containers.trace-syscall"]
        monitor_path = "/usr/libexec/crio/conmon"
        runtime_path = "/usr/bin/nvidia-container-runtime"
        runtime_root = "/run/crun"
        runtime_type = "oci"
"#
    );
}

#[test]
fn nvidia_default_falls_back_to_runc_and_keeps_drop_in_keys() {
    let src = parse(
        &CRIO_CONF.replace(
            "\"crun\"\n[crio.runtime.runtimes.crun]",
            "\"nvidia\"\n[crio.runtime.runtimes.crun]",
        ),
        "t",
    )
    .unwrap();
    let mut d = parse(
        "[crio.runtime]\ndefault_runtime = \"nvidia\"\nmine = 1\n",
        "t",
    )
    .unwrap();
    add_runtime(&mut d, &src, "nvidia", "/n", false).unwrap();
    let n = &d["crio"]["runtime"]["runtimes"]["nvidia"];
    assert_eq!(n["runtime_root"].as_str(), Some("/run/runc"));
    assert!(d["crio"]["runtime"].get("default_runtime").is_none());
    assert_eq!(d["crio"]["runtime"]["mine"].as_integer(), Some(1));
    assert!(remove_runtime(&mut d, "nvidia"));
    assert_eq!(render(&d), "[crio]\n\n  [crio.runtime]\n    mine = 1\n");
}

#[test]
fn nothing_to_inherit_gives_path_and_type_only() {
    let mut d = Table::new();
    add_runtime(&mut d, &Table::new(), "nvidia", "/n", false).unwrap();
    assert!(remove_runtime(&mut d, "nvidia"));
    assert!(d.is_empty(), "{d:?}");
}
