//! Deterministic budgets for a GPU container start, on a simulated host whose driver libraries
//! have their real sizes and layouts (libcuda.so is 29 MB, its dynamic section 28 MB in): the
//! bytes every nvbox process reads, and the write calls the runtime shim makes on `create`.
//! Counted with `strace -ff` over the whole start (shim, runc, hooks, the hook's child), so a
//! regression such as reading whole libraries or writing config.json token by token fails here
//! without any timing.

mod common;

use common::container::*;
use common::engines::*;
use common::{TempDir, nvbox};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const STRACE: &str = "/usr/bin/strace";
/// The bytes all nvbox processes of one GPU start may read (the budget).
const READ_BUDGET: u64 = 2 << 20;
/// The shim's write calls on create: config.json in one write, and the few lines of its log.
const SHIM_WRITE_BUDGET: u64 = 10;

const READS: &[&str] = &["read", "pread64", "readv", "preadv", "preadv2"];
const WRITES: &[&str] = &["write", "pwrite64", "writev", "pwritev", "pwritev2"];

/// What the nvbox processes of one traced command did.
#[derive(Debug, Default)]
struct Usage {
    /// Bytes returned by read calls of every process while it ran nvbox.
    bytes_read: u64,
    /// Write calls of the runtime shim before it execs runc.
    shim_writes: u64,
    /// Processes that ran nvbox (by applet name): proof that the trace saw them all.
    applets: Vec<String>,
}

/// Runs `cmd` under `strace -ff` and adds up what its nvbox processes did. For a `create`,
/// `container` names it: strace follows the container's init, which waits for `start`, so the
/// container is deleted once created, which ends the trace.
fn traced(cmd: &Command, container: Option<(&Path, &str)>) -> (bool, Usage, String) {
    let dir = TempDir::new("strace");
    let mut traced = Command::new(STRACE);
    let syscalls = ["execve", "clone", "clone3", "fork", "vfork"]
        .iter()
        .chain(READS)
        .chain(WRITES)
        .copied()
        .collect::<Vec<_>>()
        .join(",");
    traced
        .args(["-ff", "-qq", "-s", "0", "-e", "status=successful", "-e"])
        .arg(format!("trace={syscalls}"))
        .arg("-o")
        .arg(dir.path().join("t"))
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => traced.env(k, v),
            None => traced.env_remove(k),
        };
    }
    let err = dir.path().join("stderr");
    let mut child = traced
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "strace ran for 2 minutes");
        if let Some((state, id)) = container {
            let st = runc_at(state).args(["state", id]).output().unwrap();
            if text(&st.stdout).contains("\"created\"") {
                let _ = runc_at(state).args(["delete", "--force", id]).output();
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = std::fs::read_to_string(&err).unwrap_or_default();
    if std::env::var_os("NVBOX_KEEP_TRACE").is_some() {
        let keep = std::env::temp_dir().join("nvbox-trace");
        let _ = std::fs::remove_dir_all(&keep);
        let _ = std::process::Command::new("cp")
            .arg("-a")
            .arg(dir.path())
            .arg(&keep)
            .status();
    }
    (status.success(), usage(dir.path()), stderr)
}

/// One strace output file per pid: `t.PID`.
fn usage(dir: &Path) -> Usage {
    let mut lines: HashMap<u32, Vec<String>> = HashMap::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("t.").and_then(|p| p.parse().ok()) else {
            continue;
        };
        let body = std::fs::read_to_string(entry.path()).unwrap();
        lines.insert(pid, body.lines().map(str::to_owned).collect());
    }
    // The command's own process starts with its execve; a process whose fork strace did not
    // see (killed while starting) is followed from its own execve only.
    let children: Vec<u32> = lines.values().flatten().filter_map(|l| forked(l)).collect();
    let mut pids: Vec<u32> = lines.keys().copied().collect();
    pids.sort_by_key(|pid| (children.contains(pid), !first_is_execve(&lines[pid]), *pid));
    let binary = std::fs::canonicalize(nvbox()).unwrap();
    let mut usage = Usage::default();
    let mut seen = Vec::new();
    for pid in pids {
        if !seen.contains(&pid) {
            walk(&lines, pid, None, &binary, &mut usage, &mut seen);
        }
    }
    usage
}

fn first_is_execve(lines: &[String]) -> bool {
    lines.first().is_some_and(|l| l.starts_with("execve("))
}

/// Follows one process from the program it inherited, into the children it forks.
fn walk(
    lines: &HashMap<u32, Vec<String>>,
    pid: u32,
    mut program: Option<PathBuf>,
    binary: &Path,
    usage: &mut Usage,
    seen: &mut Vec<u32>,
) {
    seen.push(pid);
    let is_nvbox = |p: &Option<PathBuf>| {
        p.as_ref()
            .and_then(|p| std::fs::canonicalize(p).ok())
            .is_some_and(|p| p == binary)
    };
    for line in lines.get(&pid).into_iter().flatten() {
        let (call, ret) = split_call(line);
        if call == "execve" {
            let path = line.split('"').nth(1).unwrap_or_default();
            program = Some(PathBuf::from(path));
            if is_nvbox(&program) {
                let name = Path::new(path).file_name().unwrap().to_string_lossy();
                usage.applets.push(name.into_owned());
            }
        } else if let Some(child) = forked(line) {
            walk(lines, child, program.clone(), binary, usage, seen);
        } else if READS.contains(&call) && is_nvbox(&program) {
            usage.bytes_read += ret;
        } else if WRITES.contains(&call)
            && is_nvbox(&program)
            && program
                .as_ref()
                .is_some_and(|p| p.ends_with("nvidia-container-runtime"))
        {
            usage.shim_writes += 1;
        }
    }
}

/// The call's name and its non-negative return value.
fn split_call(line: &str) -> (&str, u64) {
    let call = line.split('(').next().unwrap_or_default();
    let ret = line
        .rsplit_once(" = ")
        .and_then(|(_, r)| r.split_whitespace().next())
        .and_then(|r| r.parse().ok())
        .unwrap_or(0);
    (call, ret)
}

/// The child pid of a clone/fork line.
fn forked(line: &str) -> Option<u32> {
    let (call, ret) = split_call(line);
    matches!(call, "clone" | "clone3" | "fork" | "vfork").then_some(ret as u32)
}

fn ready() -> bool {
    have_prerequisites(&[RUNC, BUSYBOX, STRACE])
}

/// The default host of every e2e test, checked to be as heavy as a real one: a budget measured
/// on stub libraries would prove nothing.
fn real_size_host() -> &'static Host {
    let host = shared_host(&[]);
    let libcuda = host
        .root
        .join("usr/lib/x86_64-linux-gnu/libcuda.so.535.104.05");
    let size = std::fs::metadata(&libcuda).unwrap().len();
    assert!(size > 20 << 20, "{} is {size} bytes", libcuda.display());
    host
}

/// One GPU create through the shim in `mode`, traced; the container is deleted afterwards.
fn gpu_create(mode: &str) -> Usage {
    let host = real_size_host();
    let config = ShimConfig::mode(host, mode);
    let mut bundle = Bundle::new(true);
    bundle.script("true");
    bundle.env(&[
        "NVIDIA_VISIBLE_DEVICES=all",
        "NVIDIA_DRIVER_CAPABILITIES=compute,utility",
    ]);
    let id = unique_id(&format!("budget-{mode}"));
    bundle.spec["linux"]["cgroupsPath"] = serde_json::json!(format!("/{id}"));
    let spec = serde_json::to_vec_pretty(&bundle.spec).unwrap();
    std::fs::write(bundle.path().join("config.json"), spec).unwrap();
    let state = shim_state();
    let _guard = Created {
        state: state.clone(),
        id: id.clone(),
    };
    let log = bundle.path().join("create.log");
    let cmd = create_logged(shim_command(&config.path), &state, bundle.path(), &id, &log);
    let (ok, usage, stderr) = traced(&cmd, Some((&state, &id)));
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(ok, "{mode} create failed: {log}{stderr}");
    eprintln!("{mode} GPU start: {usage:?}");
    usage
}

#[test]
fn a_jit_cdi_gpu_start_reads_at_most_2_mib_and_writes_config_json_once() {
    if !ready() {
        return;
    }
    let usage = gpu_create("jit-cdi");
    // The shim and the createContainer hook runc ran (the spec names the binary itself, with
    // the applet in argv[0]): both were traced.
    assert_eq!(usage.applets[0], "nvidia-container-runtime", "{usage:?}");
    assert!(usage.applets.len() >= 2, "no hook traced: {usage:?}");
    assert!(usage.bytes_read <= READ_BUDGET, "{usage:?}");
    assert!(usage.shim_writes <= SHIM_WRITE_BUDGET, "{usage:?}");
}

#[test]
fn a_legacy_gpu_start_reads_at_most_2_mib() {
    if !ready() {
        return;
    }
    let usage = gpu_create("legacy");
    assert!(
        usage
            .applets
            .iter()
            .any(|a| a == "nvidia-container-runtime-hook"),
        "{usage:?}"
    );
    assert!(usage.bytes_read <= READ_BUDGET, "{usage:?}");
    assert!(usage.shim_writes <= SHIM_WRITE_BUDGET, "{usage:?}");
}

/// `list` and `cdi generate` look at every driver library: on real sizes they read headers.
#[test]
fn list_and_cdi_generate_read_headers_only() {
    if !ready() {
        return;
    }
    let host = real_size_host();
    let run = |args: &[&str]| {
        let mut cmd = Command::new(nvbox());
        cmd.args(args)
            .env("NVIDIA_CTK_CONFIG_FILE_PATH", &host.config);
        let (ok, usage, stderr) = traced(&cmd, None);
        assert!(ok, "{args:?}: {stderr}");
        eprintln!("{args:?}: {usage:?}");
        usage.bytes_read
    };
    assert!(run(&["nvidia-container-cli", "list"]) <= 256 << 10);
    let generate = ["nvidia-ctk", "cdi", "generate", "--format", "json"];
    assert!(run(&generate) <= 512 << 10);
}
