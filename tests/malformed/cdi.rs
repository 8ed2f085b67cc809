//! Broken CDI specs (for `nvidia-ctk cdi list` and the runtime in cdi mode) and broken engine
//! configs for `nvidia-ctk runtime configure`, which must leave them byte-identical.

use super::*;

const GOOD: &str = "cdiVersion: \"0.6.0\"\nkind: nvidia.com/gpu\ndevices:\n- name: \"0\"\n  containerEdits:\n    deviceNodes:\n    - path: /dev/null\n";

fn spec_with(name: &str) -> String {
    format!(
        "cdiVersion: \"0.6.0\"\nkind: nvidia.com/gpu\ndevices:\n- name: \"{name}\"\n  containerEdits:\n    deviceNodes:\n    - path: /dev/zero\n"
    )
}

/// (case, file name, content, the devices `cdi list` still finds).
fn broken_specs() -> Vec<(&'static str, &'static str, String, &'static str)> {
    vec![
        (
            "broken YAML",
            "bad.yaml",
            "cdiVersion: [".into(),
            "nvidia.com/gpu=0\n",
        ),
        (
            "broken JSON",
            "bad.json",
            "{\"cdiVersion\":".into(),
            "nvidia.com/gpu=0\n",
        ),
        ("empty", "bad.yaml", String::new(), "nvidia.com/gpu=0\n"),
        (
            "bad version",
            "bad.yaml",
            spec_with("1").replace("0.6.0", "9.9.9"),
            "nvidia.com/gpu=0\n",
        ),
        (
            "bad kind",
            "bad.yaml",
            spec_with("1").replace("nvidia.com/gpu", "bad kind"),
            "nvidia.com/gpu=0\n",
        ),
        (
            "bad device name",
            "bad.yaml",
            spec_with("a b/c"),
            "nvidia.com/gpu=0\n",
        ),
        (
            "wrong types",
            "bad.yaml",
            "cdiVersion: 5\nkind: [1]\ndevices: x\n".into(),
            "nvidia.com/gpu=0\n",
        ),
        (
            "duplicate in one file",
            "bad.yaml",
            format!(
                "{}{}",
                spec_with("1"),
                "- name: \"1\"\n  containerEdits:\n    deviceNodes:\n    - path: /dev/zero\n"
            ),
            "nvidia.com/gpu=0\n",
        ),
        // Two files of one directory defining a name: a conflict, the device is dropped.
        ("duplicate across files", "bad.yaml", spec_with("0"), ""),
        (
            "huge",
            "bad.yaml",
            format!("{}# {}\n- name: [", spec_with("1"), "p".repeat(10 << 20)),
            "nvidia.com/gpu=0\n",
        ),
    ]
}

/// Toolkit §7.5: `cdi list` warns per spec error and lists what loaded; exit 0.
#[test]
fn cdi_list_warns_and_lists_the_rest() {
    let host = Host::new("mal-cdi-list");
    for (case, file, content, want) in broken_specs() {
        let dir = host.dir.path().join("cdi");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("good.yaml"), GOOD).unwrap();
        std::fs::write(dir.join(file), &content).unwrap();
        let before = tree(&dir);
        let out = host.run(
            "nvidia-ctk",
            &["cdi", "list", "--spec-dir", dir.to_str().unwrap()],
        );
        let err = stderr(&out);
        assert!(out.status.success(), "{case}: {err}");
        assert_eq!(stdout(&out), want, "{case}");
        assert!(
            err.contains(&format!("level=warning msg=\"{}", dir.join(file).display())),
            "{case}: {err}"
        );
        assert_no_panic(&err, case);
        assert_eq!(tree(&dir), before, "{case}: specs changed");
    }
}

/// Toolkit §2.5: in cdi mode a broken sibling spec does not stop a device that resolves; a
/// device that does not resolve fails `create` with the spec errors on the same line.
#[test]
fn the_runtime_in_cdi_mode() {
    let host = Host::new("mal-cdi-rt");
    let dir = host.dir.path().join("cdi");
    let shim = Shim::new(
        &host,
        "cdi",
        &format!(
            "[nvidia-container-runtime.modes.cdi]\nspec-dirs = [\"{}\"]\n",
            dir.display()
        ),
    );
    for (case, file, content, listed) in broken_specs() {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("good.yaml"), GOOD).unwrap();
        std::fs::write(dir.join(file), &content).unwrap();
        let bundle = Bundle::with_env(
            &host,
            "b",
            &["NVIDIA_VISIBLE_DEVICES=nvidia.com/gpu=0"],
            false,
        );
        if listed.is_empty() {
            let want = "unresolvable CDI devices nvidia.com/gpu=0 (spec errors: ";
            assert_create_refused(&shim, &bundle, want, case);
            let out = shim.create(&bundle);
            assert!(
                stderr(&out).contains("conflicting device \"nvidia.com/gpu=0\""),
                "{case}: {}",
                stderr(&out)
            );
        } else {
            let out = shim.create(&bundle);
            assert!(out.status.success(), "{case}: {}", stderr(&out));
            assert!(shim.ran(), "{case}");
        }
        std::fs::remove_dir_all(&bundle.dir).unwrap();
        let bundle = Bundle::with_env(
            &host,
            "b",
            &["NVIDIA_VISIBLE_DEVICES=nvidia.com/gpu=1"],
            false,
        );
        let want = if listed.is_empty() {
            "failed to inject CDI devices: unresolvable CDI devices nvidia.com/gpu=1 (spec errors: "
                .to_string()
        } else {
            // The broken file is the first (and only) error.
            format!(
                "failed to inject CDI devices: unresolvable CDI devices nvidia.com/gpu=1 (spec errors: {}: ",
                dir.join(file).display()
            )
        };
        assert_create_refused(&shim, &bundle, &want, case);
        std::fs::remove_dir_all(&bundle.dir).unwrap();
    }
}

/// Broken engine configs: refused, the file byte-identical, no drop-in written (§6.2–6.4).
#[test]
fn runtime_configure_leaves_broken_engine_configs_alone() {
    let host = Host::new("mal-engines");
    let cases: &[(&str, &str, &[u8], &str)] = &[
        ("docker", "daemon.json", b"{\"runtimes\":", "unable to parse config"),
        ("docker", "daemon.json", b"[]", "not a JSON object"),
        ("docker", "daemon.json", b"{\"runtimes\":[]}", "runtimes is not an object"),
        ("docker", "daemon.json", b"{\"a\":\"\xff\"}", "daemon.json"),
        ("docker", "daemon.json", b"{\"a\":1}\0", "unable to parse config"),
        ("containerd", "config.toml", b"[plugins", "unable to parse containerd config"),
        ("containerd", "config.toml", b"version = \"two\"", "unsupported config version"),
        ("containerd", "config.toml", b"version = -1", "unsupported config version: -1"),
        ("containerd", "config.toml", b"version = 2\nimports = 5\n", "imports is not a list of strings"),
        ("containerd", "config.toml", b"version = 2\nimports = [5]\n", "imports is not a list of strings"),
        ("containerd", "config.toml", b"version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd]\nruntimes = 5\n", "runtimes is not a table"),
        ("containerd", "config.toml", b"version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\noptions = 5\n", "options is not a table"),
        ("crio", "crio.conf", b"[crio", "unable to parse crio config"),
        ("crio", "crio.conf", b"[crio]\n\xff = 1\n", "crio.conf"),
    ];
    for (i, (engine, name, bytes, want)) in cases.iter().enumerate() {
        let case = format!("{engine} #{i}: {want}");
        let dir = host.dir.path().join(format!("engine{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join(name);
        std::fs::write(&config, bytes).unwrap();
        let drop_in = dir.join("conf.d/99-nvidia.toml");
        let mut args = vec![
            "runtime".to_string(),
            "configure".into(),
            format!("--runtime={engine}"),
            format!("--config={}", config.display()),
        ];
        if *engine != "docker" {
            args.push(format!("--drop-in-config={}", drop_in.display()));
        }
        let before = tree(&dir);
        for extra in [None, Some("--dry-run")] {
            let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
            all.extend(extra);
            let out = host.run("nvidia-ctk", &all);
            assert_refused("nvidia-ctk", &out, want, &case);
            assert!(out.stdout.is_empty(), "{case}: printed {}", stdout(&out));
            assert_eq!(tree(&dir), before, "{case}: files changed");
        }
    }
}
