//! Real containers for the end-to-end tests: busybox root filesystems, runc bundles and runs, a
//! private dockerd, and what a container must see, derived from the mock host's own
//! `nvidia-container-cli list` (the oracle) and the upstream rules of libnvidia-container §3, §5.
#![allow(dead_code)]

mod docker;
mod expect;
// Test binaries that start no container leave these unused.
#[allow(unused_imports)]
pub use docker::*;
#[allow(unused_imports)]
pub use expect::*;

use super::{TempDir, is_root, nvbox, skip_or_fail};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

pub const RUNC: &str = "/usr/sbin/runc";
pub const BUSYBOX: &str = "/bin/busybox";
pub const DOCKERD: &str = "/usr/sbin/dockerd";
/// The package's CLI: a newer one in /usr/local/bin may not speak to this dockerd.
pub const DOCKER: &str = "/usr/bin/docker";
pub const CONTAINERD: &str = "/usr/bin/containerd";
const HOOK: &str = "nvidia-container-runtime-hook";
const CONTAINER_PATH: &str = "PATH=/usr/sbin:/usr/bin:/sbin:/bin";

/// Root and the listed programs, or SKIP (a failure under CI=true).
pub fn have_prerequisites(programs: &[&str]) -> bool {
    if !is_root() {
        skip_or_fail("e2e containers need root");
        return false;
    }
    for p in programs {
        if !Path::new(p).exists() {
            skip_or_fail(&format!("{p} is not installed (tests/run.sh installs it)"));
            return false;
        }
    }
    true
}

/// A per-process directory for fixtures shared through statics (never dropped): leftovers of
/// test processes that have exited are swept when the next one starts.
pub fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let tmp = std::env::temp_dir();
        for entry in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix("nvbox-e2e-")
                && !Path::new("/proc").join(pid).exists()
            {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        let dir = tmp.join(format!("nvbox-e2e-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    })
}

fn unique(tag: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    format!("nvbox-e2e-{}-{tag}-{n}", std::process::id())
}

/// A directory of applet symlinks to the tested binary, made by the project's own symlinks.sh.
pub fn applet_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = scratch().join("bin");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("symlinks.sh");
        let out = Command::new("sh")
            .arg(script)
            .arg("--binary")
            .arg(nvbox())
            .arg(&dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "symlinks.sh: {}", text(&out.stderr));
        dir
    })
}

pub fn hook_path() -> PathBuf {
    applet_dir().join(HOOK)
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// (major, minor) of a device number, as glibc's gnu_dev_major/minor split it.
pub fn split_rdev(dev: u64) -> (u64, u64) {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    (major, minor)
}

/// One simulated GPU host, made by `nvbox mock`, and its config.toml.
pub struct Host {
    pub root: PathBuf,
    pub config: PathBuf,
}

pub struct Gpu {
    pub minor: u64,
    pub uuid: String,
    /// The directory name under /proc/driver/nvidia/gpus (and the `Bus Location` value).
    pub bus: String,
}

/// The host for one set of `nvbox mock` options, made once per test process.
pub fn shared_host(args: &[&str]) -> &'static Host {
    static HOSTS: Mutex<Vec<(String, &'static Host)>> = Mutex::new(Vec::new());
    let key = args.join(" ");
    let mut hosts = HOSTS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, h)) = hosts.iter().find(|(k, _)| *k == key) {
        return h;
    }
    let root = scratch().join(format!("host{}", hosts.len()));
    let cfg = super::mock(&root, args);
    let config = root.with_extension("toml");
    std::fs::write(&config, cfg).unwrap();
    let host: &'static Host = Box::leak(Box::new(Host { root, config }));
    hosts.push((key, host));
    host
}

impl Host {
    /// `nvidia-container-cli list ARGS…` through the config.toml: container paths, one a line.
    pub fn list(&self, args: &[&str]) -> Vec<String> {
        let out = Command::new(nvbox())
            .env("NVIDIA_CTK_CONFIG_FILE_PATH", &self.config)
            .arg("nvidia-container-cli")
            .arg("list")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "oracle list {args:?}: {}",
            text(&out.stderr)
        );
        text(&out.stdout).lines().map(str::to_string).collect()
    }

    /// GPUs in bus order (NVML's index order), from the mock's procfs.
    pub fn gpus(&self) -> Vec<Gpu> {
        let dir = self.root.join("proc/driver/nvidia/gpus");
        let mut gpus: Vec<Gpu> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let info = std::fs::read_to_string(e.path().join("information")).unwrap();
                let field = |k: &str| {
                    info.lines()
                        .find_map(|l| l.strip_prefix(k))
                        .map(|v| v.trim_start_matches(':').trim().to_string())
                        .unwrap_or_else(|| panic!("{k} missing in {}", e.path().display()))
                };
                Gpu {
                    minor: field("Device Minor").parse().unwrap(),
                    uuid: field("GPU UUID"),
                    bus: e.file_name().to_string_lossy().into_owned(),
                }
            })
            .collect();
        gpus.sort_by(|a, b| a.bus.cmp(&b.bus));
        gpus
    }

    pub fn file(&self, container_path: &str) -> PathBuf {
        self.root.join(container_path.trim_start_matches('/'))
    }

    pub fn read(&self, container_path: &str) -> String {
        std::fs::read_to_string(self.file(container_path)).unwrap()
    }

    pub fn rdev(&self, container_path: &str) -> (u64, u64) {
        split_rdev(std::fs::metadata(self.file(container_path)).unwrap().rdev())
    }

    /// The soname of a library the oracle listed: the host's link that names the file, else the
    /// file's own name (a library whose soname is its file name has no link).
    pub fn soname(&self, lib: &str) -> String {
        let host = self.file(lib);
        let base = host.file_name().unwrap().to_owned();
        for e in std::fs::read_dir(host.parent().unwrap()).unwrap().flatten() {
            // Only soname links name the file itself (libcuda.so names libcuda.so.1).
            if std::fs::read_link(e.path()).is_ok_and(|t| t.as_os_str() == base) {
                return e.file_name().to_string_lossy().into_owned();
            }
        }
        base.to_string_lossy().into_owned()
    }
}

/// A busybox root filesystem in a fresh directory: /bin/busybox, its applet links, the usual
/// empty directories, and /etc/debian_version on request (it picks the library directories).
pub fn make_rootfs(rootfs: &Path, debian: bool) {
    static APPLETS: OnceLock<Vec<String>> = OnceLock::new();
    let applets = APPLETS.get_or_init(|| {
        let out = Command::new(BUSYBOX).arg("--list-full").output().unwrap();
        assert!(out.status.success(), "busybox --list-full failed");
        text(&out.stdout).lines().map(str::to_string).collect()
    });
    for d in [
        "bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "tmp",
    ] {
        std::fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    std::fs::copy(BUSYBOX, rootfs.join("bin/busybox")).unwrap();
    for a in applets {
        if a != "bin/busybox" {
            symlink("/bin/busybox", rootfs.join(a)).unwrap();
        }
    }
    if debian {
        std::fs::write(rootfs.join("etc/debian_version"), "12.0\n").unwrap();
    }
}

/// Every path under a tree with its kind and link target: compares a rootfs before and after.
pub fn snapshot(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                out.insert(rel, "dir".into());
                walk(root, &p, out);
            } else if ft.is_symlink() {
                out.insert(
                    rel,
                    format!("-> {}", std::fs::read_link(&p).unwrap().display()),
                );
            } else {
                out.insert(rel, format!("file {}", e.metadata().unwrap().len()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// The container's library directories for a rootfs as it is before the hook runs (§5.2).
pub fn lib_dirs(rootfs: &Path) -> (&'static str, &'static str) {
    if rootfs.join("etc/debian_version").exists() {
        return ("/usr/lib/x86_64-linux-gnu", "/usr/lib/i386-linux-gnu");
    }
    let lib = rootfs.join("usr/lib");
    let lib64 = rootfs.join("usr/lib64");
    let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if rootfs.join("usr/lib32").exists() || !lib.exists() || same(&lib, &lib64) {
        ("/usr/lib64", "/usr/lib32")
    } else {
        ("/usr/lib64", "/usr/lib")
    }
}

/// A runc bundle: a fresh busybox rootfs and the config.json of `runc spec`, edited.
pub struct Bundle {
    dir: TempDir,
    pub rootfs: PathBuf,
    pub spec: Value,
}

impl Bundle {
    pub fn new(debian: bool) -> Bundle {
        static SPEC: OnceLock<Value> = OnceLock::new();
        let template = SPEC.get_or_init(|| {
            let dir = TempDir::new("runc-spec");
            let out = Command::new(RUNC)
                .args(["spec", "--bundle"])
                .arg(dir.path())
                .output()
                .unwrap();
            assert!(out.status.success(), "runc spec: {}", text(&out.stderr));
            serde_json::from_slice(&std::fs::read(dir.path().join("config.json")).unwrap()).unwrap()
        });
        let dir = TempDir::new("bundle");
        let rootfs = dir.path().join("rootfs");
        make_rootfs(&rootfs, debian);
        let mut spec = template.clone();
        spec["root"]["path"] = json!("rootfs");
        spec["process"]["terminal"] = json!(false);
        spec["process"]["env"] = json!([CONTAINER_PATH]);
        Bundle { dir, rootfs, spec }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The container's command: a busybox shell script.
    pub fn script(&mut self, script: &str) {
        self.spec["process"]["args"] = json!(["sh", "-c", script]);
    }

    /// Process environment after PATH (`KEY=VALUE` entries).
    pub fn env(&mut self, vars: &[&str]) {
        let mut env = vec![CONTAINER_PATH.to_string()];
        env.extend(vars.iter().map(|v| v.to_string()));
        self.spec["process"]["env"] = json!(env);
    }

    /// A user namespace mapping the container's ids 0..65536 to `host_id`.., and the rootfs
    /// handed to the mapped root with its parents traversable, as Docker's `userns-remap` does.
    pub fn map_ids(&mut self, host_id: u32) {
        use std::os::unix::fs::PermissionsExt;
        let map = json!([{"containerID": 0, "hostID": host_id, "size": 65536}]);
        self.spec["linux"]["uidMappings"] = map.clone();
        self.spec["linux"]["gidMappings"] = map;
        let ns = self.spec["linux"]["namespaces"].as_array_mut().unwrap();
        ns.push(json!({"type": "user"}));
        let mut dir = self.rootfs.parent();
        while let Some(d) = dir {
            let mode = std::fs::metadata(d).unwrap().permissions().mode();
            if mode & 0o001 == 0 {
                let traversable = std::fs::Permissions::from_mode(mode | 0o711);
                std::fs::set_permissions(d, traversable).unwrap();
            }
            dir = d.parent();
        }
        Bundle::chown_tree(&self.rootfs, host_id);
    }

    /// `chown -hR id:id p`.
    pub fn chown_tree(p: &Path, id: u32) {
        std::os::unix::fs::lchown(p, Some(id), Some(id)).unwrap();
        if std::fs::symlink_metadata(p).unwrap().is_dir() {
            for e in std::fs::read_dir(p).unwrap().flatten() {
                Bundle::chown_tree(&e.path(), id);
            }
        }
    }

    /// Our prestart hook, pointed at a simulated host, as upstream's packages install it.
    pub fn hook(&mut self, host: &Host) {
        self.spec["hooks"] = json!({"prestart": [{
            "path": hook_path(),
            "args": [HOOK, "prestart"],
            "env": [
                format!("NVIDIA_CTK_CONFIG_FILE_PATH={}", host.config.display()),
                CONTAINER_PATH,
            ],
        }]});
    }
}

/// What one `runc create` + `runc start` gave.
pub struct RuncRun {
    /// `runc create` succeeded (prestart hooks run inside it).
    pub created: bool,
    pub create_stderr: String,
    /// devices.list of the container's v1 device cgroup between create and start.
    pub devices_list: String,
    pub stdout: String,
    pub stderr: String,
}

/// Deletes the container even when an assertion fails between create and delete.
struct Container<'a> {
    state: &'a Path,
    id: String,
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        let _ = Command::new(RUNC)
            .arg("--root")
            .arg(self.state)
            .args(["delete", "--force", &self.id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// `runc create` (which runs the prestart hook), a look at the device cgroup, `runc start`, and
/// the container's output read to its end (the container closing it means it has exited).
pub fn run_runc(bundle: &mut Bundle) -> RuncRun {
    let id = unique("c");
    let cgroup = format!("/{id}");
    bundle.spec["linux"]["cgroupsPath"] = json!(cgroup);
    let config = serde_json::to_vec_pretty(&bundle.spec).unwrap();
    std::fs::write(bundle.path().join("config.json"), config).unwrap();
    let state = scratch().join("runc");
    let runc = || {
        let mut c = Command::new(RUNC);
        c.arg("--root").arg(&state);
        c
    };
    // Detached and without a terminal, runc hands these pipes to the container process.
    let mut create = runc()
        .args(["create", "--bundle"])
        .arg(bundle.path())
        .arg(&id)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = create.stdout.take().unwrap();
    let mut err = create.stderr.take().unwrap();
    let guard = Container {
        state: &state,
        id: id.clone(),
    };
    let status = create.wait().unwrap();
    if !status.success() {
        let mut e = String::new();
        err.read_to_string(&mut e).unwrap();
        drop(guard);
        return RuncRun {
            created: false,
            create_stderr: e,
            devices_list: String::new(),
            stdout: String::new(),
            stderr: String::new(),
        };
    }
    let list = Path::new("/sys/fs/cgroup/devices")
        .join(&id)
        .join("devices.list");
    let devices_list =
        std::fs::read_to_string(&list).unwrap_or_else(|e| panic!("read {}: {e}", list.display()));
    let start = runc().args(["start", &id]).output().unwrap();
    assert!(
        start.status.success(),
        "runc start: {}",
        text(&start.stderr)
    );
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        out.read_to_string(&mut s).unwrap();
        s
    });
    let mut stderr = String::new();
    err.read_to_string(&mut stderr).unwrap();
    let stdout = reader.join().unwrap();
    drop(guard);
    RuncRun {
        created: true,
        create_stderr: String::new(),
        devices_list,
        stdout,
        stderr,
    }
}
