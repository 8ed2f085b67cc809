//! `nvbox doctor` (also `nvidia-ctk system doctor`): read-only checks of a GPU container host,
//! one line each with the fix for every problem. The set-up mistakes behind the most frequent
//! upstream support threads (reference nvidia-container-toolkit.md §11.1) are named here with
//! the error text the user saw, so a search for that text lands on the fix.
//!
//! Nothing here writes: every check reads files, procfs and the process table, never a socket.
#![allow(dead_code)]

mod cdi;
mod cgroups;
mod containerd;
mod crio;
mod docker;
mod driver;
mod gated;
mod nvbox;
mod userns;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Result, anyhow, bail};
use serde::Serialize;

use crate::config::{Config, locate_config};
use crate::discover::Roots;

const HELP: &str = "Usage: nvbox doctor [OPTION...]
       nvidia-ctk system doctor [OPTION...]
Check this host's GPU container set-up: the driver and its device nodes, nvbox's config.toml
and applets, CDI specs, Docker, containerd, CRI-O and cgroups. Read-only. One line per check:
  ok|warn|fail  WHAT  — WHY IT MATTERS; fix: COMMAND OR FILE EDIT
Exit status 0 when nothing fails, 1 otherwise.

  --json                     an array of {status, check, message, fix} instead
  --config FILE              nvbox's config.toml (default: where the engines look:
                             $NVIDIA_CTK_CONFIG_FILE_PATH, $XDG_CONFIG_HOME, /etc)
  --root DIR                 driver root (default: config.toml's, else /)
  --dev-root, --proc-root, --sys-root DIR
                             a simulated host's /dev, /proc, /sys (default: config.toml's)
  --docker-config FILE       default /etc/docker/daemon.json
  --containerd-config FILE   default /etc/containerd/config.toml
  --crio-config FILE         default /etc/crio/crio.conf (drop-ins: crio.conf.d beside it)
  --cdi-spec-dirs A,B        default /etc/cdi,/var/run/cdi
  -h, --help                 this help
";

/// How bad a finding is; the order is the severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

impl Status {
    fn word(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }
}

/// One check's result. `fix` is empty for `ok`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub status: Status,
    pub check: String,
    pub message: String,
    pub fix: String,
}

impl Finding {
    pub fn ok(check: impl Into<String>, message: impl Into<String>) -> Finding {
        Finding {
            status: Status::Ok,
            check: check.into(),
            message: message.into(),
            fix: String::new(),
        }
    }

    pub fn warn(
        check: impl Into<String>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Finding {
        Finding {
            status: Status::Warn,
            check: check.into(),
            message: message.into(),
            fix: fix.into(),
        }
    }

    pub fn fail(
        check: impl Into<String>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Finding {
        Finding {
            status: Status::Fail,
            check: check.into(),
            message: message.into(),
            fix: fix.into(),
        }
    }

    /// `STATUS  CHECK  — MESSAGE[; fix: FIX]`, the status padded so the checks line up.
    pub fn line(&self) -> String {
        let mut s = format!(
            "{:<4}  {}  — {}",
            self.status.word(),
            self.check,
            self.message
        );
        if !self.fix.is_empty() {
            s.push_str("; fix: ");
            s.push_str(&self.fix);
        }
        s
    }
}

/// What the checks look at.
#[derive(Debug, Clone)]
pub struct Context {
    pub roots: Roots,
    /// Where config.toml is looked for, and whether the user named it.
    pub config_path: PathBuf,
    pub docker_config: PathBuf,
    pub docker_explicit: bool,
    pub containerd_config: PathBuf,
    pub containerd_explicit: bool,
    pub crio_config: PathBuf,
    pub crio_explicit: bool,
    pub cdi_spec_dirs: Vec<PathBuf>,
    /// The process table: always the real one, since a simulated host simulates the driver,
    /// not the daemons that run on it.
    pub procs: PathBuf,
}

impl Context {
    /// The flags that repeat the simulated roots, for fix commands that read the host too.
    pub fn root_flags(&self) -> String {
        let mut s = String::new();
        for (flag, dir) in [
            ("--dev-root", &self.roots.dev),
            ("--proc-root", &self.roots.proc),
        ] {
            if dir != Path::new("/") {
                s.push_str(&format!(" {flag}={}", dir.display()));
            }
        }
        s
    }
}

#[derive(Debug, Default)]
struct Args {
    json: bool,
    config: Option<PathBuf>,
    root: Option<PathBuf>,
    dev_root: Option<PathBuf>,
    proc_root: Option<PathBuf>,
    sys_root: Option<PathBuf>,
    docker_config: Option<PathBuf>,
    containerd_config: Option<PathBuf>,
    crio_config: Option<PathBuf>,
    cdi_spec_dirs: Option<Vec<PathBuf>>,
    help: bool,
}

fn parse_args(args: Vec<OsString>) -> Result<Args> {
    let args: Vec<String> = args
        .into_iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let mut a = Args::default();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with('-') => (f, Some(v.to_owned())),
            _ => (arg.as_str(), None),
        };
        let mut value = || -> Result<String> {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or_else(|| anyhow!("flag needs an argument: {flag}"))
        };
        match flag {
            "--json" => a.json = true,
            "--config" => a.config = Some(value()?.into()),
            "--root" | "--driver-root" => a.root = Some(value()?.into()),
            "--dev-root" => a.dev_root = Some(value()?.into()),
            "--proc-root" => a.proc_root = Some(value()?.into()),
            "--sys-root" => a.sys_root = Some(value()?.into()),
            "--docker-config" => a.docker_config = Some(value()?.into()),
            "--containerd-config" => a.containerd_config = Some(value()?.into()),
            "--crio-config" => a.crio_config = Some(value()?.into()),
            "--cdi-spec-dirs" => {
                let dirs = value()?;
                a.cdi_spec_dirs = Some(
                    dirs.split(',')
                        .filter(|d| !d.is_empty())
                        .map(PathBuf::from)
                        .collect(),
                );
            }
            "-h" | "--help" | "help" => a.help = true,
            _ => bail!("flag provided but not defined: {arg}"),
        }
    }
    Ok(a)
}

/// Flags override config.toml, which overrides `/`; a config.toml that does not load leaves
/// the defaults (its own check reports why).
fn build_context(a: Args) -> Context {
    let config_path = a.config.unwrap_or_else(locate_config);
    let cfg = Config::load_from(&config_path, false).unwrap_or_default();
    let from_cfg = |p: &Option<PathBuf>| p.clone();
    let cli_root = (!cfg.cli.root.is_empty()).then(|| PathBuf::from(&cfg.cli.root));
    let root = a.root.or(cli_root);
    let dev = a.dev_root.or_else(|| from_cfg(&cfg.nvbox.dev_root));
    let proc = a.proc_root.or_else(|| from_cfg(&cfg.nvbox.proc_root));
    let sys = a.sys_root.or_else(|| from_cfg(&cfg.nvbox.sys_root));
    let roots = Roots::new(
        root.as_deref(),
        dev.as_deref(),
        proc.as_deref(),
        sys.as_deref(),
    );
    let cdi_spec_dirs = a.cdi_spec_dirs.unwrap_or_else(|| {
        crate::spec::cdi::DEFAULT_SPEC_DIRS
            .iter()
            .map(PathBuf::from)
            .collect()
    });
    Context {
        roots,
        config_path,
        docker_explicit: a.docker_config.is_some(),
        docker_config: a
            .docker_config
            .unwrap_or_else(|| "/etc/docker/daemon.json".into()),
        containerd_explicit: a.containerd_config.is_some(),
        containerd_config: a
            .containerd_config
            .unwrap_or_else(|| "/etc/containerd/config.toml".into()),
        crio_explicit: a.crio_config.is_some(),
        crio_config: a
            .crio_config
            .unwrap_or_else(|| "/etc/crio/crio.conf".into()),
        cdi_spec_dirs,
        procs: PathBuf::from("/proc"),
    }
}

/// Every check, in the order a broken set-up should be repaired: driver first.
pub fn check_host(ctx: &Context) -> Vec<Finding> {
    let mut out = Vec::new();
    driver::check(ctx, &mut out);
    gated::check(ctx, &mut out);
    nvbox::check(ctx, &mut out);
    cdi::check(ctx, &mut out);
    docker::check(ctx, &mut out);
    containerd::check(ctx, &mut out);
    crio::check(ctx, &mut out);
    cgroups::check(ctx, &mut out);
    userns::check(ctx, &mut out);
    out
}

/// `nvidia-ctk system doctor ARGS…`.
pub fn run(args: Vec<OsString>) -> Result<ExitCode> {
    let a = parse_args(args)?;
    if a.help {
        print!("{HELP}");
        return Ok(ExitCode::SUCCESS);
    }
    let json = a.json;
    let findings = check_host(&build_context(a));
    if json {
        println!("{}", serde_json::to_string_pretty(&findings)?);
    } else {
        for f in &findings {
            println!("{}", f.line());
        }
    }
    let failed = findings.iter().any(|f| f.status == Status::Fail);
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// `nvbox doctor ARGS…`.
pub fn main(_name: &str, args: Vec<OsString>) -> ExitCode {
    crate::report::finish("nvbox doctor", run(args))
}

/// ` --nvidia-runtime-path=P` when the runtime is installed somewhere other than where
/// `nvidia-ctk runtime configure` points containerd and CRI-O by default, so the printed fix
/// names the binary that exists.
pub fn runtime_path_flag() -> String {
    let path = std::env::var("PATH").unwrap_or_default();
    match which("nvidia-container-runtime", &path) {
        Some(p) if p != Path::new("/usr/bin/nvidia-container-runtime") => {
            format!(" --nvidia-runtime-path={}", p.display())
        }
        _ => String::new(),
    }
}

/// The first executable file called `name` in a `PATH` value.
pub fn which(name: &str, path_env: &str) -> Option<PathBuf> {
    path_env
        .split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(name))
        .find(|p| is_executable(p))
}

pub fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A context whose files all live under `dir` (none need exist).
    pub fn context_for(dir: &Path) -> Context {
        build_context(Args {
            config: Some(dir.join("config.toml")),
            docker_config: Some(dir.join("daemon.json")),
            containerd_config: Some(dir.join("containerd.toml")),
            crio_config: Some(dir.join("crio.conf")),
            cdi_spec_dirs: Some(vec![dir.join("cdi")]),
            ..Args::default()
        })
    }

    #[test]
    fn line_format() {
        let f = Finding::fail("x", "broken", "do y");
        assert_eq!(f.line(), "fail  x  — broken; fix: do y");
        assert_eq!(Finding::ok("x", "fine").line(), "ok    x  — fine");
    }

    #[test]
    fn args() {
        let a = parse_args(
            [
                "--json",
                "--cdi-spec-dirs=/a,/b",
                "--docker-config",
                "/d.json",
            ]
            .map(OsString::from)
            .to_vec(),
        )
        .unwrap();
        assert!(a.json);
        assert_eq!(a.cdi_spec_dirs.unwrap(), [PathBuf::from("/a"), "/b".into()]);
        assert_eq!(a.docker_config.unwrap(), Path::new("/d.json"));
        assert!(parse_args(vec!["--bogus".into()]).is_err());
    }
}
