//! `nvidia-ctk runtime configure` end to end: goldens (tests/golden/runtime-configure/<case>/in is
//! copied to a scratch dir, the command runs, and the scratch dir must then equal <case>/out,
//! `{{dir}}` standing for the scratch dir), dry runs, errors, concurrent runs, and real engines:
//! a private dockerd started on the daemon.json we wrote and `containerd config dump` on the
//! top-level file plus drop-in we wrote. NVBOX_BLESS=1 rewrites the out/ trees (review the diff).

mod common;

use common::container::*;
use common::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

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

/// A private dockerd reading the daemon.json we wrote must list our runtime.
#[test]
fn real_dockerd_lists_the_configured_runtime() {
    if !have_prerequisites(&[DOCKERD, DOCKER]) {
        return;
    }
    let tmp = TempDir::new("rtcfg-dockerd");
    let d = tmp.path();
    let cfg = d.join("daemon.json");
    let runtime = applet_dir().join("nvidia-container-runtime");
    std::fs::write(
        &cfg,
        "{\"debug\": false, \"features\": {\"buildkit\": false}}",
    )
    .unwrap();
    let out = ctk(&[
        "runtime",
        "configure",
        &format!("--config={}", cfg.display()),
        &format!("--nvidia-runtime-path={}", runtime.display()),
        "--set-as-default",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let socket = format!("unix://{}/docker.sock", d.display());
    let log = std::fs::File::create(d.join("dockerd.log")).unwrap();
    let mut daemon = DaemonGuard(
        Command::new(DOCKERD)
            .args(["--iptables=false", "--ip6tables=false", "--bridge=none"])
            .args(["--storage-driver=vfs", "-H", &socket])
            .arg("--config-file")
            .arg(&cfg)
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("pid"))
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
        d.join("exec/containerd/containerd.pid"),
    );
    let docker = |args: &[&str]| {
        Command::new(DOCKER)
            .env("DOCKER_CONFIG", d.join("client"))
            .args(["-H", &socket])
            .args(args)
            .output()
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !docker(&["version"]).status.success() {
        let log = std::fs::read_to_string(d.join("dockerd.log")).unwrap_or_default();
        assert!(
            daemon.0.try_wait().unwrap().is_none(),
            "dockerd exited:\n{log}"
        );
        assert!(Instant::now() < deadline, "dockerd did not come up:\n{log}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = docker(&["info", "--format", "{{json .Runtimes}}"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let runtimes: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        runtimes["nvidia"]["path"].as_str(),
        Some(runtime.to_str().unwrap()),
        "{runtimes}"
    );
    let out = docker(&["info", "--format", "{{.DefaultRuntime}}"]);
    assert_eq!(stdout(&out).trim(), "nvidia");
}

/// Stops dockerd (and the containerd it started) on drop, panics included.
struct DaemonGuard(Child, PathBuf);

impl Drop for DaemonGuard {
    fn drop(&mut self) {
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;
        let containerd: Option<i32> = std::fs::read_to_string(&self.1)
            .ok()
            .and_then(|s| s.trim().parse().ok());
        let _ = kill(Pid::from_raw(self.0.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline && self.0.try_wait().ok().flatten().is_none() {
            std::thread::sleep(Duration::from_millis(50));
        }
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
        if let Some(c) = containerd {
            let comm = std::fs::read_to_string(format!("/proc/{c}/comm")).unwrap_or_default();
            if comm.trim() == "containerd" {
                let _ = kill(Pid::from_raw(c), Signal::SIGKILL);
            }
        }
    }
}

/// containerd itself merges the top-level file and our drop-in: `config dump` shows the runtime.
#[test]
fn real_containerd_reads_the_drop_in_through_imports() {
    if !Path::new(CONTAINERD).exists() {
        skip_or_fail(&format!(
            "{CONTAINERD} is not installed (tests/run.sh installs it)"
        ));
        return;
    }
    let tmp = TempDir::new("rtcfg-containerd");
    let d = tmp.path();
    let top = d.join("config.toml");
    std::fs::write(
        &top,
        format!(
            "# ours\nversion = 2\nroot = \"{0}/root\"\nstate = \"{0}/state\"\n\n\
             [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]\n  \
             SystemdCgroup = true # kept\n",
            d.display()
        ),
    )
    .unwrap();
    let out = ctk(&[
        "runtime",
        "configure",
        "--runtime=containerd",
        &format!("--config={}", top.display()),
        &format!("--drop-in-config={}/conf.d/99-nvidia.toml", d.display()),
        "--set-as-default",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        std::fs::read_to_string(&top)
            .unwrap()
            .contains("SystemdCgroup = true # kept")
    );
    let dump = Command::new(CONTAINERD)
        .arg("--config")
        .arg(&top)
        .args(["config", "dump"])
        .output()
        .unwrap();
    assert!(
        dump.status.success(),
        "containerd config dump: {}",
        stderr(&dump)
    );
    let cfg: toml::Table = stdout(&dump).parse().unwrap();
    let cri = &cfg["plugins"]["io.containerd.grpc.v1.cri"]["containerd"];
    assert_eq!(cri["default_runtime_name"].as_str(), Some("nvidia"));
    let nvidia = &cri["runtimes"]["nvidia"];
    assert_eq!(
        nvidia["runtime_type"].as_str(),
        Some("io.containerd.runc.v2")
    );
    assert_eq!(
        nvidia["options"]["BinaryName"].as_str(),
        Some("/usr/bin/nvidia-container-runtime")
    );
    assert_eq!(nvidia["options"]["SystemdCgroup"].as_bool(), Some(true));
    assert!(cri["runtimes"].get("runc").is_some(), "runc kept");
    let imports = cfg["imports"].as_array().unwrap();
    assert!(
        imports
            .iter()
            .any(|i| i.as_str().unwrap().ends_with("conf.d/99-nvidia.toml")),
        "{imports:?}"
    );
}
