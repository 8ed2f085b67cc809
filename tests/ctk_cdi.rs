//! `nvidia-ctk cdi generate | list | transform root` on mock hosts, and generated specs used by
//! real Podman (reference nvidia-container-toolkit.md §7, §10 case 12).

mod common;
#[path = "ctk_cdi/graphics.rs"]
mod graphics;

use std::path::Path;
use std::process::Output;

use common::container::{BUSYBOX, applet_dir, have_prerequisites, make_rootfs, shared_host, text};
use common::podman_cdi::{CdiPodman, PODMAN};
use common::{TempDir, command, is_root, nvbox, skip_or_fail};
use serde_json::Value;

const HOOK: &str = "/usr/bin/nvidia-cdi-hook";

fn ctk(config: &Path, args: &[&str]) -> Output {
    command(nvbox())
        .env("NVIDIA_CTK_CONFIG_FILE_PATH", config)
        .arg("nvidia-ctk")
        .args(args)
        .output()
        .unwrap()
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "failed: {}", text(&o.stderr));
    text(&o.stdout)
}

/// A spec for a mock host; the host's directory becomes `R` so goldens do not depend on it.
fn generate(mock: &[&str], args: &[&str]) -> String {
    let host = shared_host(mock);
    let mut all = vec!["cdi", "generate", "--nvidia-cdi-hook-path", HOOK];
    all.extend_from_slice(args);
    ok(&ctk(&host.config, &all)).replace(host.root.to_str().unwrap(), "R")
}

fn golden(name: &str, got: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/cdi")
        .join(name);
    if std::env::var_os("NVBOX_BLESS").is_some() {
        std::fs::write(&path, got).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(got, want, "spec differs from {}", path.display());
}

/// Mock device nodes (and so every device entry) need root.
fn rooted() -> bool {
    if !is_root() {
        skip_or_fail("mock device nodes need root");
        return false;
    }
    true
}

#[test]
fn one_gpu_default_yaml_and_json() {
    if !rooted() {
        return;
    }
    let yaml = generate(&["--gpus", "1"], &[]);
    assert!(yaml.starts_with("---\ncdiVersion: 0.5.0\nkind: nvidia.com/gpu\n"));
    golden("1gpu-default.yaml", &yaml);
    let json = generate(&["--gpus", "1"], &["--format", "json"]);
    golden("1gpu-default.json", &json);
    // The same spec in both encodings.
    let a: Value = serde_yaml_ng::from_str(&yaml).unwrap();
    let b: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(a, b);
}

#[test]
fn eight_gpus_each_strategy() {
    if !rooted() {
        return;
    }
    for s in ["index", "uuid", "type-index"] {
        let spec = generate(
            &["--gpus", "8"],
            &["--device-name-strategy", s, "--format=json"],
        );
        golden(&format!("8gpu-{s}.json"), &spec);
    }
}

#[test]
fn mig_devices_by_index_and_type_index() {
    if !rooted() {
        return;
    }
    let spec = generate(
        &["--gpus", "2", "--mig", "2"],
        &[
            "--device-name-strategy=index",
            "--device-name-strategy=type-index",
        ],
    );
    golden("2gpu-mig2.yaml", &spec);
}

#[test]
fn unknown_device_id_is_an_error() {
    let host = shared_host(&["--gpus", "2"]);
    let out = ctk(&host.config, &["cdi", "generate", "--device-id", "0,7"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("7: unknown device"),
        "{}",
        text(&out.stderr)
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn disabled_hooks() {
    if !rooted() {
        return;
    }
    let spec = generate(
        &["--gpus", "8"],
        &[
            "--disable-hook",
            "enable-cuda-compat",
            "--disable-hook=update-ldcache",
            "--device-id",
            "1,3",
            "--no-all-device",
        ],
    );
    assert!(!spec.contains("enable-cuda-compat") && !spec.contains("update-ldcache"));
    golden("8gpu-ids-1-3-no-hooks.yaml", &spec);
    let none = generate(&["--gpus", "8"], &["--disable-hook", "all"]);
    assert!(!none.contains("hookName"));
}

#[test]
fn management_mode() {
    if !rooted() {
        return;
    }
    let spec = generate(
        &["--gpus", "2"],
        &["--mode", "management", "--enable-hook", "chmod"],
    );
    assert!(spec.contains("kind: management.nvidia.com/gpu"));
    assert!(!spec.contains("disable-device-node-modification"));
    golden("2gpu-management.yaml", &spec);
}

#[test]
fn output_file_is_validated_and_listed() {
    if !rooted() {
        return;
    }
    let host = shared_host(&["--gpus", "8"]);
    let dir = TempDir::new("cdi-out");
    let out = dir.path().join("nvidia");
    ok(&ctk(
        &host.config,
        &[
            "cdi",
            "generate",
            "--output",
            out.to_str().unwrap(),
            "--format",
            "json",
        ],
    ));
    let file = dir.path().join("nvidia.json");
    let meta = std::fs::metadata(&file).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(meta.permissions().mode() & 0o777, 0o644);
    // No temp file is left behind.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    let listed = ctk(
        &host.config,
        &["cdi", "list", "--spec-dir", dir.path().to_str().unwrap()],
    );
    let names = ok(&listed);
    assert!(
        text(&listed.stderr).contains("Found 17 CDI devices"),
        "{}",
        text(&listed.stderr)
    );
    let mut want: Vec<String> = (0..8).map(|i| format!("nvidia.com/gpu={i}")).collect();
    want.extend(
        host.gpus()
            .iter()
            .map(|g| format!("nvidia.com/gpu={}", g.uuid)),
    );
    want.push("nvidia.com/gpu=all".to_owned());
    want.sort();
    assert_eq!(names.lines().collect::<Vec<_>>(), want);
}

#[test]
fn list_follows_priorities_and_conflicts() {
    let dir = TempDir::new("cdi-list");
    let (low, high) = (dir.path().join("etc"), dir.path().join("run"));
    std::fs::create_dir_all(&low).unwrap();
    std::fs::create_dir_all(&high).unwrap();
    let spec = |devs: &[&str]| {
        let devices: Vec<String> = devs
            .iter()
            .map(|d| format!(r#"{{"name":"{d}","containerEdits":{{"env":["D={d}"]}}}}"#))
            .collect();
        format!(
            r#"{{"cdiVersion":"0.5.0","kind":"example.com/dev","devices":[{}]}}"#,
            devices.join(",")
        )
    };
    std::fs::write(low.join("a.json"), spec(&["x", "y", "z"])).unwrap();
    // Same priority: y conflicts and disappears.
    std::fs::write(low.join("b.json"), spec(&["y"])).unwrap();
    // Higher priority: x overrides, z's conflict-free definition stays.
    std::fs::write(high.join("c.json"), spec(&["x", "w"])).unwrap();
    std::fs::write(high.join("broken.yaml"), "cdiVersion: [").unwrap();
    let dirs = format!("{},{}", low.display(), high.display());
    let out = command(nvbox())
        .env("NVIDIA_CTK_CDI_SPEC_DIRS", &dirs)
        .args(["nvidia-ctk", "cdi", "list"])
        .output()
        .unwrap();
    assert_eq!(
        ok(&out),
        "example.com/dev=w\nexample.com/dev=x\nexample.com/dev=z\n"
    );
    let err = text(&out.stderr);
    assert!(
        err.contains("conflicting device \\\"example.com/dev=y\\\""),
        "{err}"
    );
    assert!(err.contains("broken.yaml"), "{err}");
    assert!(err.contains("Found 3 CDI devices"), "{err}");
    let quiet = command(nvbox())
        .env("NVIDIA_CTK_CDI_SPEC_DIRS", &dirs)
        .args(["nvidia-ctk", "--quiet", "cdi", "list"])
        .output()
        .unwrap();
    assert!(quiet.stderr.is_empty());
}

#[test]
fn transform_root_on_host_and_container_side() {
    if !rooted() {
        return;
    }
    let host = shared_host(&["--gpus", "1"]);
    let dir = TempDir::new("cdi-transform");
    let input = dir.path().join("in.json");
    ok(&ctk(
        &host.config,
        &["cdi", "generate", "--output", input.to_str().unwrap()],
    ));
    let root = host.root.to_str().unwrap();
    let moved = ok(&ctk(
        &host.config,
        &[
            "cdi",
            "transform",
            "root",
            "--from",
            root,
            "--to",
            "/host",
            "--input",
            input.to_str().unwrap(),
        ],
    ));
    let v: Value = serde_json::from_str(&moved).unwrap();
    let mounts = v["containerEdits"]["mounts"].as_array().unwrap();
    for m in mounts {
        let hp = m["hostPath"].as_str().unwrap();
        let cp = m["containerPath"].as_str().unwrap();
        assert_eq!(hp, format!("/host{cp}"));
    }
    let node = &v["devices"][0]["containerEdits"]["deviceNodes"][0];
    assert_eq!(node["hostPath"], "/host/dev/nvidia0");
    let c = ok(&ctk(
        &host.config,
        &[
            "cdi",
            "transform",
            "root",
            "--relative-to",
            "container",
            "--from",
            "/usr/lib/x86_64-linux-gnu",
            "--to",
            "/usr/lib64",
            "--input",
            input.to_str().unwrap(),
        ],
    ));
    let v: Value = serde_json::from_str(&c).unwrap();
    let edits = &v["containerEdits"];
    assert!(edits["mounts"].as_array().unwrap().iter().any(|m| {
        m["containerPath"] == "/usr/lib64/libcuda.so.535.104.05"
            && m["hostPath"]
                .as_str()
                .unwrap()
                .ends_with("/usr/lib/x86_64-linux-gnu/libcuda.so.535.104.05")
    }));
    let hooks = edits["hooks"].as_array().unwrap();
    assert!(hooks.iter().any(|h| {
        h["args"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "/usr/lib64")
    }));
    assert!(hooks.iter().any(|h| {
        h["args"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "libcuda.so.1::/usr/lib64/libcuda.so")
    }));
}

#[test]
fn podman_runs_generated_spec() {
    if !have_prerequisites(&[PODMAN, BUSYBOX, "/usr/bin/unshare", "/usr/bin/conmon"]) {
        return;
    }
    let host = shared_host(&["--gpus", "2"]);
    let gpus = host.gpus();
    let hook = applet_dir().join("nvidia-cdi-hook");
    let spec_dir = TempDir::new("podman-cdi");
    let spec_file = spec_dir.path().join("nvidia.yaml");
    ok(&ctk(
        &host.config,
        &[
            "cdi",
            "generate",
            "--nvidia-cdi-hook-path",
            hook.to_str().unwrap(),
            "--output",
            spec_file.to_str().unwrap(),
        ],
    ));
    let podman = CdiPodman::new();
    let rootfs = TempDir::new("podman-rootfs");
    make_rootfs(rootfs.path(), true);
    podman.import(rootfs.path(), "nvbox-cdi");
    let script = "stat -c '%n %t:%T' /dev/nvidia* | sort; \
        readlink /usr/lib/x86_64-linux-gnu/libcuda.so; readlink /usr/lib/x86_64-linux-gnu/libcuda.so.1; \
        test -f /usr/lib/x86_64-linux-gnu/libcuda.so.535.104.05 && echo lib-present; \
        echo CACHE=$(grep -c libcuda.so.1 /etc/ld.so.cache); \
        cat /etc/nvidia/nvidia-application-profiles-rc.d/10-container.conf; \
        echo ENV; env | sort";
    for (device, minors) in [
        ("nvidia.com/gpu=all", vec![gpus[0].minor, gpus[1].minor]),
        ("nvidia.com/gpu=1", vec![gpus[1].minor]),
        (
            &*format!("nvidia.com/gpu={}", gpus[0].uuid),
            vec![gpus[0].minor],
        ),
    ] {
        let out = podman.run(spec_dir.path(), device, "nvbox-cdi", script);
        let stdout = text(&out.stdout);
        assert!(
            out.status.success(),
            "{device}: {}\n{stdout}",
            text(&out.stderr)
        );
        let (devs, env) = stdout.split_once("ENV\n").unwrap();
        for m in &minors {
            let (maj, min) = host.rdev(&format!("/dev/nvidia{m}"));
            assert!(
                devs.contains(&format!("/dev/nvidia{m} {maj:x}:{min:x}")),
                "{device}: {devs}"
            );
        }
        let gpu_nodes = devs
            .lines()
            .filter(|l| {
                l.strip_prefix("/dev/nvidia")
                    .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()))
            })
            .count();
        assert_eq!(gpu_nodes, minors.len(), "{device}: {devs}");
        for ctl in ["/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools"] {
            let (maj, min) = host.rdev(ctl);
            assert!(
                devs.contains(&format!("{ctl} {maj:x}:{min:x}")),
                "{device}: {devs}"
            );
        }
        // create-symlinks, update-ldcache and update-application-profile ran.
        assert!(
            devs.contains("libcuda.so.1\nlibcuda.so.535.104.05\nlib-present\n"),
            "{devs}"
        );
        let cached: u32 = devs
            .lines()
            .find_map(|l| l.strip_prefix("CACHE="))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        assert!(
            cached >= 1,
            "libcuda.so.1 not in the container's ld.so.cache: {devs}"
        );
        let mask: u64 = minors.iter().fold(0, |m, i| m | 1 << i);
        assert!(
            devs.contains(&format!("{mask:#x}")),
            "application profile: {devs}"
        );
        let keys: Vec<&str> = env
            .lines()
            .filter_map(|l| l.split_once('=').map(|(k, _)| k))
            .collect();
        assert!(!keys.contains(&"NVBOX_LEAK_MARKER"), "{env}");
        for k in &keys {
            assert!(
                [
                    "HOME",
                    "HOSTNAME",
                    "PATH",
                    "PWD",
                    "SHLVL",
                    "TERM",
                    "container",
                    "NVIDIA_VISIBLE_DEVICES",
                    "NVIDIA_CTK_LIBCUDA_DIR"
                ]
                .contains(k),
                "unexpected variable {k} in the container: {env}"
            );
        }
        assert!(env.contains("NVIDIA_VISIBLE_DEVICES=void\n"), "{env}");
    }
}
