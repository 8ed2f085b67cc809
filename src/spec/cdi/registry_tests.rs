use std::fs;
use std::path::PathBuf;

use super::*;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nvbox-cdi-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// A spec of kind `kind` whose devices each set `MARK=<marker>` plus their own name.
fn spec_text(kind: &str, devices: &[&str], marker: &str) -> String {
    let mut text = format!(
        "cdiVersion: 0.5.0\nkind: {kind}\ncontainerEdits:\n  env: [SPEC={marker}]\ndevices:\n"
    );
    for dev in devices {
        text += &format!(
            "  - name: \"{dev}\"\n    containerEdits:\n      env: [MARK={marker}, DEV={dev}]\n"
        );
    }
    text
}

fn write(dir: &PathBuf, file: &str, text: &str) {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join(file), text).unwrap();
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn missing_dirs_are_empty() {
    let root = scratch("missing");
    let reg = load_registry(&[root.join("etc/cdi"), root.join("run/cdi")]).unwrap();
    assert!(reg.device_names().is_empty());
    assert!(reg.errors().is_empty());
    let err = reg.resolve(&names(&["nvidia.com/gpu=0"])).unwrap_err();
    assert_eq!(err.to_string(), "unresolvable CDI devices nvidia.com/gpu=0");
}

#[test]
fn later_dir_wins() {
    let root = scratch("priority");
    let (etc, run) = (root.join("etc/cdi"), root.join("var/run/cdi"));
    write(
        &etc,
        "nvidia.yaml",
        &spec_text("nvidia.com/gpu", &["0", "1"], "etc"),
    );
    write(
        &run,
        "nvidia.json",
        &spec_text("nvidia.com/gpu", &["0"], "run"),
    );
    let reg = load_registry(&[etc.clone(), run.clone()]).unwrap();
    assert!(reg.errors().is_empty(), "{:?}", reg.errors());
    assert_eq!(
        reg.device_names(),
        names(&["nvidia.com/gpu=0", "nvidia.com/gpu=1"])
    );
    let edits = reg.resolve(&names(&["nvidia.com/gpu=0"])).unwrap();
    assert_eq!(edits.len(), 2);
    assert_eq!(edits[0].env, ["SPEC=run"]);
    assert_eq!(edits[1].env, ["MARK=run", "DEV=0"]);
    // The same order reversed: /etc/cdi given last now wins.
    let reg = load_registry(&[run, etc]).unwrap();
    assert_eq!(
        reg.resolve(&names(&["nvidia.com/gpu=0"])).unwrap()[1].env,
        ["MARK=etc", "DEV=0"]
    );
}

#[test]
fn same_dir_conflict_drops_the_device() {
    let root = scratch("conflict");
    let etc = root.join("etc/cdi");
    write(
        &etc,
        "nvidia.json",
        &spec_text("nvidia.com/gpu", &["0", "1"], "json"),
    );
    write(
        &etc,
        "nvidia.yaml",
        &spec_text("nvidia.com/gpu", &["0", "2"], "yaml"),
    );
    let reg = load_registry(std::slice::from_ref(&etc)).unwrap();
    assert_eq!(
        reg.device_names(),
        names(&["nvidia.com/gpu=1", "nvidia.com/gpu=2"])
    );
    let paths: Vec<_> = reg.errors().iter().map(|e| e.path.clone()).collect();
    assert_eq!(paths, [etc.join("nvidia.yaml"), etc.join("nvidia.json")]);
    let message = &reg.errors()[0].message;
    assert!(
        message.starts_with("conflicting device \"nvidia.com/gpu=0\" (specs "),
        "{message}"
    );
    let err = reg
        .resolve(&names(&[
            "nvidia.com/gpu=1",
            "nvidia.com/gpu=0",
            "nvidia.com/gpu=7",
        ]))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "unresolvable CDI devices nvidia.com/gpu=0, nvidia.com/gpu=7"
    );
}

#[test]
fn higher_dir_overrides_a_lower_conflict() {
    let root = scratch("conflict-override");
    let (etc, run) = (root.join("etc"), root.join("run"));
    write(&etc, "a.yaml", &spec_text("v.com/c", &["d"], "a"));
    write(&etc, "b.yaml", &spec_text("v.com/c", &["d"], "b"));
    write(&run, "c.yaml", &spec_text("v.com/c", &["d"], "c"));
    let reg = load_registry(&[etc, run]).unwrap();
    assert_eq!(reg.errors().len(), 2, "the conflict is still reported");
    assert_eq!(
        reg.resolve(&names(&["v.com/c=d"])).unwrap()[1].env,
        ["MARK=c", "DEV=d"]
    );
}

#[test]
fn bad_spec_does_not_hide_the_others() {
    let root = scratch("bad");
    let etc = root.join("etc/cdi");
    write(&etc, "amd.json", &spec_text("amd.com/gpu", &["0"], "amd"));
    write(
        &etc,
        "broken.yaml",
        "cdiVersion: 0.5.0\nkind: nvidia.com/gpu\ndevices: [",
    );
    write(
        &etc,
        "old.yaml",
        &spec_text("nvidia.com/gpu", &["0"], "old").replace("0.5.0", "0.4.0"),
    );
    write(&etc, "ignored.yml", "not a spec");
    write(&etc, "ignored.txt", "not a spec");
    write(
        &etc.join("sub.yaml"),
        "nested.yaml",
        &spec_text("sub.com/gpu", &["0"], "sub"),
    );
    let reg = load_registry(std::slice::from_ref(&etc)).unwrap();
    assert_eq!(reg.device_names(), names(&["amd.com/gpu=0"]));
    assert_eq!(reg.specs().len(), 1);
    let errors: Vec<_> = reg
        .errors()
        .iter()
        .map(|e| (e.path.file_name().unwrap().to_owned(), e.message.clone()))
        .collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert_eq!(errors[0].0, "broken.yaml");
    assert!(
        errors[0]
            .1
            .starts_with("failed to load CDI Spec failed to parse CDI Spec"),
        "{}",
        errors[0].1
    );
    assert_eq!(errors[1].0, "old.yaml");
    assert!(
        errors[1]
            .1
            .ends_with("the spec version must be at least v0.5.0"),
        "{}",
        errors[1].1
    );
}

#[test]
fn spec_edits_apply_once_per_spec() {
    let root = scratch("resolve");
    let etc = root.join("etc/cdi");
    write(
        &etc,
        "nvidia.yaml",
        &spec_text("nvidia.com/gpu", &["0", "1", "all"], "nv"),
    );
    write(
        &etc,
        "mig.yaml",
        &spec_text("nvidia.com/mig", &["0:0"], "mig"),
    );
    let reg = load_registry(&[etc]).unwrap();
    let edits = reg
        .resolve(&names(&[
            "nvidia.com/gpu=1",
            "nvidia.com/mig=0:0",
            "nvidia.com/gpu=0",
        ]))
        .unwrap();
    let envs: Vec<_> = edits.iter().map(|e| e.env.join(" ")).collect();
    assert_eq!(
        envs,
        [
            "SPEC=nv",
            "MARK=nv DEV=1",
            "SPEC=mig",
            "MARK=mig DEV=0:0",
            "MARK=nv DEV=0"
        ]
    );
}
