//! The toolkit image (deploy/Dockerfile) as the GPU Operator uses it: built offline by a
//! private dockerd from the static release binary (tests/run.sh builds it before `cargo test`)
//! and Debian's busybox-static, its size measured; run privileged with the host's PID namespace
//! and the Operator's mounts and environment against a host directory and a simulated 8-GPU
//! host. The toolkit it leaves on the "host" then runs a GPU container through real runc, a real
//! containerd started on the config it wrote lists the `nvidia` runtimes and runs a CRI pod on
//! that handler, and `docker stop` leaves the containerd config as it was. The Kubernetes
//! manifests (deploy/kubernetes) are checked against what the installer reads.

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
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const IMAGE: &str = "nvbox.test/container-toolkit:test";
const DONE: &str = "@@done";
/// What one image may weigh: the 3 MiB binary and busybox's 2 MiB, with room for growth.
/// Upstream's image is some hundreds of MB.
const MAX_IMAGE_BYTES: u64 = 8 << 20;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn static_binary() -> PathBuf {
    repo().join("target/x86_64-unknown-linux-gnu/release/nvbox")
}

fn ready() -> bool {
    if !have_prerequisites(&[DOCKERD, DOCKER, RUNC, BUSYBOX, CONTAINERD, CTR]) {
        return false;
    }
    if !static_binary().exists() {
        skip_or_fail(&format!(
            "{} is missing (tests/run.sh builds it before cargo test)",
            static_binary().display()
        ));
        return false;
    }
    true
}

/// `docker build -f deploy/Dockerfile .` from the repository root, as README says, after
/// putting Debian's static busybox where the Dockerfile takes it from.
fn build(dockerd: &Dockerd) -> u64 {
    let busybox = repo().join("target/busybox");
    std::fs::copy(BUSYBOX, &busybox).unwrap();
    let out = dockerd
        .command()
        .current_dir(repo())
        .env("DOCKER_BUILDKIT", "0")
        .args(["build", "-q", "-f", "deploy/Dockerfile", "-t", IMAGE, "."])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker build: {}{}",
        stdout(&out),
        stderr(&out)
    );
    let size = dockerd.docker(&["image", "inspect", "-f", "{{.Size}}", IMAGE]);
    stdout(&size).trim().parse().unwrap()
}

fn wait_for_log(dockerd: &Dockerd, name: &str, marker: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = dockerd.docker(&["logs", name]);
        let log = format!("{}{}", stdout(&out), stderr(&out));
        if log.contains(marker) {
            return log;
        }
        let state = dockerd.docker(&["inspect", "-f", "{{.State.Running}}", name]);
        assert!(
            Instant::now() < deadline && stdout(&state).trim() == "true",
            "installer container did not reach {marker:?}:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn script() -> String {
    format!("{}\necho {DONE}; exec sleep 1000000", probe_with_env())
}

#[test]
fn toolkit_image_as_the_operator_runs_it() {
    if !ready() {
        return;
    }
    let dockerd = Dockerd::start_with(None, DaemonConfig::Defaults, SYSTEM_PATH);
    let size = build(&dockerd);
    eprintln!("toolkit image: {size} bytes");
    assert!(size <= MAX_IMAGE_BYTES, "image is {size} bytes");
    let host = shared_host(&[]);
    let dir = TempDir::new("image-node");
    let d = dir.path();
    // The node: containerd's config in etc/containerd, its drop-in directory beside it.
    let etc = d.join("etc/containerd");
    std::fs::create_dir_all(etc.join("conf.d")).unwrap();
    let top = node::write_top_level(&etc, node::Source::File);
    let before = std::fs::read_to_string(&top).unwrap();
    let install = d.join("usr/local/nvidia");
    let cdi = d.join("var/run/cdi");
    for p in [&install, &cdi, &d.join("run/nvidia/toolkit")] {
        std::fs::create_dir_all(p).unwrap();
    }
    let vol = |host: &Path, ctr: &str| format!("{}:{ctr}", host.display());
    let env = |k: &str, v: &str| format!("{k}={v}");
    let hp = |p: &Path| p.display().to_string();
    let drop_in_host = etc.join("conf.d/99-nvidia.toml");
    #[rustfmt::skip]
    let args: Vec<String> = vec![
        "run".into(), "-d".into(), "--name".into(), "toolkit".into(),
        // The Operator also asks for --privileged, which needs capabilities a test machine
        // that is itself a container may not hold; the installer needs none beyond the
        // defaults (mknod of the control nodes, kill to signal the engine).
        "--pid=host".into(), "--network=none".into(),
        "-v".into(), vol(&d.join("run/nvidia/toolkit"), "/run/nvidia/toolkit"),
        "-v".into(), vol(&install, &hp(&install)),
        "-v".into(), vol(&etc, "/runtime/config-dir/"),
        "-v".into(), vol(&etc.join("conf.d"), "/runtime/config-dir.d/"),
        "-v".into(), vol(&host.root, &hp(&host.root)),
        "-v".into(), vol(&cdi, "/var/run/cdi"),
        "-e".into(), env("RUNTIME", "containerd"),
        "-e".into(), env("RUNTIME_CONFIG", "/runtime/config-dir/config.toml"),
        "-e".into(), env("RUNTIME_DROP_IN_CONFIG", "/runtime/config-dir.d/99-nvidia.toml"),
        "-e".into(), env("RUNTIME_DROP_IN_CONFIG_HOST_PATH", &hp(&drop_in_host)),
        "-e".into(), env("RUNTIME_RESTART_MODE", "none"),
        "-e".into(), env("TOOLKIT_INSTALL_DIR", &hp(&install)),
        "-e".into(), env("TOOLKIT_PID_FILE", "/run/nvidia/toolkit/toolkit.pid"),
        "-e".into(), env("NVIDIA_DRIVER_ROOT", &hp(&host.root)),
        "-e".into(), env("DRIVER_ROOT_CTR_PATH", &hp(&host.root)),
        "-e".into(), env("NVBOX_PROC_ROOT", &hp(&host.root)),
        "-e".into(), env("NVBOX_SYS_ROOT", &hp(&host.root)),
        "-e".into(), env("CDI_ENABLED", "true"),
        "-e".into(), env("NVIDIA_RUNTIME_SET_AS_DEFAULT", "false"),
        "-e".into(), env("NRI_NAMESPACE", "gpu-operator"),
        IMAGE.into(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = dockerd.docker(&args);
    assert!(run.status.success(), "docker run: {}", stderr(&run));
    wait_for_log(&dockerd, "toolkit", "Waiting for signal");

    // What the Operator's toolkit leaves on the node.
    let tk = install.join("toolkit");
    let installed = std::fs::read(tk.join("nvbox")).unwrap();
    assert_eq!(installed, std::fs::read(static_binary()).unwrap());
    let drop_in = std::fs::read_to_string(&drop_in_host).unwrap();
    assert!(
        drop_in.contains(&format!(
            "BinaryName = \"{}\"",
            tk.join("nvidia-container-runtime").display()
        )),
        "{drop_in}"
    );
    let top_now = std::fs::read_to_string(&top).unwrap();
    assert!(
        top_now.contains(&format!(
            "imports = [\"{}/*.toml\"]",
            etc.join("conf.d").display()
        )),
        "{top_now}"
    );
    let list = Command::new(tk.join("nvidia-ctk"))
        .args(["cdi", "list", "--spec-dir"])
        .arg(&cdi)
        .output()
        .unwrap();
    assert!(
        stdout(&list)
            .lines()
            .any(|l| l == "management.nvidia.com/gpu=all"),
        "{}",
        stderr(&list)
    );

    // The installed toolkit under runc, no environment naming its config.
    let mut bundle = Bundle::new(true);
    bundle.script(&probe_with_env());
    bundle.env(&["NVIDIA_VISIBLE_DEVICES=all"]);
    let want = expected_jit(host, "all", &bundle.rootfs);
    let mut shim = Command::new(tk.join("nvidia-container-runtime"));
    shim.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    let ran = run_shim_with(shim, &mut bundle, &[]);
    assert!(ran.created, "create: {}", ran.create_stderr);
    assert_jit_injected(&parse_probe(&ran.stdout), &want);

    // containerd on the node's config: the runtimes, and a GPU pod on the `nvidia` handler.
    let path = [("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")];
    node::Node::launch(TempDir::new("image-ctrd"), &top, &path).assert_gpu_pod(
        host,
        &script(),
        DONE,
    );

    // `docker stop` (SIGTERM): the node's config as it was, the drop-in gone, exit 0.
    let stop = dockerd.docker(&["stop", "-t", "30", "toolkit"]);
    assert!(stop.status.success(), "docker stop: {}", stderr(&stop));
    let code = dockerd.docker(&["inspect", "-f", "{{.State.ExitCode}}", "toolkit"]);
    let log = dockerd.docker(&["logs", "toolkit"]);
    assert_eq!(stdout(&code).trim(), "0", "{}", stderr(&log));
    assert_eq!(std::fs::read_to_string(&top).unwrap(), before);
    assert!(!drop_in_host.exists());
    assert!(!d.join("run/nvidia/toolkit/toolkit.pid").exists());
}

/// deploy/kubernetes: every variable the DaemonSet sets is one the installer reads (or the
/// container's own NVIDIA_VISIBLE_DEVICES), every path it names is mounted, it runs privileged
/// in the host's PID namespace, and the RuntimeClasses name the runtimes the installer adds.
#[test]
fn kubernetes_manifests_match_the_installer() {
    use serde::Deserialize;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes");
    let help = Command::new(nvbox())
        .args(["nvidia-ctk-installer", "--help"])
        .output()
        .unwrap();
    let help = stdout(&help);
    let text = std::fs::read_to_string(dir.join("toolkit-daemonset.yaml")).unwrap();
    let docs: Vec<serde_json::Value> = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| serde_json::Value::deserialize(d).unwrap())
        .collect();
    let ds = docs.iter().find(|d| d["kind"] == "DaemonSet").unwrap();
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostPID"], true);
    let c = &pod["containers"][0];
    assert_eq!(c["securityContext"]["privileged"], true);
    let mounts: Vec<&str> = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["mountPath"].as_str().unwrap().trim_end_matches('/'))
        .collect();
    for e in c["env"].as_array().unwrap() {
        let name = e["name"].as_str().unwrap();
        let value = e["value"].as_str().unwrap_or("");
        assert!(
            name == "NVIDIA_VISIBLE_DEVICES" || help.contains(&format!("${name}")),
            "{name} is not an installer variable"
        );
        if value.starts_with('/')
            && value != "/"
            && !name.ends_with("HOST_PATH")
            && name != "NVIDIA_DRIVER_ROOT"
        {
            assert!(
                mounts.iter().any(|m| value.starts_with(m)),
                "{name}={value} is not under a mount: {mounts:?}"
            );
        }
    }
    let rc = std::fs::read_to_string(dir.join("runtimeclass.yaml")).unwrap();
    let handlers: Vec<String> = serde_yaml_ng::Deserializer::from_str(&rc)
        .map(|d| {
            serde_json::Value::deserialize(d).unwrap()["handler"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(handlers, ["nvidia", "nvidia-cdi", "nvidia-legacy"]);
}
