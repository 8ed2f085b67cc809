//! Docker: daemon.json registers the `nvidia` runtime at an executable path; and when the
//! dockerd that reads this daemon.json runs, the hook is on ITS PATH (dockerd registers `--gpus`
//! only if it finds nvidia-container-runtime-hook at startup) and it started after the file's
//! last change (a running dockerd does not see later edits).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde_json::Value;

use super::{Context, Finding, is_executable, which};
use crate::engines::docker;

const HOOK: &str = "nvidia-container-runtime-hook";
const DEFAULT_CONFIG: &str = "/etc/docker/daemon.json";
/// /proc/<pid>/stat counts in USER_HZ, an ABI constant of 100 on every architecture Linux
/// still supports (so no sysconf call is needed).
const USER_HZ: f64 = 100.0;
/// Slack for the start-time arithmetic (uptime and the wall clock are read separately).
const SLACK: Duration = Duration::from_millis(500);

/// A running dockerd: its pid and the environment's PATH.
#[derive(Debug, Clone)]
pub struct Daemon {
    pub pid: u32,
    pub path_env: String,
    pub started: Option<SystemTime>,
}

pub fn check(ctx: &Context, out: &mut Vec<Finding>) {
    let file = &ctx.docker_config;
    let shown = file.display();
    let configure = format!(
        "nvidia-ctk runtime configure --runtime=docker --config={shown} && systemctl restart docker"
    );
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let installed = which("dockerd", &std::env::var("PATH").unwrap_or_default());
            if !ctx.docker_explicit && installed.is_none() {
                out.push(Finding::ok(
                    "docker",
                    "dockerd not installed: nothing to check",
                ));
            } else {
                out.push(Finding::fail(
                    "docker runtime",
                    format!("{shown} absent: `docker run --runtime=nvidia` fails with `unknown or invalid runtime name: nvidia`"),
                    configure,
                ));
            }
            return;
        }
        Err(e) => {
            out.push(Finding::fail(
                "docker runtime",
                format!("read {shown}: {e}"),
                format!("ls -l {shown}"),
            ));
            return;
        }
    };
    let cfg = match docker::parse(Some(&text)) {
        Ok(c) => c,
        Err(e) => {
            out.push(Finding::fail(
                "docker runtime",
                format!("{shown}: {e:#}: dockerd refuses to start"),
                format!("correct the JSON in {shown}"),
            ));
            return;
        }
    };
    let daemon = find_daemon(&ctx.procs, file);
    let runtime = cfg
        .get("runtimes")
        .and_then(|r| r.get("nvidia"))
        .and_then(|n| n.get("path"))
        .and_then(Value::as_str);
    match runtime {
        None => out.push(Finding::fail(
            "docker runtime",
            format!("{shown} has no runtimes.nvidia: `docker run --runtime=nvidia` fails with `unknown or invalid runtime name: nvidia`"),
            configure,
        )),
        Some(p) => {
            // A bare name is looked up on dockerd's PATH, as dockerd does.
            let path_env = daemon
                .as_ref()
                .map(|d| d.path_env.clone())
                .unwrap_or_else(|| std::env::var("PATH").unwrap_or_default());
            let found = if p.contains('/') {
                is_executable(Path::new(p)).then(|| PathBuf::from(p))
            } else {
                which(p, &path_env)
            };
            match found {
                Some(f) => out.push(Finding::ok(
                    "docker runtime",
                    format!("{shown} registers nvidia at {}", f.display()),
                )),
                None => out.push(Finding::fail(
                    "docker runtime",
                    format!("{shown} registers nvidia at {p}, which is not an executable: GPU containers fail to start"),
                    configure,
                )),
            }
        }
    }
    if let Some(d) = cfg.get("default-runtime").and_then(Value::as_str) {
        let known = d == "runc" || cfg.get("runtimes").and_then(|r| r.get(d)).is_some();
        if known {
            out.push(Finding::ok("docker default-runtime", d.to_string()));
        } else {
            out.push(Finding::fail(
                "docker default-runtime",
                format!("{d} is not a runtime {shown} defines: dockerd refuses to start"),
                format!("nvidia-ctk runtime configure --runtime=docker --config={shown} --set-as-default"),
            ));
        }
    }
    check_reload_hazard(ctx, &cfg, out);
    let Some(d) = daemon else {
        out.push(Finding::ok(
            "dockerd",
            format!("not running with {shown}: PATH and restart checks skipped"),
        ));
        return;
    };
    match which(HOOK, &d.path_env) {
        Some(h) => out.push(Finding::ok(
            "dockerd PATH",
            format!("dockerd (pid {}) finds {}", d.pid, h.display()),
        )),
        None => out.push(Finding::fail(
            "dockerd PATH",
            format!(
                "{HOOK} is not on the PATH of dockerd (pid {}, PATH={}): `docker run --gpus` fails with `could not select device driver \"\" with capabilities: [[gpu]]`",
                d.pid, d.path_env
            ),
            format!(
                "ln -s $(command -v {HOOK}) /usr/bin/{HOOK} (or add its directory to dockerd's PATH), then systemctl restart docker"
            ),
        )),
    }
    let changed = std::fs::metadata(file).and_then(|m| m.modified()).ok();
    match (d.started, changed) {
        (Some(started), Some(changed)) if changed > started + SLACK => {
            out.push(Finding::warn(
                "dockerd restart",
                format!(
                    "{shown} changed after dockerd (pid {}) started: the running daemon does not see the change (`unknown or invalid runtime name: nvidia`)",
                    d.pid
                ),
                format!("systemctl restart docker (or kill -HUP {}, which reloads runtimes)", d.pid),
            ));
        }
        (Some(_), Some(_)) => out.push(Finding::ok(
            "dockerd restart",
            format!(
                "dockerd (pid {}) started after {shown}'s last change",
                d.pid
            ),
        )),
        _ => {}
    }
}

/// With the systemd cgroup driver, `systemctl daemon-reload` rewrites each container's device
/// rules from what systemd knows, and systemd only knows nodes through their `/dev/char` links:
/// legacy mode adds the GPUs behind systemd's back, so they vanish ("Failed to initialize NVML:
/// Unknown Error") unless the links exist. CDI modes declare the devices to the engine instead.
fn check_reload_hazard(
    ctx: &Context,
    cfg: &serde_json::Map<String, Value>,
    out: &mut Vec<Finding>,
) {
    let explicit = cfg
        .get("exec-opts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .find_map(|o| o.strip_prefix("native.cgroupdriver="));
    let systemd = match explicit {
        Some(d) => d == "systemd",
        // dockerd's default: systemd on a cgroup v2 host, cgroupfs otherwise.
        None => {
            let mountinfo =
                std::fs::read_to_string(ctx.procs.join("self/mountinfo")).unwrap_or_default();
            super::cgroups::detect_hierarchy(&mountinfo) == super::cgroups::Hierarchy::V2
        }
    };
    if !systemd {
        return;
    }
    let config = crate::config::Config::load_from(&ctx.config_path, false).unwrap_or_default();
    let mode = config.runtime.mode.as_str();
    if !matches!(mode, "legacy" | "auto") {
        return;
    }
    let missing = missing_char_links(&ctx.roots);
    let check = "docker cgroup driver";
    if missing.is_empty() {
        out.push(Finding::ok(
            check,
            format!("systemd with mode {mode}: /dev/char links present, GPUs survive systemctl daemon-reload"),
        ));
        return;
    }
    out.push(Finding::warn(
        check,
        format!(
            "systemd with mode {mode} and no {}: after `systemctl daemon-reload` running containers lose their GPUs (`Failed to initialize NVML: Unknown Error`)",
            missing.join(", ")
        ),
        format!(
            "nvidia-ctk system create-dev-char-symlinks --create-all{} (or nvidia-ctk config --config-file={} --in-place --set nvidia-container-runtime.mode=jit-cdi)",
            ctx.root_flags(),
            ctx.config_path.display()
        ),
    ));
}

/// `/dev/char/MAJ:MIN` links (under the dev root) missing for the driver's nodes.
fn missing_char_links(roots: &crate::discover::Roots) -> Vec<String> {
    use crate::discover::devices::find_node;
    let mut nodes = vec![
        "/dev/nvidiactl".to_string(),
        "/dev/nvidia-uvm".into(),
        "/dev/nvidia-uvm-tools".into(),
    ];
    for gpu in crate::discover::gpus::read_gpus(roots).unwrap_or_default() {
        nodes.push(format!("/dev/nvidia{}", gpu.minor));
    }
    nodes
        .iter()
        .filter_map(|n| find_node(roots, n))
        .map(|n| format!("/dev/char/{}:{}", n.major, n.minor))
        .filter(|link| !roots.dev_path(link).exists())
        .collect()
}

/// The dockerd whose `--config-file` (default /etc/docker/daemon.json) is `config`.
pub fn find_daemon(procs: &Path, config: &Path) -> Option<Daemon> {
    let want = std::fs::canonicalize(config).unwrap_or_else(|_| config.to_path_buf());
    let entries = std::fs::read_dir(procs).ok()?;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Ok(pid) = name.parse::<u32>() else {
            continue;
        };
        let dir = e.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim() != "dockerd" {
            continue;
        }
        let cmdline = std::fs::read(dir.join("cmdline")).unwrap_or_default();
        let used = config_file_arg(&cmdline).unwrap_or_else(|| DEFAULT_CONFIG.into());
        // A relative --config-file is relative to dockerd's working directory.
        let used = match std::fs::read_link(dir.join("cwd")) {
            Ok(cwd) if used.is_relative() => cwd.join(used),
            _ => used,
        };
        let used = std::fs::canonicalize(&used).unwrap_or(used);
        if used != want {
            continue;
        }
        let environ = std::fs::read(dir.join("environ")).unwrap_or_default();
        let path_env = environ
            .split(|&b| b == 0)
            .find_map(|v| v.strip_prefix(b"PATH="))
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default();
        return Some(Daemon {
            pid,
            path_env,
            started: start_time(procs, &dir),
        });
    }
    None
}

fn config_file_arg(cmdline: &[u8]) -> Option<PathBuf> {
    let args: Vec<String> = cmdline
        .split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let a = a.trim_start_matches('-');
        if a == "config-file" {
            return it.next().map(PathBuf::from);
        }
        if let Some(v) = a.strip_prefix("config-file=") {
            return Some(PathBuf::from(v));
        }
    }
    None
}

/// Wall-clock start of a process: now − (uptime − its start in ticks since boot).
fn start_time(procs: &Path, dir: &Path) -> Option<SystemTime> {
    let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
    // Fields after the parenthesised comm, which may itself hold spaces.
    let rest = stat.rsplit_once(')')?.1;
    let ticks: f64 = rest.split_whitespace().nth(19)?.parse().ok()?;
    let uptime: f64 = std::fs::read_to_string(procs.join("uptime"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let age = (uptime - ticks / USER_HZ).max(0.0);
    SystemTime::now().checked_sub(Duration::from_secs_f64(age))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_file_flag_forms() {
        assert_eq!(
            config_file_arg(b"dockerd\0--config-file\0/x.json\0"),
            Some(PathBuf::from("/x.json"))
        );
        assert_eq!(
            config_file_arg(b"dockerd\0--config-file=/y.json\0"),
            Some(PathBuf::from("/y.json"))
        );
        assert_eq!(config_file_arg(b"dockerd\0-H\0unix:///s\0"), None);
    }

    #[test]
    fn our_own_start_time_is_recent() {
        let me = Path::new("/proc/self");
        let t = start_time(Path::new("/proc"), me).unwrap();
        let age = SystemTime::now().duration_since(t).unwrap_or_default();
        assert!(age < Duration::from_secs(600), "age {age:?}");
    }
}
