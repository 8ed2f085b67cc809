//! `nvidia-ctk-installer` on this machine (the image test, tests/deploy.rs, runs the same binary
//! in a container): configured through the environment as the GPU Operator configures it, on
//! a simulated 8-GPU host. The toolkit it installs runs GPU containers through real runc with
//! no environment pointing at its config; a real containerd started on the config it wrote runs
//! a CRI pod on the `nvidia` handler; SIGTERM puts every engine file back byte for byte. The
//! CRI-O, Docker and containerd files are goldens (tests/golden/installer, `{{dir}}` standing for
//! the scratch dir; NVBOX_BLESS=1 rewrites them). Bad input: one line, exit 1, nothing changed.

#[allow(dead_code)]
#[path = "cri/api.rs"]
mod api;
mod common;
#[allow(dead_code)]
#[path = "cri/node.rs"]
mod node;

use common::container::*;
use common::engines::*;
use common::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/installer");
const DONE: &str = "@@done";

/// The installer with only `env` in its environment (the Operator passes nothing else).
fn installer(env: &[(&str, String)], args: &[&str]) -> Command {
    let mut c = Command::new(nvbox());
    c.arg("nvidia-ctk-installer")
        .args(args)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    c
}

/// The Operator's variables for an install into `dir` against `host`; the engine's files in
/// `dir/etc/...`, the pid file in `dir/run`.
fn operator_env(dir: &Path, host: &Path, runtime: &str) -> Vec<(&'static str, String)> {
    let d = dir.display();
    let (config, drop_in) = match runtime {
        "containerd" => (
            format!("{d}/etc/containerd/config.toml"),
            format!("{d}/etc/containerd/conf.d/99-nvidia.toml"),
        ),
        "crio" => (
            format!("{d}/etc/crio/crio.conf"),
            format!("{d}/etc/crio/crio.conf.d/99-nvidia.toml"),
        ),
        _ => (format!("{d}/etc/docker/daemon.json"), String::new()),
    };
    let mut env = vec![
        ("RUNTIME", runtime.to_owned()),
        ("RUNTIME_CONFIG", config),
        ("RUNTIME_RESTART_MODE", "none".to_owned()),
        ("RUNTIME_CONFIG_SOURCES", "file".to_owned()),
        ("TOOLKIT_INSTALL_DIR", format!("{d}/usr/local/nvidia")),
        (
            "TOOLKIT_PID_FILE",
            format!("{d}/run/nvidia/toolkit/toolkit.pid"),
        ),
        ("NVIDIA_DRIVER_ROOT", host.display().to_string()),
        ("DRIVER_ROOT_CTR_PATH", host.display().to_string()),
        ("NVBOX_PROC_ROOT", host.display().to_string()),
        ("NVBOX_SYS_ROOT", host.display().to_string()),
        (
            "NVIDIA_CONTAINER_RUNTIME_MODES_CDI_DEFAULT_KIND",
            "management.nvidia.com/gpu".to_owned(),
        ),
        ("NRI_NAMESPACE", "gpu-operator".to_owned()),
    ];
    if !drop_in.is_empty() {
        env.push(("RUNTIME_DROP_IN_CONFIG", drop_in));
    }
    env
}

fn toolkit(dir: &Path) -> PathBuf {
    dir.join("usr/local/nvidia/toolkit")
}

/// Every file under `root` (lock files aside), relative path → text ("-> target" for links).
fn tree(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            if meta.is_symlink() {
                out.insert(
                    rel,
                    format!("-> {}", std::fs::read_link(&p).unwrap().display()),
                );
            } else if meta.is_dir() {
                out.insert(format!("{rel}/"), String::new());
                walk(root, &p, out);
            } else if !meta.is_file() {
                out.insert(rel, format!("special {:?}", meta.file_type()));
            } else if !(name.starts_with('.') && name.ends_with(".lock")) {
                let bytes = std::fs::read(&p).unwrap();
                let text = match String::from_utf8(bytes) {
                    Ok(t) => t,
                    Err(e) => format!("{} binary bytes", e.into_bytes().len()),
                };
                out.insert(rel, text);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// `path` (under `dir`) must equal the golden `name`, `{{dir}}` standing for `dir`.
fn assert_golden(dir: &Path, path: &Path, name: &str) {
    let got = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .replace(&dir.display().to_string(), "{{dir}}");
    let golden = Path::new(GOLDEN).join(name);
    if std::env::var_os("NVBOX_BLESS").is_some() {
        std::fs::create_dir_all(golden.parent().unwrap()).unwrap();
        std::fs::write(&golden, &got).unwrap();
    }
    let want = std::fs::read_to_string(&golden).unwrap_or_default();
    assert_eq!(got, want, "{name} differs from {}", golden.display());
}

/// The installer running as a daemon; SIGKILLed on drop if a test failed before stopping it.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    /// Start it and wait until `ready` exists (the engine file it writes last).
    fn start(mut cmd: Command, log: PathBuf, ready: &Path) -> Daemon {
        let file = std::fs::File::create(&log).unwrap();
        let child = cmd
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        let mut d = Daemon { child, log };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !d.log_text().contains("Waiting for signal") {
            assert!(
                d.child.try_wait().unwrap().is_none(),
                "installer exited:\n{}",
                d.log_text()
            );
            assert!(
                Instant::now() < deadline,
                "installer not ready:\n{}",
                d.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            ready.exists(),
            "{} not written:\n{}",
            ready.display(),
            d.log_text()
        );
        d
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM (as `docker stop` and the kubelet send it); exit 0 required.
    fn stop(mut self) -> String {
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM).unwrap();
        let status = self.child.wait().unwrap();
        let log = self.log_text();
        assert!(status.success(), "installer exit {status}:\n{log}");
        log
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "installer failed:\n{}{}",
        stdout(out),
        stderr(out)
    );
    stdout(out)
}

/// The containerd top-level file of a node, with a comment the edit must keep.
const CONTAINERD_TOP: &str = "# node config, managed by hand\nversion = 2\n\n\
[plugins.\"io.containerd.grpc.v1.cri\".containerd]\n  default_runtime_name = \"runc\"\n\n\
[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\n  runtime_type = \"io.containerd.runc.v2\"\n\n\
[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]\n  BinaryName = \"/usr/sbin/runc\"\n  SystemdCgroup = false\n";

/// The Operator's containerd set-up on a host directory: the toolkit, its config, the drop-in
/// (whose import names the host path of the drop-in, not the container's), a second installer
/// refused while the first holds the pid file, and SIGTERM restoring the top-level file byte for
/// byte with the drop-in gone.
#[test]
fn containerd_operator_install_then_sigterm_restores() {
    let dir = TempDir::new("inst-ctrd");
    let d = dir.path();
    let host = d.join("host");
    mock(&host, &["--gpus", "2"]);
    let top = d.join("etc/containerd/config.toml");
    std::fs::create_dir_all(top.parent().unwrap()).unwrap();
    std::fs::write(&top, CONTAINERD_TOP).unwrap();
    let mut env = operator_env(d, &host, "containerd");
    // The Operator mounts /etc/containerd at /runtime/config-dir; the import must name the
    // host's path.
    env.push((
        "RUNTIME_DROP_IN_CONFIG_HOST_PATH",
        "/etc/containerd/conf.d/99-nvidia.toml".to_owned(),
    ));
    env.push((
        "NVIDIA_CONTAINER_RUNTIME_MODES_CDI_ANNOTATION_PREFIXES",
        "cdi.k8s.io/,nvidia.cdi.k8s.io/".to_owned(),
    ));
    let drop_in = d.join("etc/containerd/conf.d/99-nvidia.toml");
    let daemon = Daemon::start(installer(&env, &[]), d.join("installer.log"), &drop_in);

    let tk = toolkit(d);
    let files = tree(&tk);
    let names: Vec<&String> = files.keys().collect();
    assert_eq!(
        names,
        [
            ".config/",
            ".config/nvidia-container-runtime/",
            ".config/nvidia-container-runtime/config.toml",
            "nvbox",
            "nvidia-cdi-hook",
            "nvidia-container-cli",
            "nvidia-container-runtime",
            "nvidia-container-runtime-hook",
            "nvidia-container-runtime.cdi",
            "nvidia-container-runtime.legacy",
            "nvidia-container-toolkit",
            "nvidia-ctk",
        ]
    );
    assert_eq!(files["nvidia-ctk"], "-> nvbox");
    assert_golden(
        d,
        &tk.join(".config/nvidia-container-runtime/config.toml"),
        "containerd/config.toml",
    );
    assert_golden(d, &drop_in, "containerd/99-nvidia.toml");
    assert_golden(d, &top, "containerd/config-top.toml");
    let pid_file = d.join("run/nvidia/toolkit/toolkit.pid");
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap().trim(),
        daemon.child.id().to_string()
    );

    let second = installer(&env, &["--no-daemon"]).output().unwrap();
    assert!(!second.status.success());
    assert!(
        stderr(&second)
            .lines()
            .last()
            .unwrap()
            .starts_with("nvidia-ctk-installer: unable to get flock on pidfile"),
        "{}",
        stderr(&second)
    );
    assert!(
        pid_file.exists(),
        "the refused installer removed the running one's pid file"
    );

    let log = daemon.stop();
    assert_eq!(
        std::fs::read_to_string(&top).unwrap(),
        CONTAINERD_TOP,
        "{log}"
    );
    assert!(!drop_in.exists(), "drop-in left behind:\n{log}");
    assert!(!pid_file.exists());
    // The toolkit stays installed, as upstream's does.
    assert!(tk.join("nvbox").exists());
}

/// Docker: daemon.json gains the three runtimes, `nvidia` as default and CDI; SIGTERM gives
/// back the file as it was (upstream leaves `"default-runtime": "runc"` and its own layout).
/// Edited by someone else meanwhile, the file keeps their edit and loses only ours.
#[test]
fn docker_shape_and_undo() {
    let dir = TempDir::new("inst-docker");
    let d = dir.path();
    let host = d.join("host");
    mock(&host, &["--gpus", "1", "--no-driver-files"]);
    let json = d.join("etc/docker/daemon.json");
    std::fs::create_dir_all(json.parent().unwrap()).unwrap();
    let before = "{\"log-level\": \"warn\", \"features\": {\"containerd-snapshotter\": true}}\n";
    std::fs::write(&json, before).unwrap();
    let mut env = operator_env(d, &host, "docker");
    env.push(("RUNTIME_ENABLE_CDI", "true".to_owned()));
    let daemon = Daemon::start(installer(&env, &[]), d.join("log"), &toolkit(d));
    assert_golden(d, &json, "docker/daemon.json");
    daemon.stop();
    assert_eq!(std::fs::read_to_string(&json).unwrap(), before);

    let daemon = Daemon::start(installer(&env, &[]), d.join("log"), &toolkit(d));
    let mut edited: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    edited["debug"] = serde_json::json!(true);
    std::fs::write(&json, edited.to_string()).unwrap();
    daemon.stop();
    let after: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(after["debug"], true);
    assert!(after.get("runtimes").is_none(), "{after}");
}

/// CRI-O: the drop-in gets the three runtimes (inheriting crun's options from the main file);
/// on SIGTERM only `default_runtime` goes, as upstream. Hook mode writes and removes the hook.
#[test]
fn crio_shape_and_undo() {
    let dir = TempDir::new("inst-crio");
    let d = dir.path();
    let host = d.join("host");
    mock(&host, &["--gpus", "1", "--no-driver-files"]);
    let conf = d.join("etc/crio/crio.conf");
    std::fs::create_dir_all(conf.parent().unwrap()).unwrap();
    std::fs::write(
        &conf,
        "[crio.runtime]\ndefault_runtime = \"crun\"\n\n[crio.runtime.runtimes.crun]\n\
         runtime_path = \"/usr/bin/crun\"\nruntime_root = \"/run/crun\"\nmonitor_path = \"/usr/libexec/crio/conmon\"\n",
    )
    .unwrap();
    let env = operator_env(d, &host, "crio");
    let drop_in = d.join("etc/crio/crio.conf.d/99-nvidia.toml");
    let daemon = Daemon::start(installer(&env, &[]), d.join("log"), &drop_in);
    assert_golden(d, &drop_in, "crio/99-nvidia.toml");
    assert_golden(
        d,
        &toolkit(d).join(".config/nvidia-container-runtime/config.toml"),
        "crio/config.toml",
    );
    daemon.stop();
    assert_golden(d, &drop_in, "crio/99-nvidia.after-stop.toml");

    let mut env = operator_env(d, &host, "crio");
    let hooks = d.join("hooks.d");
    env.push(("CRIO_CONFIG_MODE", "hook".to_owned()));
    env.push(("CRIO_HOOKS_DIR", hooks.display().to_string()));
    let hook = hooks.join("oci-nvidia-hook.json");
    let daemon = Daemon::start(installer(&env, &[]), d.join("log"), &hook);
    assert_golden(d, &hook, "crio/oci-nvidia-hook.json");
    daemon.stop();
    assert!(!hook.exists());
}

/// Bad input: one error line naming the installer, exit 1, and no file created, changed or
/// removed anywhere under the scratch dir.
#[test]
fn bad_input_changes_nothing() {
    let dir = TempDir::new("inst-bad");
    let d = dir.path();
    let host = d.join("host");
    mock(&host, &["--gpus", "1", "--no-driver-files"]);
    let top = d.join("etc/containerd/config.toml");
    std::fs::create_dir_all(top.parent().unwrap()).unwrap();
    std::fs::write(&top, "version = 2\n[plugins\n").unwrap();
    std::fs::create_dir_all(d.join("etc/docker")).unwrap();
    let snapshot = tree(d);
    let check = |what: &str, out: Output, want: &str| {
        assert_eq!(out.status.code(), Some(1), "{what}: {}", stderr(&out));
        let err = stderr(&out);
        let errors: Vec<&str> = err
            .lines()
            .filter(|l| !l.starts_with("INFO[") && !l.starts_with("WARN["))
            .collect();
        assert_eq!(errors.len(), 1, "{what}: {err}");
        assert!(
            errors[0].starts_with("nvidia-ctk-installer: ") && errors[0].contains(want),
            "{what}: {err}"
        );
        let mut now = tree(d);
        now.retain(|k, _| !k.starts_with("run/"));
        let mut before = snapshot.clone();
        before.retain(|k, _| !k.starts_with("run/"));
        assert_eq!(now, before, "{what}: files changed");
    };
    let env = operator_env(d, &host, "containerd");
    let mut unknown = env.clone();
    unknown.push(("RUNTIME", "podman".to_owned()));
    unknown.retain(|(k, v)| *k != "RUNTIME" || v == "podman");
    check(
        "unknown runtime",
        installer(&unknown, &[]).output().unwrap(),
        "invalid runtime \"podman\"",
    );
    check(
        "unparsable config",
        installer(&env, &["--no-daemon"]).output().unwrap(),
        "unable to load config",
    );
    // A read-only /etc/docker, as a bind mount in a private mount namespace.
    if !is_root() {
        return skip_or_fail("a read-only bind mount needs root");
    }
    let env = operator_env(d, &host, "docker");
    let docker = d.join("etc/docker");
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(format!(
            "mount --bind -o ro {0} {0} && exec \"$@\"",
            docker.display()
        ))
        .arg("sh");
    let inner = installer(&env, &["--no-daemon"]);
    cmd.arg(inner.get_program())
        .args(inner.get_args())
        .env_clear()
        .envs(inner.get_envs().filter_map(|(k, v)| Some((k, v?))));
    check(
        "read-only config dir",
        cmd.stderr(Stdio::piped()).output().unwrap(),
        "is not writable",
    );
    check(
        "bad pid file name",
        installer(&env, &["--pid-file=/tmp/x.pid"])
            .output()
            .unwrap(),
        "invalid toolkit.pid path",
    );
    check(
        "NRI plugin",
        installer(&env, &["--enable-nri-plugin"]).output().unwrap(),
        "NRI plugin",
    );
}

/// The installed toolkit by itself: runc containers through `<toolkit>/nvidia-container-runtime`
/// (auto: jit-cdi) and `.legacy` (the prestart hook) with an environment that names no config,
/// so the binary must find the one beside it; and the `nvidia-ctk` in the toolkit reads it too.
#[test]
fn installed_toolkit_runs_gpu_containers() {
    if !have_prerequisites(&[RUNC, BUSYBOX]) {
        return;
    }
    let host = shared_host(&[]);
    let dir = TempDir::new("inst-runc");
    let d = dir.path();
    let env = operator_env(d, &host.root, "docker");
    ok(&installer(&env, &["--no-daemon", "--no-runtime-config"])
        .output()
        .unwrap());
    let tk = toolkit(d);
    let shim = |name: &str| {
        let mut c = Command::new(tk.join(name));
        c.env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
        c
    };
    let mut bundle = Bundle::new(true);
    bundle.script(&probe_with_env());
    bundle.env(&["NVIDIA_VISIBLE_DEVICES=all"]);
    let want = expected_jit(host, "all", &bundle.rootfs);
    let run = run_shim_with(shim("nvidia-container-runtime"), &mut bundle, &[]);
    assert!(run.created, "create: {}", run.create_stderr);
    assert_jit_injected(&parse_probe(&run.stdout), &want);
    assert_ldcache(&bundle.rootfs, &want);

    let mut bundle = Bundle::new(true);
    bundle.script(&probe_with_env());
    bundle.env(&["NVIDIA_VISIBLE_DEVICES=1,3"]);
    let want = expected(host, "1,3", &["compute", "utility"], &bundle.rootfs);
    let run = run_shim_with(shim("nvidia-container-runtime.legacy"), &mut bundle, &[]);
    assert!(run.created, "create: {}", run.create_stderr);
    let hooks = prestart_hooks(&run.config_after);
    assert_eq!(
        hooks[0]["path"],
        tk.join("nvidia-container-runtime-hook")
            .display()
            .to_string()
    );
    assert_injected(&parse_probe(&run.stdout), &want, host);

    let out = shim("nvidia-ctk").args(["config"]).output().unwrap();
    assert!(ok(&out).contains(&format!("root = \"{}\"", host.root.display())));
}

/// A real containerd started on what the installer wrote (top-level file + drop-in, no
/// environment naming a config) lists the three runtimes, and a pod on the `nvidia` handler
/// gets its GPUs from the installed toolkit. Then SIGTERM restores the top-level file.
#[test]
fn containerd_started_on_the_installed_config_runs_a_gpu_pod() {
    if !have_prerequisites(&[CONTAINERD, CTR, RUNC, BUSYBOX]) {
        return;
    }
    let host = shared_host(&[]);
    let dir = TempDir::new("inst-node");
    let d = dir.path();
    let top = node::write_top_level(d, node::Source::File);
    let before = std::fs::read_to_string(&top).unwrap();
    let drop_in = d.join("conf.d/99-nvidia.toml");
    let mut env = operator_env(d, &host.root, "containerd");
    env.retain(|(k, _)| *k != "RUNTIME_CONFIG" && *k != "RUNTIME_DROP_IN_CONFIG");
    env.push(("RUNTIME_CONFIG", top.display().to_string()));
    env.push(("RUNTIME_DROP_IN_CONFIG", drop_in.display().to_string()));
    let daemon = Daemon::start(installer(&env, &[]), d.join("installer.log"), &drop_in);
    // containerd's environment names no config: the shim finds the toolkit's own.
    let path = [("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")];
    node::Node::launch(TempDir::new("inst-node-ctrd"), &top, &path).assert_gpu_pod(
        host,
        &script(),
        DONE,
    );
    daemon.stop();
    assert_eq!(std::fs::read_to_string(&top).unwrap(), before);
    assert!(!drop_in.exists());
}

fn script() -> String {
    format!("{}\necho {DONE}; exec sleep 1000000", probe_with_env())
}

/// `nvidia-toolkit`, the name GPU Operators before upstream 1.18 exec, runs the installer, but
/// is not an installable applet (`nvbox --list` leaves it out).
#[test]
fn nvidia_toolkit_alias_is_the_installer() {
    let dir = TempDir::new("inst-alias");
    let link = dir.path().join("nvidia-toolkit");
    std::os::unix::fs::symlink(nvbox(), &link).unwrap();
    let out = Command::new(&link).arg("--help").output().unwrap();
    assert!(ok(&out).contains("nvidia-ctk-installer - Install the NVIDIA Container Toolkit"));
    let list = Command::new(nvbox()).arg("--list").output().unwrap();
    assert!(!stdout(&list).lines().any(|l| l == "nvidia-toolkit"));
}

/// Before the driver is loaded (no `/proc/driver/nvidia/version` under the proc root), the
/// installed runtime runs a GPU request unmodified with a warning, as upstream's installed
/// wrappers do, so a node whose default runtime is `nvidia` keeps starting pods while its driver
/// container comes up. The same binary reading another config still fails the request.
#[test]
fn installed_runtime_passes_through_until_the_driver_is_loaded() {
    if !have_prerequisites(&[RUNC, BUSYBOX]) {
        return;
    }
    let host = shared_host(&[]);
    let dir = TempDir::new("inst-nodriver");
    let d = dir.path();
    let no_proc = d.join("no-driver-proc");
    std::fs::create_dir_all(&no_proc).unwrap();
    let mut env = operator_env(d, &host.root, "docker");
    env.retain(|(k, _)| *k != "NVBOX_PROC_ROOT");
    env.push(("NVBOX_PROC_ROOT", no_proc.display().to_string()));
    ok(&installer(&env, &["--no-daemon", "--no-runtime-config"])
        .output()
        .unwrap());
    let mut shim = Command::new(toolkit(d).join("nvidia-container-runtime"));
    shim.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    let mut bundle = Bundle::new(true);
    bundle.script(&probe_with_env());
    bundle.env(&["NVIDIA_VISIBLE_DEVICES=all"]);
    let run = run_shim_with(shim, &mut bundle, &[]);
    assert!(run.created, "create: {}", run.create_stderr);
    assert_eq!(run.config_after, run.config_before, "the spec was edited");
    assert!(
        run.stderr
            .contains("nvidia driver modules are not yet loaded"),
        "{}",
        run.stderr
    );
}
