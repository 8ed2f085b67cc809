//! `nvidia-ctk runtime configure` end to end: goldens (tests/golden/runtime-configure/<case>/in is
//! copied to a scratch dir, the command runs, and the scratch dir must then equal <case>/out,
//! `{{dir}}` standing for the scratch dir), dry runs, errors, concurrent runs, and real engines:
//! a private dockerd started on the daemon.json we wrote and `containerd config dump` on the
//! top-level file plus drop-in we wrote. NVBOX_BLESS=1 rewrites the out/ trees (review the diff).

mod common;
#[path = "ctk_runtime/engines.rs"]
mod engines;

use common::*;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Output, Stdio};

const GOLDEN: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/golden/runtime-configure"
);

fn ctk(args: &[&str]) -> Output {
    command(nvbox())
        .arg("nvidia-ctk")
        .args(args)
        .output()
        .unwrap()
}

/// Every file under `root` (lock files aside), relative path → text.
fn tree(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if p.is_dir() {
                walk(root, &p, out);
            } else if !(name.starts_with('.') && name.ends_with(".lock")) && name != ".keep" {
                let rel = p.strip_prefix(root).unwrap().display().to_string();
                out.insert(rel, std::fs::read_to_string(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// Copy `<case>/in` to a scratch dir, run with `args` (`{{dir}}` substituted), compare to `out`.
fn golden(case: &str, args: &[&str]) -> Output {
    let tmp = TempDir::new(&format!("rtcfg-{case}"));
    let dir = tmp.path().display().to_string();
    let case_dir = Path::new(GOLDEN).join(case);
    for (rel, text) in tree(&case_dir.join("in")) {
        let p = tmp.path().join(&rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text.replace("{{dir}}", &dir)).unwrap();
    }
    let args: Vec<String> = args.iter().map(|a| a.replace("{{dir}}", &dir)).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = ctk(&args);
    assert!(out.status.success(), "{case}: {}", stderr(&out));
    let got: BTreeMap<String, String> = tree(tmp.path())
        .into_iter()
        .map(|(k, v)| (k, v.replace(&dir, "{{dir}}")))
        .collect();
    let out_dir = case_dir.join("out");
    if std::env::var_os("NVBOX_BLESS").is_some() {
        let _ = std::fs::remove_dir_all(&out_dir);
        for (rel, text) in &got {
            let p = out_dir.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
    }
    let want = tree(&out_dir);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "{case}: files"
    );
    for (rel, text) in &want {
        assert_eq!(&got[rel], text, "{case}: {rel}");
    }
    out
}

#[test]
fn docker_keeps_unknown_keys_and_merges_features() {
    let out = golden(
        "docker",
        &[
            "runtime",
            "configure",
            "--runtime=docker",
            "--config={{dir}}/daemon.json",
            "--set-as-default",
            "--cdi.enabled",
        ],
    );
    let err = stderr(&out);
    assert!(err.contains("Wrote updated config to "), "{err}");
    assert!(
        err.contains("It is recommended that docker daemon be restarted."),
        "{err}"
    );
}

#[test]
fn docker_remove_resets_the_default_to_runc() {
    golden(
        "docker-remove",
        &[
            "runtime",
            "configure",
            "--config",
            "{{dir}}/daemon.json",
            "--remove",
        ],
    );
}

fn containerd_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "runtime",
        "configure",
        "--runtime=containerd",
        "--config={{dir}}/config.toml",
        "--drop-in-config={{dir}}/conf.d/99-nvidia.toml",
    ];
    v.extend_from_slice(extra);
    v
}

#[test]
fn containerd_v2_drop_in_and_imports_keep_the_top_level_comments() {
    golden(
        "containerd-v2",
        &containerd_args(&["--set-as-default", "--cdi.enabled"]),
    );
}

#[test]
fn containerd_v3_drop_in_inherits_crun_and_appends_to_imports() {
    golden(
        "containerd-v3",
        &containerd_args(&["--runtime-path=/opt/nv/runtime"]),
    );
}

#[test]
fn containerd_v1_is_edited_in_place() {
    golden("containerd-v1", &containerd_args(&["--cdi.enabled"]));
}

#[test]
fn containerd_empty_drop_in_path_edits_the_top_level_file() {
    golden(
        "containerd-v2-in-place",
        &[
            "runtime",
            "configure",
            "--runtime=containerd",
            "--config={{dir}}/config.toml",
            "--drop-in-config=",
            "--set-as-default",
        ],
    );
}

#[test]
fn containerd_remove_deletes_the_drop_in_and_its_import() {
    golden("containerd-v2-remove", &containerd_args(&["--remove"]));
}

#[test]
fn crio_drop_in_inherits_the_default_runtime_and_keeps_other_keys() {
    golden(
        "crio",
        &[
            "runtime",
            "configure",
            "--runtime=crio",
            "--config={{dir}}/crio.conf",
            "--drop-in-config={{dir}}/crio.conf.d/99-nvidia.toml",
            "--set-as-default",
        ],
    );
}

#[test]
fn oci_hook_file() {
    golden(
        "oci-hook",
        &[
            "runtime",
            "configure",
            "--config-mode=oci-hook",
            "--oci-hook-path={{dir}}/hooks.d/oci-nvidia-hook.json",
        ],
    );
}

#[test]
fn dry_run_prints_and_writes_nothing() {
    let tmp = TempDir::new("rtcfg-dry");
    let top = tmp.path().join("config.toml");
    std::fs::write(&top, "version = 2\n").unwrap();
    let drop_in = tmp.path().join("conf.d/99-nvidia.toml");
    let out = ctk(&[
        "runtime",
        "configure",
        "--runtime=containerd",
        &format!("--config={}", top.display()),
        &format!("--drop-in-config={}", drop_in.display()),
        "--dry-run",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = stdout(&out);
    let dir = tmp.path().display();
    assert!(
        printed.starts_with("version = 2\n\n[plugins]\n"),
        "{printed}"
    );
    assert!(
        printed.ends_with(&format!(
            "version = 2\nimports = [\"{dir}/conf.d/*.toml\"]\n"
        )),
        "{printed}"
    );
    let err = stderr(&out);
    assert!(
        err.find("Drop-in config:") < err.find("Top-level config:"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&top).unwrap(), "version = 2\n");
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        1,
        "dry run wrote files"
    );
    let docker = ctk(&[
        "runtime",
        "configure",
        &format!("--config={dir}/daemon.json"),
        "--dry-run",
    ]);
    assert_eq!(
        stdout(&docker),
        "{\n    \"runtimes\": {\n        \"nvidia\": {\n            \"args\": [],\n            \"path\": \"nvidia-container-runtime\"\n        }\n    }\n}\n"
    );
    assert!(!tmp.path().join("daemon.json").exists());
}

/// `--config-source=command`: the engine binary's dump is the source (upstream tests this with a
/// script standing in for containerd); its version and runtimes decide the drop-in.
#[test]
fn command_source_reads_the_engines_dump() {
    let tmp = TempDir::new("rtcfg-cmd");
    let d = tmp.path();
    let fake = d.join("containerd");
    std::fs::write(
        &fake,
        "#!/bin/sh\n[ \"$1 $2\" = \"config dump\" ] || exit 3\n\
         printf 'version = 3\\n[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.runc.options]\\nSystemdCgroup = true\\n'\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = ctk(&[
        "runtime",
        "configure",
        "--runtime=containerd",
        "--config-source=command",
        &format!("--executable-path={}", fake.display()),
        &format!("--config={}/config.toml", d.display()),
        &format!("--drop-in-config={}/conf.d/99-nvidia.toml", d.display()),
        "--dry-run",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = stdout(&out);
    assert!(printed.starts_with("version = 3\n"), "{printed}");
    assert!(
        printed.contains(
            "[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.nvidia.options]\n            \
             BinaryName = \"/usr/bin/nvidia-container-runtime\"\n            SystemdCgroup = true\n"
        ),
        "{printed}"
    );
    let failing = ctk(&[
        "runtime",
        "configure",
        "--runtime=containerd",
        "--config-source=command",
        &format!("--executable-path={}/missing", d.display()),
        "--dry-run",
    ]);
    assert!(!failing.status.success());
    assert!(
        stderr(&failing).contains("unable to load config for runtime containerd"),
        "{}",
        stderr(&failing)
    );
}

#[test]
fn flag_errors_use_upstream_text() {
    let cases: &[(&[&str], &str)] = &[
        (&["--runtime=podman"], "unrecognized runtime 'podman'"),
        (
            &["--drop-in-config=/x/99.json"],
            "runtime docker does not support drop-in configs",
        ),
        (
            &["--runtime=containerd", "--runtime-path=bin/nvrt"],
            "the NVIDIA runtime path \"bin/nvrt\" is not an absolute path",
        ),
        (
            &["--runtime=crio", "--drop-in-config=rel.toml"],
            "the drop-in-config path \"rel.toml\" is not an absolute path",
        ),
        (
            &["--config-mode=oci-hook", "--nvidia-runtime-hook-path=hook"],
            "the NVIDIA runtime hook path \"hook\" is not an absolute path",
        ),
        (
            &["--config-source=socket"],
            "unrecognized Config Source: socket",
        ),
        (&["--bogus"], "flag provided but not defined: -bogus"),
    ];
    for (args, want) in cases {
        let mut all = vec!["runtime", "configure", "--dry-run"];
        all.extend_from_slice(args);
        let out = ctk(&all);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr(&out).contains(want), "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn a_directory_as_config_is_refused() {
    let tmp = TempDir::new("rtcfg-dir");
    let out = ctk(&[
        "runtime",
        "configure",
        &format!("--config={}", tmp.path().display()),
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("unable to load config for runtime docker"),
        "{}",
        stderr(&out)
    );
}

/// Without the lock, runs that read before another's rename lose that run's runtime.
#[test]
fn concurrent_runs_lose_no_update() {
    let tmp = TempDir::new("rtcfg-race");
    let cfg = tmp.path().join("daemon.json");
    std::fs::write(&cfg, "{\"debug\": true}").unwrap();
    std::fs::set_permissions(&cfg, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let children: Vec<Child> = (0..16)
        .map(|i| {
            command(nvbox())
                .args(["nvidia-ctk", "--quiet", "runtime", "configure"])
                .arg(format!("--config={}", cfg.display()))
                .arg(format!("--nvidia-runtime-name=nv{i}"))
                .stdout(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
    let names: Vec<&String> = v["runtimes"].as_object().unwrap().keys().collect();
    assert_eq!(names.len(), 16, "{names:?}");
    assert_eq!(v["debug"], true);
    let mode = std::fs::metadata(&cfg).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
}
