use super::*;

fn parse(text: &str) -> Table {
    toml_doc::parse(text, "test").unwrap()
}

const V2: &str = r#"version = 2
[plugins."io.containerd.grpc.v1.cri".containerd]
  default_runtime_name = "crun"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.crun]
    runtime_type = ""
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.crun.options]
      BinaryName = "/usr/bin/crun"
      SystemdCgroup = true
"#;

#[test]
fn version_rules() {
    assert_eq!(version_of(&Table::new()).unwrap(), 2);
    assert_eq!(version_of(&parse("root = \"/x\"")).unwrap(), 1);
    assert_eq!(version_of(&parse("version = 3")).unwrap(), 3);
    assert!(version_of(&parse("version = \"2\"")).is_err());
}

#[test]
fn plugin_names_per_version() {
    assert_eq!(cri_path(1), ["plugins", "cri"]);
    assert_eq!(cri_path(2), ["plugins", "io.containerd.grpc.v1.cri"]);
    assert_eq!(cri_path(3), ["plugins", "io.containerd.cri.v1.runtime"]);
}

#[test]
fn options_come_from_the_default_runtime_and_empty_type_is_replaced() {
    let mut cfg = parse(V2);
    add_runtime(
        &mut cfg,
        2,
        "nvidia",
        "/usr/bin/nvidia-container-runtime",
        false,
    )
    .unwrap();
    let n = get_table(&cfg, &path_under(2, &["containerd", "runtimes", "nvidia"])).unwrap();
    assert_eq!(n["runtime_type"].as_str(), Some(RUNC_V2));
    assert_eq!(n["options"]["SystemdCgroup"].as_bool(), Some(true));
    assert_eq!(
        n["options"]["BinaryName"].as_str(),
        Some("/usr/bin/nvidia-container-runtime")
    );
    assert!(n["options"].get("Runtime").is_none());
}

#[test]
fn runc_then_crun_then_defaults() {
    let mut cfg = parse(&V2.replace(
        "default_runtime_name = \"crun\"",
        "default_runtime_name = \"nvidia-old\"",
    ));
    add_runtime(&mut cfg, 2, "nvidia", "/n", false).unwrap();
    let n = get(
        &cfg,
        &path_under(2, &["containerd", "runtimes", "nvidia", "options"]),
    )
    .unwrap();
    assert_eq!(n["SystemdCgroup"].as_bool(), Some(false), "runc's options");
    let mut empty = Table::new();
    add_runtime(&mut empty, 3, "nvidia", "/n", true).unwrap();
    assert_eq!(
        toml_doc::render(&empty),
        r#"version = 3

[plugins]

  [plugins."io.containerd.cri.v1.runtime"]

    [plugins."io.containerd.cri.v1.runtime".containerd]
      default_runtime_name = "nvidia"

      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes]

        [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.nvidia]
          privileged_without_host_devices = false
          runtime_engine = ""
          runtime_root = ""
          runtime_type = "io.containerd.runc.v2"

          [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.nvidia.options]
            BinaryName = "/n"
"#
    );
}

#[test]
fn v1_sets_runtime_option_and_cdi_under_containerd() {
    let mut cfg = parse("[plugins.cri.containerd]\nsnapshotter = \"overlayfs\"\n");
    add_runtime(&mut cfg, 1, "nvidia", "/n", false).unwrap();
    enable_cdi(&mut cfg, 1).unwrap();
    let c = get_table(&cfg, &["plugins", "cri", "containerd"]).unwrap();
    assert_eq!(
        c["runtimes"]["nvidia"]["options"]["Runtime"].as_str(),
        Some("/n")
    );
    assert_eq!(c["enable_cdi"].as_bool(), Some(true));
    assert_eq!(c["snapshotter"].as_str(), Some("overlayfs"));
    assert_eq!(cfg["version"].as_integer(), Some(1));
}

#[test]
fn default_is_cleared_unless_asked_and_remove_undoes() {
    let mut cfg = parse(V2);
    add_runtime(&mut cfg, 2, "nvidia", "/n", true).unwrap();
    add_runtime(&mut cfg, 2, "nvidia", "/n", false).unwrap();
    let dflt = path_under(2, &["containerd", "default_runtime_name"]);
    assert!(get(&cfg, &dflt).is_none());
    add_runtime(&mut cfg, 2, "nvidia", "/n", true).unwrap();
    assert!(remove_runtime(&mut cfg, 2, "nvidia"));
    assert!(get(&cfg, &dflt).is_none());
    assert!(get(&cfg, &path_under(2, &["containerd", "runtimes", "nvidia"])).is_none());
    assert!(get(&cfg, &path_under(2, &["containerd", "runtimes", "runc"])).is_some());
    assert!(!remove_runtime(&mut cfg, 2, "nvidia"));
}

#[test]
fn drop_in_copies_the_whole_cri_table_only() {
    let src = parse(&format!(
        "root = \"/var/lib/c\"\n{V2}[plugins.other]\nx = 1\n"
    ));
    let d = drop_in_base(&src, 2);
    assert_eq!(d["version"].as_integer(), Some(2));
    assert!(d.get("root").is_none());
    assert!(d["plugins"].get("other").is_none());
    assert_eq!(
        d["plugins"]["io.containerd.grpc.v1.cri"],
        src["plugins"]["io.containerd.grpc.v1.cri"]
    );
}

#[test]
fn import_entry_glob_or_file() {
    let top = Path::new("/etc/containerd/config.toml");
    assert_eq!(
        import_entry(top, Path::new("/etc/containerd/conf.d/99-nvidia.toml")),
        "/etc/containerd/conf.d/*.toml"
    );
    assert_eq!(
        import_entry(top, Path::new("/etc/containerd/99-nvidia.toml")),
        "/etc/containerd/99-nvidia.toml"
    );
    assert_eq!(
        import_entry(top, Path::new("/etc/containerd/conf.d/nvidia.conf")),
        "/etc/containerd/conf.d/nvidia.conf"
    );
}

#[test]
fn imports_appended_not_duplicated_and_comments_kept() {
    let text = "# managed by hand\nversion = 2 # two\nimports = [\"/a/*.toml\"]\n\n# the CRI plugin\n[plugins.x]\n  y = 1 # why\n";
    let (once, kept) = add_import(text, "/etc/containerd/conf.d/*.toml", 2).unwrap();
    assert!(kept);
    assert_eq!(
        once,
        text.replace(
            "imports = [\"/a/*.toml\"]",
            "imports = [\"/a/*.toml\", \"/etc/containerd/conf.d/*.toml\"]"
        )
    );
    let (twice, _) = add_import(&once, "/etc/containerd/conf.d/*.toml", 2).unwrap();
    assert_eq!(twice, once);
    let (back, kept) = remove_import(&once, "/etc/containerd/conf.d/*.toml").unwrap();
    assert!(kept);
    assert_eq!(back, text);
}

#[test]
fn import_added_after_version_or_into_an_empty_file() {
    let text = "# c\nversion = 2\n\n[plugins.x]\ny = 1\n";
    let (out, kept) = add_import(text, "/d/*.toml", 2).unwrap();
    assert!(kept);
    assert_eq!(
        out,
        "# c\nversion = 2\nimports = [\"/d/*.toml\"]\n\n[plugins.x]\ny = 1\n"
    );
    let (out, _) = add_import("", "/d/*.toml", 2).unwrap();
    assert_eq!(out, "version = 2\nimports = [\"/d/*.toml\"]\n");
    let (out, _) = remove_import(&out, "/d/*.toml").unwrap();
    assert_eq!(out, "version = 2\n");
}

#[test]
fn multi_line_imports_are_replaced_whole() {
    let text = "version = 2\nimports = [\n  \"/a.toml\", # first\n  \"/b.toml\",\n]\n[x]\n";
    let (out, kept) = add_import(text, "/c/*.toml", 2).unwrap();
    assert!(kept);
    assert_eq!(
        out,
        "version = 2\nimports = [\"/a.toml\", \"/b.toml\", \"/c/*.toml\"]\n[x]\n"
    );
}
