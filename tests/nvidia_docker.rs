//! `nvidia-docker` end to end. Without a daemon: NV_DOCKER pointed at small programs shows the
//! argv docker would get, and that the wrapper becomes that program (pid, exit status, signal).
//! With one private dockerd whose daemon.json registers the runtime `nvidia` as a path named
//! `nvidia-container-runtime`: first a link to plain runc, which proves the injected flags reach
//! dockerd whatever the shim does, then a link to nvbox, the shim itself, on a simulated host.

mod common;

use common::container::*;
use common::*;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const IMAGE: &str = "nvbox-busybox";
const PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

/// The wrapper through its applet link, with nothing of ours in the environment.
fn wrapper(env: &[(&str, &str)]) -> Command {
    let mut c = Command::new(applet_dir().join("nvidia-docker"));
    c.env_clear().env("PATH", PATH).envs(env.iter().copied());
    c
}

fn stdout_of(out: &Output) -> String {
    text(&out.stdout)
}

#[test]
fn argv_reaches_the_program_named_by_nv_docker() {
    let out = wrapper(&[("NV_DOCKER", "/bin/echo"), ("NV_GPU", "0 2")])
        .args(["-H", "run", "--config", "/c", "container", "run", "img"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        stdout_of(&out),
        "-H run --config /c container run --runtime=nvidia -e NVIDIA_VISIBLE_DEVICES=0,2 img\n"
    );
    let out = wrapper(&[("NV_DOCKER", "/bin/echo"), ("NV_GPU", "0 2")])
        .args(["network", "create", "x"])
        .output()
        .unwrap();
    assert_eq!(stdout_of(&out), "network create x\n");
    // The banner comes first, then the program's own output.
    let out = wrapper(&[("NV_DOCKER", "/bin/echo")])
        .args(["-l", "info", "version"])
        .output()
        .unwrap();
    let banner = format!("NVIDIA Docker: {}\n", env!("CARGO_PKG_VERSION"));
    assert_eq!(stdout_of(&out), format!("{banner}-l info version\n"));
    // NV_DEBUG traces the final command, as upstream's `set -x` did, on stderr only.
    let out = wrapper(&[("NV_DOCKER", "/bin/echo"), ("NV_DEBUG", "1")])
        .args(["create", "a b"])
        .output()
        .unwrap();
    assert_eq!(stdout_of(&out), "create --runtime=nvidia a b\n");
    assert_eq!(
        text(&out.stderr),
        "+ exec /bin/echo create --runtime=nvidia 'a b'\n"
    );
}

#[test]
fn the_wrapper_becomes_docker() {
    // Same pid: exec, not a child. Word splitting of NV_DOCKER gives `sh -c SCRIPT`.
    let child = wrapper(&[("NV_DOCKER", "sh -c")])
        .arg("echo $$")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert_eq!(stdout_of(&out), format!("{pid}\n"));
    let out = wrapper(&[("NV_DOCKER", "sh -c")])
        .arg("exit 7")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7));
    let out = wrapper(&[("NV_DOCKER", "sh -c")])
        .arg("kill -TERM $$")
        .output()
        .unwrap();
    assert_eq!(out.status.signal(), Some(15));
    // Unset NV_DOCKER means `docker` from PATH.
    let dir = TempDir::new("ndocker-path");
    let fake = dir.path().join("docker");
    std::fs::write(&fake, "#!/bin/sh\necho fake \"$@\"\n").unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = wrapper(&[])
        .env("PATH", format!("{}:{PATH}", dir.path().display()))
        .args(["run", "img"])
        .output()
        .unwrap();
    assert_eq!(stdout_of(&out), "fake run --runtime=nvidia img\n");
}

#[test]
fn a_missing_docker_is_127() {
    let out = wrapper(&[("NV_DOCKER", "/nonexistent/docker")])
        .arg("ps")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(127));
    let err = text(&out.stderr);
    assert!(
        err.starts_with("nvidia-docker: exec /nonexistent/docker: ") && err.lines().count() == 1,
        "{err}"
    );
}

/// The shared private dockerd, with a daemon.json naming runtime `nvidia` as a link that the
/// test retargets between runc and nvbox, and the shim's config in legacy mode.
struct Daemon {
    dockerd: Dockerd,
    /// Holds the runtime link and the shim's config; outlives nothing the daemon needs.
    _dir: TempDir,
    runtime: PathBuf,
}

impl Daemon {
    fn start(host: &Host) -> Daemon {
        let dir = TempDir::new("ndockerd");
        let d = dir.path();
        let runtime = d.join("nvidia-container-runtime");
        std::os::unix::fs::symlink(RUNC, &runtime).unwrap();
        let config = serde_json::json!({
            "runtimes": {"nvidia": {"path": runtime, "runtimeArgs": []}},
        });
        // nvidia-docker is the legacy stack's wrapper: its users get the legacy hook, whose
        // container contents the shared expectations describe (jit-cdi has its own tests).
        let shim_config = d.join("config.toml");
        let mut text = std::fs::read_to_string(&host.config).unwrap();
        text.push_str("\n[nvidia-container-runtime]\nmode = \"legacy\"\n");
        std::fs::write(&shim_config, text).unwrap();
        // The applet links on PATH: the shim looks up its hook there.
        let path = format!("{}:{PATH}", applet_dir().display());
        let dockerd = Dockerd::start_with(Some(&shim_config), DaemonConfig::Json(&config), &path);
        Daemon {
            dockerd,
            _dir: dir,
            runtime,
        }
    }

    fn log(&self) -> String {
        self.dockerd.log()
    }

    /// Plain docker, to look at what the wrapper made.
    fn docker(&self, args: &[&str]) -> Output {
        self.dockerd.docker(args)
    }

    /// `nvidia-docker GLOBALS… ARGS…`, the globals before the subcommand as users write them.
    fn wrapped(&self, env: &[(&str, &str)], globals: &[&str], args: &[&str]) -> Output {
        wrapper(env)
            .args(globals)
            .arg("--config")
            .arg(self.dockerd.client_dir())
            .args(["-H", &self.dockerd.socket])
            .args(args)
            .output()
            .unwrap()
    }

    fn inspect(&self, name: &str, format: &str) -> String {
        let out = self.docker(&["inspect", "--format", format, name]);
        assert!(
            out.status.success(),
            "inspect {name}: {}",
            text(&out.stderr)
        );
        stdout_of(&out).trim_end().to_string()
    }

    fn retarget_runtime(&self, target: &Path) {
        let tmp = self.runtime.with_extension("new");
        std::os::unix::fs::symlink(target, &tmp).unwrap();
        std::fs::rename(&tmp, &self.runtime).unwrap();
    }
}

fn assert_ok(out: &Output, what: &str, daemon: &Daemon) {
    assert!(
        out.status.success(),
        "{what}: {}\ndockerd log:\n{}",
        text(&out.stderr),
        daemon.log()
    );
}

#[test]
fn nvidia_docker_with_dockerd() {
    if !have_prerequisites(&[DOCKERD, DOCKER, CONTAINERD, RUNC, BUSYBOX]) {
        return;
    }
    let host = shared_host(&[]);
    let daemon = Daemon::start(host);
    let image = TempDir::new("ndocker-image");
    let rootfs = image.path().join("rootfs");
    make_rootfs(&rootfs, true);
    daemon.dockerd.import(&rootfs, IMAGE);

    // Runtime `nvidia` is plain runc here: what is checked is the wrapper's argv.
    let globals = ["-l", "warn", "-D"];
    let gpu = [("NV_GPU", "0 2")];
    let script = "echo \"$NVIDIA_VISIBLE_DEVICES\"; exit 7";
    let net = ["--network", "none"];
    let mut args = vec!["run", "--name", "nvbox-nd-run"];
    args.extend(net);
    args.extend([IMAGE, "sh", "-c", script]);
    let out = daemon.wrapped(&gpu, &globals, &args);
    assert_eq!(
        out.status.code(),
        Some(7),
        "run: {}\n{}",
        text(&out.stderr),
        daemon.log()
    );
    assert_eq!(stdout_of(&out), "0,2\n");
    assert_eq!(
        daemon.inspect("nvbox-nd-run", "{{.HostConfig.Runtime}}"),
        "nvidia"
    );
    let env = daemon.inspect("nvbox-nd-run", "{{json .Config.Env}}");
    let env: Vec<String> = serde_json::from_str(&env).unwrap();
    assert!(
        env.iter().any(|e| e == "NVIDIA_VISIBLE_DEVICES=0,2"),
        "{env:?}"
    );
    assert_ok(&daemon.docker(&["rm", "nvbox-nd-run"]), "rm", &daemon);

    // `container create` without NV_GPU, docker named by NV_DOCKER: the runtime and no env.
    let mut args = vec!["container", "create", "--name", "nvbox-nd-create"];
    args.extend(net);
    args.extend([IMAGE, "true"]);
    let out = daemon.wrapped(&[("NV_DOCKER", DOCKER)], &[], &args);
    assert_ok(&out, "container create", &daemon);
    assert_eq!(
        daemon.inspect("nvbox-nd-create", "{{.HostConfig.Runtime}}"),
        "nvidia"
    );
    let env = daemon.inspect("nvbox-nd-create", "{{json .Config.Env}}");
    assert!(!env.contains("NVIDIA_VISIBLE_DEVICES"), "{env}");
    let out = daemon.wrapped(&[], &[], &["start", "-a", "nvbox-nd-create"]);
    assert_ok(&out, "start", &daemon);
    assert_ok(&daemon.docker(&["rm", "nvbox-nd-create"]), "rm", &daemon);

    // Upstream's script broke these: `create` and `run` that make no container.
    let out = daemon.wrapped(&gpu, &[], &["network", "create", "nvbox-nd-net"]);
    assert_ok(&out, "network create", &daemon);
    let out = daemon.docker(&["network", "inspect", "nvbox-nd-net"]);
    assert_ok(&out, "network inspect", &daemon);
    assert_ok(
        &daemon.docker(&["network", "rm", "nvbox-nd-net"]),
        "network rm",
        &daemon,
    );
    let mut args = vec!["run", "-d", "--name", "nvbox-nd-exec"];
    args.extend(net);
    args.extend([IMAGE, "sleep", "60"]);
    assert_ok(&daemon.wrapped(&[], &[], &args), "run -d", &daemon);
    let out = daemon.wrapped(
        &gpu,
        &[],
        &["exec", "nvbox-nd-exec", "echo", "run", "create"],
    );
    assert_ok(&out, "exec", &daemon);
    assert_eq!(stdout_of(&out), "run create\n");
    let out = daemon.docker(&["rm", "-f", "nvbox-nd-exec"]);
    assert_ok(&out, "rm -f", &daemon);

    // `version`: upstream's banner line, then docker's client and server sections.
    let out = daemon.wrapped(&[], &globals, &["version"]);
    assert_ok(&out, "version", &daemon);
    let version = stdout_of(&out);
    let banner = format!("NVIDIA Docker: {}", env!("CARGO_PKG_VERSION"));
    assert_eq!(version.lines().next(), Some(banner.as_str()), "{version}");
    assert!(version.contains("\nClient:") && version.contains("\nServer:"));

    // Runtime `nvidia` is our shim: NV_GPU='0 2' gives GPUs 0 and 2 of the simulated host.
    let shim = Command::new(nvbox())
        .args(["nvidia-container-runtime", "--version"])
        .output()
        .unwrap();
    if !shim.status.success() {
        skip_or_fail(&format!(
            "nvidia-container-runtime --version fails, shim not usable: {}",
            text(&shim.stderr).trim_end()
        ));
        return;
    }
    daemon.retarget_runtime(&applet_dir().join("nvidia-container-runtime"));
    let mut args = vec!["run", "--rm"];
    args.extend(net);
    args.extend([IMAGE, "sh", "-c", PROBE]);
    let out = daemon.wrapped(&gpu, &[], &args);
    assert_ok(&out, "run through the shim", &daemon);
    let probe = parse_probe(&stdout_of(&out));
    let want = expected(host, "0,2", &["compute", "utility"], &rootfs);
    assert_injected(&probe, &want, host);
    assert_cgroup(&probe.cgroup, &want.cgroup, host);
}
