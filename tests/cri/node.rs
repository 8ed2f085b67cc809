//! A Kubernetes node in miniature: a private containerd whose CRI plugin knows the `nvidia`
//! handler only from what `nvidia-ctk runtime configure` wrote, images imported offline from
//! hand-made OCI layouts, and pods driven through the CRI socket as the kubelet drives them.

use super::api::*;
use crate::common::container::*;
use crate::common::engines::{CTR, assert_jit_injected, expected_jit};
use crate::common::*;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const IMAGE: &str = "nvbox.test/busybox:1";
/// The sandbox (pause) image: the same busybox, whose default command sleeps.
pub const PAUSE_IMAGE: &str = "nvbox.test/pause:1";
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub struct Node {
    dir: TempDir,
    child: Child,
    socket: PathBuf,
    pub cri: Cri,
    sandboxes: Vec<String>,
    /// The image's root filesystem as built, before any container ran: its library dirs.
    pub rootfs: PathBuf,
}

/// Where `runtime configure` reads the config it copies into the drop-in.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Source {
    /// The top-level file itself.
    File,
    /// `containerd --config TOP config dump`: the file merged with containerd's defaults.
    Command,
}

/// One container's identity and where its log lands.
pub struct Started {
    pub id: String,
    pub log: PathBuf,
}

impl Node {
    /// containerd on a fresh top-level config plus our drop-in, its shim chain reading
    /// `shim_config`, the images imported.
    pub fn start(shim_config: &Path, source: Source) -> Node {
        let dir = TempDir::new("cri");
        let d = dir.path().to_path_buf();
        let top = write_top_level(&d, source);
        let runtime = applet_dir().join("nvidia-container-runtime");
        let mut configure = command(nvbox());
        configure
            .args(["nvidia-ctk", "runtime", "configure", "--runtime=containerd"])
            .arg(format!("--config={}", top.display()))
            .arg(format!(
                "--drop-in-config={}/conf.d/99-nvidia.toml",
                d.display()
            ))
            .arg(format!("--nvidia-runtime-path={}", runtime.display()));
        if source == Source::Command {
            configure.args([
                "--config-source=command",
                &format!("--executable-path={CONTAINERD}"),
            ]);
        }
        let out = configure.output().unwrap();
        assert!(out.status.success(), "runtime configure: {}", stderr(&out));
        let path = format!("{}:{PATH}", applet_dir().display());
        Node::launch(
            dir,
            &top,
            &[
                ("PATH", &path),
                (
                    "NVIDIA_CTK_CONFIG_FILE_PATH",
                    &shim_config.display().to_string(),
                ),
            ],
        )
    }

    /// containerd on `top` (already configured by whoever made it) in `dir`, with only `env`
    /// in its environment, the images imported.
    pub fn launch(dir: TempDir, top: &Path, env: &[(&str, &str)]) -> Node {
        let d = dir.path().to_path_buf();
        let socket = d.join("containerd.sock");
        let log = std::fs::File::create(d.join("containerd.log")).unwrap();
        let child = Command::new(CONTAINERD)
            .arg("--config")
            .arg(top)
            .arg("--root")
            .arg(d.join("root"))
            .arg("--state")
            .arg(d.join("state"))
            .arg("--address")
            .arg(&socket)
            .env_clear()
            // The shim chain inherits this.
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let rootfs = d.join("image/rootfs");
        let mut node = Node {
            cri: Cri::connect(socket.clone()).unwrap(),
            dir,
            child,
            socket,
            sandboxes: Vec::new(),
            rootfs,
        };
        node.wait_ready();
        node.import_images();
        node
    }

    /// What a toolkit install must give a node: the CRI plugin lists the `nvidia`,
    /// `nvidia-cdi` and `nvidia-legacy` handlers, and a pod on `nvidia` with
    /// NVIDIA_VISIBLE_DEVICES=all running `script` (which prints `done` when it has probed)
    /// gets `host`'s driver as jit-cdi gives it. The pod is removed, the node stopped.
    // cri.rs includes this module but installs no toolkit.
    #[allow(dead_code)]
    pub fn assert_gpu_pod(mut self, host: &Host, script: &str, done: &str) {
        let status: StatusResponse = self
            .cri
            .runtime("Status", StatusRequest { verbose: true })
            .unwrap();
        let config = status.info.get("config").cloned().unwrap_or_default();
        for rt in ["\"nvidia\"", "\"nvidia-cdi\"", "\"nvidia-legacy\""] {
            assert!(
                config.contains(rt),
                "CRI status lacks runtime {rt}:\n{config}"
            );
        }
        let pod = self.run_pod("gpu-pod");
        let all = [("NVIDIA_VISIBLE_DEVICES", "all")];
        let c = self.start_container(&pod, "all", &all, script);
        let want = expected_jit(host, "all", &self.rootfs);
        let out = self.wait_output(&c, done);
        assert_jit_injected(&parse_probe(&out), &want);
        self.remove_pod(&pod.0)
            .unwrap_or_else(|e| panic!("stop/remove pod: {e}\n{}", self.log()));
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path().join("containerd.log")).unwrap_or_default()
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let got: Result<VersionResponse, _> =
                self.cri.runtime("Version", VersionRequest::default());
            match got {
                Ok(v) if !v.runtime_api_version.is_empty() => return,
                Ok(_) | Err(_) => {}
            }
            assert!(
                self.child.try_wait().unwrap().is_none(),
                "containerd exited:\n{}",
                self.log()
            );
            assert!(
                Instant::now() < deadline,
                "containerd did not come up:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Both names of one busybox image, as an OCI layout tarball, through `ctr image import`.
    fn import_images(&mut self) {
        let image = self.path().join("image");
        let layout = image.join("layout");
        make_rootfs(&self.rootfs, true);
        std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
        let layer = image.join("layer.tar");
        run(Command::new("tar")
            .args(["--numeric-owner", "--owner=0", "--group=0", "-C"])
            .arg(&self.rootfs)
            .arg("-cf")
            .arg(&layer)
            .arg("."));
        let layer_desc = add_blob(
            &layout,
            &std::fs::read(&layer).unwrap(),
            "application/vnd.oci.image.layer.v1.tar",
        );
        let config = json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {"Env": [format!("PATH={PATH}")], "Cmd": ["sleep", "1000000"]},
            "rootfs": {"type": "layers", "diff_ids": [layer_desc["digest"]]},
        });
        let config_desc = add_blob(
            &layout,
            config.to_string().as_bytes(),
            "application/vnd.oci.image.config.v1+json",
        );
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config_desc,
            "layers": [layer_desc],
        });
        let manifest_desc = add_blob(
            &layout,
            manifest.to_string().as_bytes(),
            "application/vnd.oci.image.manifest.v1+json",
        );
        let named = |name: &str| {
            let mut d = manifest_desc.clone();
            d["platform"] = json!({"architecture": "amd64", "os": "linux"});
            d["annotations"] = json!({
                "io.containerd.image.name": name,
                "org.opencontainers.image.ref.name": name.rsplit(':').next().unwrap(),
            });
            d
        };
        let index = json!({"schemaVersion": 2, "manifests": [named(IMAGE), named(PAUSE_IMAGE)]});
        std::fs::write(layout.join("index.json"), index.to_string()).unwrap();
        std::fs::write(
            layout.join("oci-layout"),
            r#"{"imageLayoutVersion":"1.0.0"}"#,
        )
        .unwrap();
        let tarball = image.join("image.tar");
        run(Command::new("tar")
            .arg("-C")
            .arg(&layout)
            .arg("-cf")
            .arg(&tarball)
            .arg("."));
        run(Command::new(CTR)
            .arg("--address")
            .arg(&self.socket)
            .args(["-n", "k8s.io", "images", "import"])
            .arg(&tarball));
        // The CRI plugin learns of imported images from containerd's events.
        for name in [IMAGE, PAUSE_IMAGE] {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let req = ImageStatusRequest {
                    image: Some(ImageSpec { image: name.into() }),
                };
                let got: ImageStatusResponse = self
                    .cri
                    .call("ImageService", "ImageStatus", req)
                    .unwrap_or_else(|e| panic!("ImageStatus {name}: {e}"));
                if got.image.is_some() {
                    break;
                }
                assert!(Instant::now() < deadline, "CRI never saw {name}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// A pod on the `nvidia` handler in the host's network namespace.
    pub fn run_pod(&mut self, name: &str) -> (String, PodSandboxConfig) {
        let logs = self.path().join("pods").join(name);
        std::fs::create_dir_all(&logs).unwrap();
        let config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.into(),
                uid: format!("uid-{name}"),
                namespace: "default".into(),
                attempt: 0,
            }),
            // No hostname: a host-network pod keeps the node's (runc sets none without a UTS ns).
            log_directory: logs.display().to_string(),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: String::new(),
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        network: NAMESPACE_NODE,
                        ..Default::default()
                    }),
                }),
            }),
        };
        let req = RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: "nvidia".into(),
        };
        let got: Result<RunPodSandboxResponse, _> = self.cri.runtime("RunPodSandbox", req);
        let id = got
            .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", self.log()))
            .pod_sandbox_id;
        self.sandboxes.push(id.clone());
        (id, config)
    }

    /// CreateContainer + StartContainer in a pod: busybox running `script` with `env`.
    pub fn start_container(
        &mut self,
        pod: &(String, PodSandboxConfig),
        name: &str,
        env: &[(&str, &str)],
        script: &str,
    ) -> Started {
        let config = ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: name.into(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: IMAGE.into(),
            }),
            command: vec!["sh".into(), "-c".into(), script.into()],
            envs: env
                .iter()
                .map(|(k, v)| KeyValue {
                    key: k.to_string(),
                    value: v.to_string(),
                })
                .collect(),
            log_path: format!("{name}.log"),
        };
        let req = CreateContainerRequest {
            pod_sandbox_id: pod.0.clone(),
            config: Some(config),
            sandbox_config: Some(pod.1.clone()),
        };
        let got: Result<ContainerIdMessage, _> = self.cri.runtime("CreateContainer", req);
        let id = got
            .unwrap_or_else(|e| panic!("CreateContainer {name}: {e}\n{}", self.log()))
            .container_id;
        let started: Result<Empty, _> = self.cri.runtime(
            "StartContainer",
            ContainerIdMessage {
                container_id: id.clone(),
            },
        );
        if let Err(e) = started {
            panic!("StartContainer {name}: {e}\n{}", self.log());
        }
        let log = Path::new(&pod.1.log_directory).join(format!("{name}.log"));
        Started { id, log }
    }

    pub fn status(&mut self, id: &str) -> ContainerStatus {
        let req = ContainerIdMessage {
            container_id: id.into(),
        };
        let got: ContainerStatusResponse = self
            .cri
            .runtime("ContainerStatus", req)
            .unwrap_or_else(|e| panic!("ContainerStatus: {e}"));
        got.status.expect("ContainerStatus without a status")
    }

    /// The container's stdout from its CRI log, once it holds `marker` (partial lines joined).
    pub fn wait_output(&mut self, c: &Started, marker: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = read_cri_log(&c.log, "stdout");
            if out.contains(marker) {
                return out;
            }
            let status = self.status(&c.id);
            assert!(
                status.state != CONTAINER_EXITED,
                "container exited ({} {}: {}) without {marker}:\n{out}\n{}",
                status.exit_code,
                status.reason,
                status.message,
                read_cri_log(&c.log, "stderr")
            );
            assert!(Instant::now() < deadline, "no {marker} in:\n{out}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn exec(&mut self, id: &str, cmd: &[&str]) -> ExecSyncResponse {
        let req = ExecSyncRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout: 30,
        };
        let got: ExecSyncResponse = self
            .cri
            .runtime("ExecSync", req)
            .unwrap_or_else(|e| panic!("ExecSync {cmd:?}: {e}"));
        assert_eq!(got.exit_code, 0, "exec {cmd:?}: {}", text(&got.stderr));
        got
    }

    /// StopPodSandbox + RemovePodSandbox, which take the pod's containers with them.
    pub fn remove_pod(&mut self, id: &str) -> Result<(), tonic::Status> {
        let req = PodSandboxIdRequest {
            pod_sandbox_id: id.into(),
        };
        let _: Empty = self.cri.runtime("StopPodSandbox", req.clone())?;
        let _: Empty = self.cri.runtime("RemovePodSandbox", req)?;
        self.sandboxes.retain(|s| s != id);
        Ok(())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;
        for id in self.sandboxes.clone() {
            let _ = self.remove_pod(&id);
        }
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline && self.child.try_wait().ok().flatten().is_none() {
            std::thread::sleep(Duration::from_millis(50));
        }
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // Shims of pods a failed test left behind outlive containerd: they name our socket.
        for pid in shims_of(&self.socket) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// A node's top-level config in `d`: offline sandbox image, no CNI. The drop-in replaces the
/// CRI plugin's `runtimes` map as a whole (containerd < 2.1 merges imports by key), so a file
/// source must already declare runc, as a node's config from `containerd config default`
/// does; `config dump` adds the defaults itself. restrict_oom_score_adj: the sandbox's -998
/// needs CAP_SYS_RESOURCE, which a test run inside a container may lack.
pub fn write_top_level(d: &Path, source: Source) -> PathBuf {
    let top = d.join("config.toml");
    let runc = match source {
        Source::File => {
            "  [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\n    \
             runtime_type = \"io.containerd.runc.v2\"\n"
        }
        Source::Command => "",
    };
    std::fs::write(
        &top,
        format!(
            "version = 2\n\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  \
             sandbox_image = \"{PAUSE_IMAGE}\"\n  restrict_oom_score_adj = true\n  \
             [plugins.\"io.containerd.grpc.v1.cri\".containerd]\n    \
             snapshotter = \"overlayfs\"\n{runc}  \
             [plugins.\"io.containerd.grpc.v1.cri\".cni]\n    \
             bin_dir = \"{0}/cni/bin\"\n    conf_dir = \"{0}/cni/conf\"\n",
            d.display()
        ),
    )
    .unwrap();
    top
}

/// Processes whose command line names `socket` (containerd-shim-runc-v2 -address SOCKET …).
fn shims_of(socket: &Path) -> Vec<i32> {
    let want = socket.as_os_str().as_encoded_bytes();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            cmdline.starts_with(b"/usr/bin/containerd-shim")
                && cmdline.split(|b| *b == 0).any(|arg| arg == want)
        })
        .collect()
}

/// The text of one stream of a CRI log (`TIMESTAMP STREAM TAG TEXT`, tag P for a partial line).
pub fn read_cri_log(path: &Path, stream: &str) -> String {
    let raw = std::fs::read_to_string(path).unwrap_or_default();
    let mut out = String::new();
    for line in raw.lines() {
        let mut f = line.splitn(4, ' ');
        let (_, s, tag, text) = (f.next(), f.next(), f.next(), f.next().unwrap_or(""));
        if s != Some(stream) {
            continue;
        }
        out.push_str(text);
        if tag != Some("P") {
            out.push('\n');
        }
    }
    out
}

/// Store `data` as a blob of an OCI layout; its descriptor.
fn add_blob(layout: &Path, data: &[u8], media_type: &str) -> Value {
    let tmp = layout.join("blob.tmp");
    std::fs::write(&tmp, data).unwrap();
    let out = run(Command::new("sha256sum").arg(&tmp));
    let hex = out.split_whitespace().next().unwrap().to_string();
    std::fs::rename(&tmp, layout.join("blobs/sha256").join(&hex)).unwrap();
    json!({"mediaType": media_type, "digest": format!("sha256:{hex}"), "size": data.len()})
}

/// Run a helper program that must succeed; its stdout.
fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", stderr(&out));
    stdout(&out)
}
