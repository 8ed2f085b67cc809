//! The doctor's test host: a mock GPU host with healthy engine configs, the doctor run against
//! it, and a snapshot of every file it could have touched.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use crate::common::container::applet_dir;
use crate::common::*;
/// A mock host with config.toml, one generated CDI spec, a daemon.json and a containerd config
/// whose nvidia runtime comes from an imported drop-in — all healthy.
pub struct Setup {
    pub dir: TempDir,
    pub host: PathBuf,
    pub config: PathBuf,
    pub cdi: PathBuf,
    pub spec: PathBuf,
    pub daemon_json: PathBuf,
    pub containerd: PathBuf,
    pub crio: PathBuf,
}

/// The doctor reads the real process table (rootless engines); a test that plants a process
/// there takes this for writing, every doctor run for reading.
pub static PROCESS_TABLE: RwLock<()> = RwLock::new(());

impl Setup {
    /// None (after SKIP) when not root: the mock's device nodes need mknod.
    pub fn new() -> Option<Setup> {
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
        // cgroupfs explicitly: dockerd's default depends on the host (systemd on cgroup v2),
        // and the systemd case has a test of its own.
        let json = serde_json::json!({
            "exec-opts": ["native.cgroupdriver=cgroupfs"],
            "runtimes": {"nvidia": {"args": [], "path": runtime}}
        });
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
        let crio = d.join("crio/crio.conf");
        std::fs::create_dir_all(d.join("crio/crio.conf.d")).unwrap();
        // No hooks_dir: the host's own must not decide the crio check.
        std::fs::write(&crio, "[crio.runtime]\nhooks_dir = []\n").unwrap();
        std::fs::write(
            d.join("crio/crio.conf.d/99-nvidia.toml"),
            format!(
                "[crio.runtime.runtimes.nvidia]\nruntime_path = \"{}\"\nruntime_type = \"oci\"\n",
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
            crio,
        };
        s.generate_spec();
        Some(s)
    }

    pub fn env_path() -> String {
        format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", applet_dir().display())
    }

    /// `nvidia-ctk cdi generate --output=SPEC` for the mock host: also the fix the doctor gives.
    pub fn generate_spec(&self) {
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
    pub fn doctor(&self, extra: &[&str]) -> (i32, Vec<String>) {
        let _table = PROCESS_TABLE.read().unwrap_or_else(|e| e.into_inner());
        let out = self
            .command(&Self::env_path())
            .args(extra)
            .output()
            .unwrap();
        assert!(stderr(&out).is_empty(), "stderr: {}", stderr(&out));
        let lines = stdout(&out).lines().map(str::to_string).collect();
        (out.status.code().unwrap(), lines)
    }

    /// `nvbox doctor` on this set-up with `PATH` as given.
    pub fn command(&self, path: &str) -> std::process::Command {
        let h = self.host.to_str().unwrap();
        let mut c = command(nvbox());
        c.env("NVIDIA_CTK_CONFIG_FILE_PATH", &self.config)
            .env("PATH", path)
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
            .arg(format!("--crio-config={}", self.crio.display()))
            .arg(format!("--cdi-spec-dirs={}", self.cdi.display()));
        c
    }

    /// Every file under the scratch dir (mock tree and configs): kind, size, mtime, mode, rdev,
    /// content hash of regular files, link target.
    pub fn snapshot(&self) -> BTreeMap<PathBuf, String> {
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
    pub fn doctor_read_only(&self, extra: &[&str]) -> (i32, Vec<String>) {
        let before = self.snapshot();
        let got = self.doctor(extra);
        assert_eq!(before, self.snapshot(), "the doctor changed files");
        got
    }
}

pub fn not_ok(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .filter(|l| !l.starts_with("ok "))
        .cloned()
        .collect()
}

pub fn assert_healthy(code: i32, lines: &[String]) {
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
        "crio runtime",
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

/// Run, as printed, the fix on the line of `check`: the first of alternatives (`X (or Y)`), the
/// command after a prose lead-in (`…: COMMAND`), without a trailing service restart (`&& systemctl
/// restart …`: no engine runs as a service here).
pub fn run_fix(lines: &[String], check: &str) {
    let infix = format!("  {check}  — ");
    let line = lines
        .iter()
        .find(|l| l.contains(&infix))
        .unwrap_or_else(|| panic!("no {check} line: {lines:#?}"));
    let fix = line.split("; fix: ").nth(1).expect("a line with a fix");
    let fix = fix.split(" (or ").next().unwrap();
    let fix = fix.rsplit(": ").next().unwrap();
    let command = fix.split(" && systemctl ").next().unwrap();
    let out = std::process::Command::new("sh")
        .args(["-c", command])
        .env("PATH", Setup::env_path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{command}: {}", stderr(&out));
}
