//! The runtime shim `nvidia-container-runtime` under real engines: its config.toml on a mock
//! host, runc driven through it, what a jit-cdi container must see (no /proc/driver/nvidia,
//! cgroup rules owned by runc), hand-written CDI specs, and private dockerd, containerd and
//! podman instances whose runtime is the shim.
#![allow(dead_code)]

mod daemons;
#[allow(unused_imports)]
pub use daemons::*;

use super::TempDir;
use super::container::*;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

pub const SHIM: &str = "nvidia-container-runtime";
pub const PODMAN: &str = "/usr/bin/podman";
pub const CONMON: &str = "/usr/bin/conmon";
pub const CTR: &str = "/usr/bin/ctr";
/// What jit-cdi offers whatever NVIDIA_DRIVER_CAPABILITIES says: every driver library but the
/// 32-bit ones (upstream's jit-cdi does the same; the image decides what it loads).
pub const JIT_CAPS: &[&str] = &["compute", "display", "graphics", "ngx", "utility", "video"];
/// The probe, then the variables a CDI edit sets, on lines of their own after `@@end`.
pub const ENV_PROBE: &str = "echo NVENV=$NVIDIA_VISIBLE_DEVICES; echo CDIENV=$NVBOX_CDI_TEST";

pub fn shim_path() -> PathBuf {
    applet_dir().join(SHIM)
}

/// PATH for the shim: the applets first (legacy finds the hook there), then runc's directory.
pub fn shim_env_path() -> String {
    format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", applet_dir().display())
}

/// The probe of expect.rs followed by [`ENV_PROBE`].
pub fn probe_with_env() -> String {
    format!("{PROBE}\n{ENV_PROBE}")
}

/// The value of `KEY=` printed by [`ENV_PROBE`].
pub fn probed_env(stdout: &str, key: &str) -> String {
    let prefix = format!("{key}=");
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("{key} not printed:\n{stdout}"))
        .to_string()
}

/// The shim's config.toml: the mock host's own lines plus a runtime section, in a file of its
/// own that can be rewritten between runs (engines read it on every `create`).
pub struct ShimConfig {
    dir: TempDir,
    base: String,
    pub path: PathBuf,
}

impl ShimConfig {
    pub fn new(host: &Host, extra: &str) -> ShimConfig {
        let dir = TempDir::new("shim-config");
        let path = dir.path().join("config.toml");
        let base = std::fs::read_to_string(&host.config).unwrap();
        let c = ShimConfig { dir, base, path };
        c.write(extra);
        c
    }

    /// `[nvidia-container-runtime] mode = MODE` and nothing else.
    pub fn mode(host: &Host, mode: &str) -> ShimConfig {
        ShimConfig::new(host, &mode_toml(mode))
    }

    pub fn write(&self, extra: &str) {
        std::fs::write(&self.path, format!("{}\n{extra}", self.base)).unwrap();
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

pub fn mode_toml(mode: &str) -> String {
    format!("[nvidia-container-runtime]\nmode = \"{mode}\"\n")
}

/// The shim with the config and PATH it runs under in these tests.
pub fn shim_command(config: &Path) -> Command {
    let mut c = Command::new(shim_path());
    c.env("PATH", shim_env_path())
        .env("NVIDIA_CTK_CONFIG_FILE_PATH", config)
        .env_remove("XDG_CONFIG_HOME");
    c
}

pub fn unique_id(tag: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    format!("nvbox-shim-{}-{tag}-{n}", std::process::id())
}

/// The runc state directory the shim-driven containers use.
/// `PROGRAM --root STATE create --bundle BUNDLE ID` from `cmd` (the shim or runc), stdin and
/// stdout closed.
pub fn create_command(mut cmd: Command, state: &Path, bundle: &Path, id: &str) -> Command {
    cmd.arg("--root")
        .arg(state)
        .args(["create", "--bundle"])
        .arg(bundle)
        .arg(id)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    cmd
}

/// [`create_command`] with stderr in the file `log`: a pipe would be held open by the created
/// container's init until it exits.
pub fn create_logged(cmd: Command, state: &Path, bundle: &Path, id: &str, log: &Path) -> Command {
    let mut cmd = create_command(cmd, state, bundle, id);
    cmd.stderr(std::fs::File::create(log).unwrap());
    cmd
}

pub fn shim_state() -> PathBuf {
    scratch().join("shim-runc")
}

pub fn runc_at(state: &Path) -> Command {
    let mut c = Command::new(RUNC);
    c.arg("--root").arg(state);
    c
}

/// Deletes the container even when an assertion fails between create and delete.
pub struct Created {
    pub state: PathBuf,
    pub id: String,
}

impl Drop for Created {
    fn drop(&mut self) {
        let _ = runc_at(&self.state)
            .args(["delete", "--force", &self.id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// What one create through the shim + `runc start` gave.
pub struct ShimRun {
    pub id: String,
    pub created: bool,
    pub create_stderr: String,
    /// config.json as the shim left it (runc has read it by then).
    pub config_after: Vec<u8>,
    /// config.json as written before the create.
    pub config_before: Vec<u8>,
    /// The v1 device cgroup's devices.list after create, and after `runc update` when asked.
    pub devices_list: String,
    pub devices_after_update: Option<String>,
    /// Whether runc had a state directory for the container after a failed create.
    pub state_dir_left: bool,
    pub stdout: String,
    pub stderr: String,
}

/// `nvidia-container-runtime --root STATE create --bundle B ID` (the shim execs runc), the device
/// cgroup, optionally `runc update UPDATE… ID` and the cgroup again, then `runc start` and the
/// container's output read to its end.
pub fn run_shim(bundle: &mut Bundle, config: &Path, update: &[&str]) -> ShimRun {
    run_shim_via(&[], bundle, config, update)
}

/// A Debian-like busybox bundle running `script` with `env` through the shim on `config`; the
/// run, and the bundle for its rootfs.
pub fn run_script(config: &Path, script: &str, env: &[&str]) -> (ShimRun, Bundle) {
    let mut bundle = Bundle::new(true);
    bundle.script(script);
    bundle.env(env);
    let run = run_shim(&mut bundle, config, &[]);
    (run, bundle)
}

/// [`run_shim`] with the shim started as the last argument of `wrap` (a program that sets up
/// its environment, then execs the rest of its arguments).
pub fn run_shim_via(wrap: &[&str], bundle: &mut Bundle, config: &Path, update: &[&str]) -> ShimRun {
    let cmd = match wrap {
        [] => shim_command(config),
        [program, rest @ ..] => {
            let mut c = Command::new(program);
            c.args(rest)
                .arg(shim_path())
                .env("PATH", shim_env_path())
                .env("NVIDIA_CTK_CONFIG_FILE_PATH", config)
                .env_remove("XDG_CONFIG_HOME");
            c
        }
    };
    run_shim_with(cmd, bundle, update)
}

/// [`run_shim`] with another runtime command (an installed toolkit's, say).
pub fn run_shim_with(shim: Command, bundle: &mut Bundle, update: &[&str]) -> ShimRun {
    let id = unique_id("c");
    bundle.spec["linux"]["cgroupsPath"] = json!(format!("/{id}"));
    let config_before = serde_json::to_vec_pretty(&bundle.spec).unwrap();
    let config_json = bundle.path().join("config.json");
    std::fs::write(&config_json, &config_before).unwrap();
    let state = shim_state();
    let mut shim = shim;
    let mut create = shim
        .arg("--root")
        .arg(&state)
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
    let guard = Created {
        state: state.clone(),
        id: id.clone(),
    };
    let status = create.wait().unwrap();
    let config_after = std::fs::read(&config_json).unwrap();
    let mut run = ShimRun {
        id: id.clone(),
        created: status.success(),
        create_stderr: String::new(),
        config_after,
        config_before,
        devices_list: String::new(),
        devices_after_update: None,
        state_dir_left: false,
        stdout: String::new(),
        stderr: String::new(),
    };
    if !run.created {
        err.read_to_string(&mut run.create_stderr).unwrap();
        run.state_dir_left = state.join(&id).exists();
        return run;
    }
    let list = Path::new("/sys/fs/cgroup/devices")
        .join(&id)
        .join("devices.list");
    let read_list = || {
        std::fs::read_to_string(&list).unwrap_or_else(|e| panic!("read {}: {e}", list.display()))
    };
    run.devices_list = read_list();
    if !update.is_empty() {
        let up = runc_at(&state)
            .arg("update")
            .args(update)
            .arg(&id)
            .output()
            .unwrap();
        assert!(up.status.success(), "runc update: {}", text(&up.stderr));
        run.devices_after_update = Some(read_list());
    }
    let start = runc_at(&state).args(["start", &id]).output().unwrap();
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
    err.read_to_string(&mut run.stderr).unwrap();
    run.stdout = reader.join().unwrap();
    drop(guard);
    run
}

/// What a jit-cdi container must hold: the legacy hook's files for [`JIT_CAPS`] at the same
/// container paths, but nothing under /proc/driver/nvidia (runc mounts nothing into /proc), so
/// the machine's own GPU directories are all that shows there.
///
/// The files are upstream's CDI set, not libnvidia-container's: its binaries (the IMEX pair, no
/// fabric manager) and every `*.so.<driver version>` beside libcuda plus `libnvidia-nvvm70`.
pub fn expected_jit(host: &Host, devices: &str, rootfs: &Path) -> Expected {
    let mut want = expected(host, devices, JIT_CAPS, rootfs);
    want.entries.retain(|path, _| !path.starts_with("/proc/"));
    // Libraries keep their host directory, whatever the image's is.
    let listed: Vec<String> = host.list(&["--libraries"]);
    let lib_dir = listed[0].rsplit_once('/').unwrap().0.to_string();
    let image_dir = format!("{}/", want.lib_dirs.0);
    if want.lib_dirs.0 != lib_dir {
        let moved: Vec<(String, String)> = want
            .entries
            .iter()
            .filter(|(k, _)| k.starts_with(&image_dir))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (k, v) in moved {
            want.entries.remove(&k);
            want.entries
                .insert(format!("{lib_dir}/{}", &k[image_dir.len()..]), v);
        }
        want.ldcache = want
            .ldcache
            .iter()
            .map(|(so, arch, path)| {
                let path = match path.strip_prefix(&image_dir) {
                    Some(rest) => format!("{lib_dir}/{rest}"),
                    None => path.clone(),
                };
                (so.clone(), arch.clone(), path)
            })
            .collect();
        want.lib_dirs.0 = Box::leak(lib_dir.clone().into_boxed_str());
    }
    want.entries.extend(own_gpu_dirs());
    want.entries.remove("/usr/bin/nv-fabricmanager");
    for bin in ["/usr/bin/nvidia-imex", "/usr/bin/nvidia-imex-ctl"] {
        if host.file(bin).is_file() {
            want.entries
                .insert(bin.to_string(), "regular file".to_string());
        }
    }
    let (libcuda, name) = mock_libcuda(host);
    let version = name.strip_prefix("libcuda.so.").unwrap().to_string();
    let host_dir = libcuda.parent().unwrap();
    let mut extra: Vec<String> = std::fs::read_dir(host_dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.file_name().into_string().unwrap())
        .filter(|n| n.ends_with(&format!(".so.{version}")) || n.starts_with("libnvidia-nvvm70.so."))
        .filter(|n| !listed.iter().any(|l| l.ends_with(&format!("/{n}"))))
        .collect();
    extra.sort();
    let dir = lib_dir.as_str();
    // The `.so` development links the host has (upstream's rule), beyond libcuda's.
    for lib in &listed {
        let base = lib.rsplit('/').next().unwrap();
        let dev = format!("{}.so", base.split(".so").next().unwrap());
        let soname = host.soname(lib);
        let on_host = host_dir.join(&dev);
        if dev != soname && on_host.symlink_metadata().is_ok_and(|m| m.is_symlink()) {
            want.entries
                .insert(format!("{dir}/{dev}"), format!("-> {soname}"));
        }
    }
    for base in extra {
        let soname = host.soname(&format!("{lib_dir}/{base}"));
        want.entries
            .insert(format!("{dir}/{base}"), "regular file".to_string());
        if soname != base {
            want.entries
                .insert(format!("{dir}/{soname}"), format!("-> {base}"));
        }
        want.ldcache.insert((
            soname.clone(),
            "libc6,x86-64".to_string(),
            format!("{dir}/{soname}"),
        ));
    }
    want
}

/// This machine's /proc/driver/nvidia/gpus entries, as the probe reports them.
pub fn own_gpu_dirs() -> BTreeMap<String, String> {
    std::fs::read_dir("/proc/driver/nvidia/gpus")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| (e.path().display().to_string(), "directory".to_string()))
        .collect()
}

/// Exactly the expected entries; the driver's procfs in the container is the machine's own,
/// never the mock's.
pub fn assert_jit_injected(probe: &Probe, want: &Expected) {
    assert_entries(&probe.entries, &want.entries);
    let own = |f: &str| std::fs::read_to_string(f).unwrap_or_default();
    assert_eq!(
        probe.version,
        own("/proc/driver/nvidia/version"),
        "/proc/driver/nvidia/version must be the machine's own"
    );
    if !Path::new("/proc/driver/nvidia/params").exists() {
        assert_eq!(
            probe.params, "",
            "a driverless machine's container has no params"
        );
    }
}

/// The mock's 64-bit libcuda: (host path, container file name).
pub fn mock_libcuda(host: &Host) -> (PathBuf, String) {
    let lib = host
        .list(&["--libraries"])
        .into_iter()
        .find(|l| l.rsplit('/').next().unwrap().starts_with("libcuda.so."))
        .expect("the mock has a libcuda");
    let name = lib.rsplit('/').next().unwrap().to_string();
    (host.file(&lib), name)
}

/// A CDI spec written by hand for the mock: kind nvidia.com/gpu, devices "0" and "1" (their
/// nodes, no major/minor: CDI fills them from the host node), and common edits (the control
/// node, libcuda mounted into the Debian library directory, one variable).
pub fn write_cdi_spec(dir: &Path, host: &Host) -> PathBuf {
    let node =
        |n: &str| json!({"path": format!("/dev/{n}"), "hostPath": host.file(&format!("/dev/{n}"))});
    let (lib, name) = mock_libcuda(host);
    let spec = json!({
        "cdiVersion": "0.6.0",
        "kind": "nvidia.com/gpu",
        "devices": [
            {"name": "0", "containerEdits": {"deviceNodes": [node("nvidia0")]}},
            {"name": "1", "containerEdits": {"deviceNodes": [node("nvidia1")]}},
        ],
        "containerEdits": {
            "env": ["NVBOX_CDI_TEST=from-spec"],
            "deviceNodes": [node("nvidiactl")],
            "mounts": [{
                "hostPath": lib,
                "containerPath": format!("/usr/lib/x86_64-linux-gnu/{name}"),
                "options": ["ro", "nosuid", "nodev", "bind"],
            }],
        },
    });
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("nvbox-test.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
    path
}

/// The entries a container gets from [`write_cdi_spec`] for the given device minors.
pub fn expected_cdi(host: &Host, minors: &[u64]) -> (BTreeMap<String, String>, BTreeSet<String>) {
    let mut entries = own_gpu_dirs();
    let mut rules = BTreeSet::new();
    let mut add_node = |path: &str| {
        let (ma, mi) = host.rdev(path);
        entries.insert(
            path.to_string(),
            format!("character special file {ma}:{mi}"),
        );
        rules.insert(format!("c {ma}:{mi}"));
    };
    add_node("/dev/nvidiactl");
    for m in minors {
        add_node(&format!("/dev/nvidia{m}"));
    }
    let (_, name) = mock_libcuda(host);
    entries.insert(
        format!("/usr/lib/x86_64-linux-gnu/{name}"),
        "regular file".to_string(),
    );
    (entries, rules)
}

/// The config.json's prestart hooks, as values.
pub fn prestart_hooks(config: &[u8]) -> Vec<Value> {
    let spec: Value = serde_json::from_slice(config).unwrap();
    spec["hooks"]["prestart"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// `c MAJ:MIN` of every `rwm` allow rule in a config.json's `linux.resources.devices` whose
/// node is also in `linux.devices`: what runc itself puts in the device cgroup.
pub fn spec_device_rules(config: &[u8]) -> BTreeSet<String> {
    let spec: Value = serde_json::from_slice(config).unwrap();
    let nodes: BTreeSet<(i64, i64)> = spec["linux"]["devices"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| Some((d["major"].as_i64()?, d["minor"].as_i64()?)))
        .collect();
    spec["linux"]["resources"]["devices"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["allow"] == json!(true) && r["access"] == json!("rwm"))
        .filter_map(|r| Some((r["major"].as_i64()?, r["minor"].as_i64()?)))
        .filter(|n| nodes.contains(n))
        .map(|(ma, mi)| format!("c {ma}:{mi}"))
        .collect()
}

/// `text(stdout)` of a command that must succeed.
pub fn ok_stdout(what: &str, out: &Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        text(&out.stderr),
        text(&out.stdout)
    );
    text(&out.stdout)
}

/// The create through the shim succeeded.
pub fn assert_created(run: &ShimRun) {
    assert!(
        run.created,
        "create through the shim failed:\n{}",
        run.create_stderr
    );
}

/// A create that must fail with one line from the shim naming `words`, before runc runs.
pub fn assert_refused(run: &ShimRun, words: &str) {
    assert!(!run.created, "create must fail");
    let err = run.create_stderr.trim_end();
    assert_eq!(err.lines().count(), 1, "one line:\n{err}");
    assert!(err.starts_with("nvidia-container-runtime: "), "{err}");
    assert!(err.contains(words), "{err}");
    assert!(!run.state_dir_left, "runc ran");
}

/// `nvidia-ctk ARGS` with `config` as its config.toml.
pub fn ctk(config: &Path, args: &[&str]) -> Output {
    super::command(super::nvbox())
        .env("NVIDIA_CTK_CONFIG_FILE_PATH", config)
        .arg("nvidia-ctk")
        .args(args)
        .output()
        .unwrap()
}

/// `cdi generate ARGS` for `host` into `dir/nvidia.json`, hooks calling the applet directory's
/// nvidia-cdi-hook; the spec.
pub fn generate_into(host: &Host, dir: &Path, args: &[&str]) -> Value {
    let hook = applet_dir().join("nvidia-cdi-hook");
    let out_file = dir.join("nvidia.json");
    let mut all = vec![
        "cdi",
        "generate",
        "--nvidia-cdi-hook-path",
        hook.to_str().unwrap(),
        "--output",
        out_file.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    let out = ctk(&host.config, &all);
    assert!(out.status.success(), "generate: {}", text(&out.stderr));
    serde_json::from_slice(&std::fs::read(out_file).unwrap()).unwrap()
}

/// `cdi generate --format json ARGS` for `host`, hooks calling the applet directory's
/// nvidia-cdi-hook, which must succeed; the spec and what went to stderr.
pub fn generate_json(host: &Host, args: &[&str]) -> (Value, String) {
    let hook = applet_dir().join("nvidia-cdi-hook");
    let mut all = vec![
        "cdi",
        "generate",
        "--format",
        "json",
        "--nvidia-cdi-hook-path",
        hook.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    let out = ctk(&host.config, &all);
    assert!(out.status.success(), "generate: {}", text(&out.stderr));
    (
        serde_json::from_slice(&out.stdout).unwrap(),
        text(&out.stderr),
    )
}

/// The arguments of each hook in a spec's `containerEdits`.
pub fn spec_hook_args(edits: &Value) -> Vec<Vec<&str>> {
    edits["hooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            h["args"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap())
                .collect()
        })
        .collect()
}
