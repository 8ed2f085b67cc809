//! `nvbox doctor` on simulated hosts: a healthy set-up reports only `ok` and exits 0; each
//! breakage, made one at a time, gives exactly its `fail`/`warn` line and fix; and the doctor
//! never changes anything it reads (the mock tree and every config file, snapshot before/after).

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::container::{DOCKER, DOCKERD, applet_dir, have_prerequisites};
use common::*;

/// A mock host with config.toml, one generated CDI spec, a daemon.json and a containerd config
/// whose nvidia runtime comes from an imported drop-in — all healthy.
struct Setup {
    dir: TempDir,
    host: PathBuf,
    config: PathBuf,
    cdi: PathBuf,
    spec: PathBuf,
    daemon_json: PathBuf,
    containerd: PathBuf,
}

impl Setup {
    /// None (after SKIP) when not root: the mock's device nodes need mknod.
    fn new() -> Option<Setup> {
        if !is_root() {
            skip_or_fail("nvbox mock needs root for its device nodes");
            return None;
        }
        let dir = TempDir::new("doctor");
        let d = dir.path().to_path_buf();
        let host = d.join("host");
        let config = d.join("config.toml");
        std::fs::write(&config, mock(&host, &["--gpus", "2"])).unwrap();
        let cdi = d.join("cdi");
        std::fs::create_dir_all(&cdi).unwrap();
        let daemon_json = d.join("daemon.json");
        let runtime = applet_dir().join("nvidia-container-runtime");
        let json = serde_json::json!({"runtimes": {"nvidia": {"args": [], "path": runtime}}});
        std::fs::write(&daemon_json, serde_json::to_vec_pretty(&json).unwrap()).unwrap();
        let containerd = d.join("containerd/config.toml");
        std::fs::create_dir_all(d.join("containerd/conf.d")).unwrap();
        std::fs::write(
            &containerd,
            format!(
                "version = 2\nimports = [\"{}/containerd/conf.d/*.toml\"]\n",
                d.display()
            ),
        )
        .unwrap();
        std::fs::write(
            d.join("containerd/conf.d/99-nvidia.toml"),
            format!(
                "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.nvidia]\nruntime_type = \"io.containerd.runc.v2\"\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.nvidia.options]\nBinaryName = \"{}\"\n",
                runtime.display()
            ),
        )
        .unwrap();
        let s = Setup {
            spec: cdi.join("nvidia.json"),
            dir,
            host,
            config,
            cdi,
            daemon_json,
            containerd,
        };
        s.generate_spec();
        Some(s)
    }

    fn env_path() -> String {
        format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", applet_dir().display())
    }

    /// `nvidia-ctk cdi generate --output=SPEC` for the mock host: also the fix the doctor gives.
    fn generate_spec(&self) {
        let out = command(nvbox())
            .env("NVIDIA_CTK_CONFIG_FILE_PATH", &self.config)
            .args(["nvidia-ctk", "cdi", "generate", "--format", "json"])
            .arg(format!("--output={}", self.spec.display()))
            .output()
            .unwrap();
        assert!(out.status.success(), "cdi generate: {}", stderr(&out));
    }

    /// The doctor's exit code and lines, the roots given explicitly so that a broken
    /// config.toml does not send it to the real host.
    fn doctor(&self, extra: &[&str]) -> (i32, Vec<String>) {
        let h = self.host.to_str().unwrap();
        let out = command(nvbox())
            .env("NVIDIA_CTK_CONFIG_FILE_PATH", &self.config)
            .env("PATH", Self::env_path())
            .arg("doctor")
            .args([
                "--root",
                h,
                "--dev-root",
                h,
                "--proc-root",
                h,
                "--sys-root",
                h,
            ])
            .arg(format!("--docker-config={}", self.daemon_json.display()))
            .arg(format!("--containerd-config={}", self.containerd.display()))
            .arg(format!("--cdi-spec-dirs={}", self.cdi.display()))
            .args(extra)
            .output()
            .unwrap();
        assert!(stderr(&out).is_empty(), "stderr: {}", stderr(&out));
        let lines = stdout(&out).lines().map(str::to_string).collect();
        (out.status.code().unwrap(), lines)
    }

    /// Every file under the scratch dir (mock tree and configs): kind, size, mtime, mode, rdev,
    /// content hash of regular files, link target.
    fn snapshot(&self) -> BTreeMap<PathBuf, String> {
        fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, String>) {
            for e in std::fs::read_dir(dir).unwrap().flatten() {
                let p = e.path();
                let m = std::fs::symlink_metadata(&p).unwrap();
                let mut v = format!(
                    "{:o} {} {} {}.{}",
                    m.mode(),
                    m.len(),
                    m.rdev(),
                    m.mtime(),
                    m.mtime_nsec()
                );
                if m.file_type().is_symlink() {
                    v += &format!(" -> {}", std::fs::read_link(&p).unwrap().display());
                } else if m.is_file() {
                    let bytes = std::fs::read(&p).unwrap();
                    let sum = bytes.iter().fold(0xcbf29ce484222325u64, |h, b| {
                        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
                    });
                    v += &format!(" {sum:x}");
                }
                out.insert(p.clone(), v);
                if m.is_dir() {
                    walk(&p, out);
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(self.dir.path(), &mut out);
        out
    }

    /// The doctor with a snapshot around it: nothing it reads may change.
    fn doctor_read_only(&self, extra: &[&str]) -> (i32, Vec<String>) {
        let before = self.snapshot();
        let got = self.doctor(extra);
        assert_eq!(before, self.snapshot(), "the doctor changed files");
        got
    }
}

fn not_ok(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .filter(|l| !l.starts_with("ok "))
        .cloned()
        .collect()
}

fn assert_healthy(code: i32, lines: &[String]) {
    assert_eq!(
        not_ok(lines),
        Vec::<String>::new(),
        "all lines:\n{}",
        lines.join("\n")
    );
    assert_eq!(code, 0);
    for check in [
        "driver version",
        "device nodes",
        "ModifyDeviceFiles",
        "GPUs",
        "persistence daemon",
        "config.toml",
        "applets on PATH",
        "CDI specs",
        "docker runtime",
        "containerd runtime",
        "cgroups",
    ] {
        let prefix = format!("ok    {check}  — ");
        assert!(
            lines.iter().any(|l| l.starts_with(&prefix)),
            "no ok line for {check}:\n{}",
            lines.join("\n")
        );
    }
}

#[test]
fn healthy_host_is_all_ok_and_json_agrees() {
    let Some(s) = Setup::new() else { return };
    let (code, lines) = s.doctor_read_only(&[]);
    assert_healthy(code, &lines);
    let (code, json) = s.doctor_read_only(&["--json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&json.join("\n")).unwrap();
    let items = v.as_array().unwrap();
    assert_eq!(items.len(), lines.len());
    for (item, line) in items.iter().zip(&lines) {
        assert_eq!(item["status"], "ok");
        assert_eq!(item["fix"], "");
        let check = item["check"].as_str().unwrap();
        let message = item["message"].as_str().unwrap();
        assert_eq!(*line, format!("ok    {check}  — {message}"));
    }
}

#[test]
fn wrong_device_major() {
    use nix::sys::stat::{Mode, SFlag, makedev, mknod};
    let Some(s) = Setup::new() else { return };
    let node = s.host.join("dev/nvidiactl");
    std::fs::remove_file(&node).unwrap();
    mknod(
        &node,
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o666),
        makedev(196, 255),
    )
    .unwrap();
    let (code, lines) = s.doctor_read_only(&[]);
    let h = s.host.display();
    assert_eq!(
        not_ok(&lines),
        [format!(
            "fail  device node /dev/nvidiactl  — {h}/dev/nvidiactl is 196:255 but the driver registered 195:255 (/proc/devices): containers get a device that is not the GPU's; fix: nvidia-ctk system create-device-nodes --control-devices --dev-root={h} --proc-root={h}"
        )]
    );
    assert_eq!(code, 1);
    // The fix, run as printed, repairs it.
    let out = command(nvbox())
        .args([
            "nvidia-ctk",
            "system",
            "create-device-nodes",
            "--control-devices",
        ])
        .arg(format!("--dev-root={h}"))
        .arg(format!("--proc-root={h}"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let (code, lines) = s.doctor(&[]);
    assert_healthy(code, &lines);
}

#[test]
fn missing_uvm_node_and_no_persistenced() {
    let Some(s) = Setup::new() else { return };
    std::fs::remove_file(s.host.join("dev/nvidia-uvm-tools")).unwrap();
    std::fs::remove_file(s.host.join("run/nvidia-persistenced/socket")).unwrap();
    let (code, lines) = s.doctor_read_only(&[]);
    let h = s.host.display();
    assert_eq!(
        not_ok(&lines),
        [
            format!(
                "fail  device node /dev/nvidia-uvm-tools  — {h}/dev/nvidia-uvm-tools is missing or not a character device: containers cannot reach the GPU; fix: nvidia-ctk system create-device-nodes --control-devices --dev-root={h} --proc-root={h}"
            ),
            format!(
                "warn  persistence daemon  — {h}/run/nvidia-persistenced/socket absent: without persistence mode every container start initialises the GPUs again (seconds each); fix: systemctl enable --now nvidia-persistenced"
            ),
        ]
    );
    assert_eq!(code, 1);
}

#[test]
fn config_toml_syntax_error() {
    let Some(s) = Setup::new() else { return };
    let mut text = std::fs::read_to_string(&s.config).unwrap();
    let line = text.lines().count() + 1;
    text.push_str("[nvidia-container-runtime\n");
    std::fs::write(&s.config, text).unwrap();
    let (code, lines) = s.doctor_read_only(&[]);
    let bad = not_ok(&lines);
    assert_eq!(bad.len(), 1, "{bad:#?}");
    let c = s.config.display();
    let head = format!("fail  config.toml  — {c}:{line}: invalid config: ");
    let tail = format!(
        ": every nvbox applet refuses to start; fix: correct that line in {c}, or start over with: nvidia-ctk config default --output={c}"
    );
    assert!(
        bad[0].starts_with(&head) && bad[0].ends_with(&tail),
        "{}",
        bad[0]
    );
    assert_eq!(code, 1);
}

#[test]
fn duplicate_cdi_device() {
    let Some(s) = Setup::new() else { return };
    let extra = s.cdi.join("zz-extra.json");
    std::fs::write(
        &extra,
        r#"{"cdiVersion":"0.5.0","kind":"nvidia.com/gpu","devices":[{"name":"0","containerEdits":{"deviceNodes":[{"path":"/dev/nvidia0"}]}}]}"#,
    )
    .unwrap();
    let (code, lines) = s.doctor_read_only(&[]);
    let (e, n) = (extra.display(), s.spec.display());
    assert_eq!(
        not_ok(&lines),
        [format!(
            "fail  CDI duplicate device  — conflicting device \"nvidia.com/gpu=0\" (specs \"{e}\", \"{n}\"): the device is dropped, requests fail with `unresolvable CDI devices nvidia.com/gpu=0`; fix: rm {e} (one spec per device and directory)"
        )]
    );
    assert_eq!(code, 1);
    // The same device in a higher-priority directory overrides instead: no conflict.
    let later = s.dir.path().join("cdi-run");
    std::fs::create_dir_all(&later).unwrap();
    std::fs::rename(&extra, later.join("zz-extra.json")).unwrap();
    let dirs = format!("--cdi-spec-dirs={},{}", s.cdi.display(), later.display());
    let (code, lines) = s.doctor(&[&dirs]);
    assert_healthy(code, &lines);
}

#[test]
fn stale_cdi_spec_after_driver_upgrade() {
    let Some(s) = Setup::new() else { return };
    mock(&s.host, &["--gpus", "2", "--driver-version", "550.54.14"]);
    let (code, lines) = s.doctor_read_only(&[]);
    let spec = s.spec.display();
    assert_eq!(
        not_ok(&lines),
        [format!(
            "fail  CDI spec {spec}  — stale: libraries of driver 535.104.05 mounted, the loaded driver is 550.54.14; containers fail to start or get the wrong device; fix: nvidia-ctk cdi generate --output={spec}"
        )]
    );
    assert_eq!(code, 1);
    s.generate_spec();
    let (code, lines) = s.doctor(&[]);
    assert_healthy(code, &lines);
}

#[test]
fn stale_cdi_spec_device_number() {
    let Some(s) = Setup::new() else { return };
    // A spec from a boot where the dynamic uvm major was another one.
    let text = std::fs::read_to_string(&s.spec).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let nodes = v["containerEdits"]["deviceNodes"].as_array_mut().unwrap();
    let uvm = nodes
        .iter_mut()
        .find(|n| n["path"] == "/dev/nvidia-uvm")
        .unwrap();
    uvm["major"] = serde_json::json!(504);
    std::fs::write(&s.spec, serde_json::to_vec(&v).unwrap()).unwrap();
    let (code, lines) = s.doctor_read_only(&[]);
    let (spec, h) = (s.spec.display(), s.host.display());
    assert_eq!(
        not_ok(&lines),
        [format!(
            "fail  CDI spec {spec}  — stale: {h}/dev/nvidia-uvm is 505:0 on the host, 504:0 in the spec; containers fail to start or get the wrong device; fix: nvidia-ctk cdi generate --output={spec}"
        )]
    );
    assert_eq!(code, 1);
}

#[test]
fn docker_and_containerd_configs_without_the_runtime() {
    let Some(s) = Setup::new() else { return };
    std::fs::write(&s.daemon_json, "{\"default-runtime\": \"runc\"}\n").unwrap();
    std::fs::remove_file(s.dir.path().join("containerd/conf.d/99-nvidia.toml")).unwrap();
    let (code, lines) = s.doctor_read_only(&[]);
    let (j, c) = (s.daemon_json.display(), s.containerd.display());
    assert_eq!(
        not_ok(&lines),
        [
            format!(
                "fail  docker runtime  — {j} has no runtimes.nvidia: `docker run --runtime=nvidia` fails with `unknown or invalid runtime name: nvidia`; fix: nvidia-ctk runtime configure --runtime=docker --config={j} && systemctl restart docker"
            ),
            format!(
                "fail  containerd runtime  — no nvidia runtime in {c} (version 2): `unknown runtime handler nvidia` / `runtime \"nvidia\" binary not installed`; fix: nvidia-ctk runtime configure --runtime=containerd --config={c} && systemctl restart containerd"
            ),
        ]
    );
    assert_eq!(code, 1);
}

#[test]
fn applet_missing_from_path() {
    let Some(s) = Setup::new() else { return };
    let h = s.host.to_str().unwrap();
    // Only the applets' directory is searched, and it lacks one applet.
    let bin = s.dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for e in std::fs::read_dir(applet_dir()).unwrap().flatten() {
        if e.file_name() != "nvidia-docker" {
            std::os::unix::fs::symlink(
                std::fs::read_link(e.path()).unwrap(),
                bin.join(e.file_name()),
            )
            .unwrap();
        }
    }
    let out = command(nvbox())
        .env("NVIDIA_CTK_CONFIG_FILE_PATH", &s.config)
        .env("PATH", &bin)
        .args([
            "doctor",
            "--root",
            h,
            "--dev-root",
            h,
            "--proc-root",
            h,
            "--sys-root",
            h,
        ])
        .arg(format!("--docker-config={}", s.daemon_json.display()))
        .arg(format!("--containerd-config={}", s.containerd.display()))
        .arg(format!("--cdi-spec-dirs={}", s.cdi.display()))
        .output()
        .unwrap();
    let lines: Vec<String> = stdout(&out).lines().map(str::to_string).collect();
    let bad = not_ok(&lines);
    let want = "fail  applets on PATH  — nvidia-docker not found on PATH: engines and hooks exec them by name; fix: for a in nvidia-docker; do ln -s ";
    assert_eq!(bad.len(), 1, "{bad:#?}");
    assert!(
        bad[0].starts_with(want) && bad[0].ends_with(" /usr/local/bin/$a; done"),
        "{}",
        bad[0]
    );
    assert_eq!(out.status.code(), Some(1));
}

/// A private dockerd reading `config`, with exactly `path` as its PATH; stopped on drop.
struct Dockerd {
    dir: TempDir,
    child: Child,
}

impl Dockerd {
    fn start(config: &Path, path: &str) -> Dockerd {
        let dir = TempDir::new("doctor-dockerd");
        let d = dir.path();
        let socket = format!("unix://{}/docker.sock", d.display());
        let log = std::fs::File::create(d.join("dockerd.log")).unwrap();
        let child = Command::new(DOCKERD)
            .args(["--iptables=false", "--ip6tables=false", "--bridge=none"])
            .args(["--storage-driver=vfs", "-H", &socket])
            .arg("--config-file")
            .arg(config)
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("pid"))
            .env_clear()
            .env("PATH", path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let daemon = Dockerd { dir, child };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let up = Command::new(DOCKER)
                .env("DOCKER_CONFIG", daemon.dir.path().join("client"))
                .args(["-H", &socket, "version"])
                .output()
                .unwrap();
            if up.status.success() {
                return daemon;
            }
            let log =
                std::fs::read_to_string(daemon.dir.path().join("dockerd.log")).unwrap_or_default();
            assert!(Instant::now() < deadline, "dockerd did not come up:\n{log}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;
        let containerd: Option<i32> =
            std::fs::read_to_string(self.dir.path().join("exec/containerd/containerd.pid"))
                .ok()
                .and_then(|t| t.trim().parse().ok());
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline && self.child.try_wait().ok().flatten().is_none() {
            std::thread::sleep(Duration::from_millis(50));
        }
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if let Some(c) = containerd {
            let comm = std::fs::read_to_string(format!("/proc/{c}/comm")).unwrap_or_default();
            if comm.trim() == "containerd" {
                let _ = kill(Pid::from_raw(c), Signal::SIGKILL);
            }
        }
    }
}

#[test]
fn running_dockerd_path_and_restart() {
    if !have_prerequisites(&[DOCKERD, DOCKER]) {
        return;
    }
    let Some(s) = Setup::new() else { return };
    // Healthy: the hook on dockerd's PATH, daemon.json older than dockerd.
    let good = Dockerd::start(&s.daemon_json, &Setup::env_path());
    let started = Instant::now();
    let (code, lines) = s.doctor_read_only(&[]);
    assert_healthy(code, &lines);
    let (j, pid) = (s.daemon_json.display(), good.pid());
    let hook = applet_dir().join("nvidia-container-runtime-hook");
    assert!(
        lines.contains(&format!(
            "ok    dockerd PATH  — dockerd (pid {pid}) finds {}",
            hook.display()
        )),
        "{lines:#?}"
    );
    assert!(
        lines.contains(&format!(
            "ok    dockerd restart  — dockerd (pid {pid}) started after {j}'s last change"
        )),
        "{lines:#?}"
    );
    // daemon.json changed while dockerd runs: a warning, the exit status still 0.
    std::thread::sleep(Duration::from_millis(1500).saturating_sub(started.elapsed()));
    let text = std::fs::read(&s.daemon_json).unwrap();
    std::fs::write(&s.daemon_json, text).unwrap();
    let (code, lines) = s.doctor_read_only(&[]);
    assert_eq!(
        not_ok(&lines),
        [format!(
            "warn  dockerd restart  — {j} changed after dockerd (pid {pid}) started: the running daemon does not see the change (`unknown or invalid runtime name: nvidia`); fix: systemctl restart docker (or kill -HUP {pid}, which reloads runtimes)"
        )]
    );
    assert_eq!(code, 0);
    drop(good);

    // A dockerd whose PATH lacks the hook: `--gpus` cannot work.
    let bare = "/usr/sbin:/usr/bin:/sbin:/bin";
    let bad = Dockerd::start(&s.daemon_json, bare);
    let pid = bad.pid();
    let (code, lines) = s.doctor_read_only(&[]);
    assert_eq!(
        not_ok(&lines),
        [format!(
            "fail  dockerd PATH  — nvidia-container-runtime-hook is not on the PATH of dockerd (pid {pid}, PATH={bare}): `docker run --gpus` fails with `could not select device driver \"\" with capabilities: [[gpu]]`; fix: ln -s $(command -v nvidia-container-runtime-hook) /usr/bin/nvidia-container-runtime-hook (or add its directory to dockerd's PATH), then systemctl restart docker"
        )]
    );
    assert_eq!(code, 1);
}

#[test]
fn stale_cdi_spec_lists_a_gpu_the_host_lost() {
    let Some(s) = Setup::new() else { return };
    // GPU minor 1 falls off the bus: the driver lists one GPU and its node is gone.
    let gpus = s.host.join("proc/driver/nvidia/gpus");
    for e in std::fs::read_dir(&gpus).unwrap().flatten() {
        let info = std::fs::read_to_string(e.path().join("information")).unwrap();
        let minor = info
            .lines()
            .find_map(|l| l.strip_prefix("Device Minor:"))
            .unwrap()
            .trim();
        if minor == "1" {
            std::fs::remove_dir_all(e.path()).unwrap();
        }
    }
    std::fs::remove_file(s.host.join("dev/nvidia1")).unwrap();
    let (code, lines) = s.doctor_read_only(&[]);
    let (spec, h) = (s.spec.display(), s.host.display());
    assert_eq!(
        not_ok(&lines),
        [format!(
            "fail  CDI spec {spec}  — stale: {h}/dev/nvidia1 is not a device node on the host; containers fail to start or get the wrong device; fix: nvidia-ctk cdi generate --output={spec}"
        )]
    );
    assert!(lines.contains(&"ok    GPUs  — 1 listed in /proc/driver/nvidia/gpus".to_string()));
    assert_eq!(code, 1);
    s.generate_spec();
    let (code, lines) = s.doctor(&[]);
    assert_healthy(code, &lines);
}

#[test]
fn config_toml_root_that_does_not_exist() {
    let Some(s) = Setup::new() else { return };
    let text = std::fs::read_to_string(&s.config).unwrap();
    let moved = text.replace(
        &format!("sys-root = \"{}\"", s.host.display()),
        "sys-root = \"/nonexistent/nvbox-doctor/sys\"",
    );
    assert_ne!(text, moved, "the mock's config.toml sets sys-root");
    std::fs::write(&s.config, moved).unwrap();
    let (code, lines) = s.doctor_read_only(&[]);
    let c = s.config.display();
    assert_eq!(
        not_ok(&lines),
        [format!(
            "fail  config.toml nvbox.sys-root  — \"/nonexistent/nvbox-doctor/sys\" is not a directory: every GPU lookup fails; fix: nvidia-ctk config --config-file={c} --in-place --set nvbox.sys-root=<existing directory>"
        )]
    );
    assert_eq!(code, 1);
}
