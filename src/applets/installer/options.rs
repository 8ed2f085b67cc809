//! The typed, validated settings (upstream's `validateFlags`, `ValidateOptions` and
//! `runtime.Options.Validate`): runtime-specific defaults filled in, values nvbox cannot honour
//! refused with one line before anything is touched.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

use super::flags::{RUNTIME_DEFAULT, Values};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Containerd,
    Crio,
    Docker,
}

impl Engine {
    pub fn name(self) -> &'static str {
        match self {
            Engine::Containerd => "containerd",
            Engine::Crio => "crio",
            Engine::Docker => "docker",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    None,
    Signal,
    Systemd,
}

#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    pub engine: Engine,
    pub config: PathBuf,
    /// None: the main config is edited (Docker always; `--drop-in-config=""`).
    pub drop_in: Option<PathBuf>,
    /// The drop-in as the host sees it (what the top-level `imports` names).
    pub drop_in_host: Option<PathBuf>,
    pub executable: Option<String>,
    pub socket: PathBuf,
    pub restart: Restart,
    pub enable_cdi: bool,
    pub host_root: Option<PathBuf>,
    pub name: String,
    pub set_as_default: bool,
    /// `command`, `file` or `file=PATH`, tried in order.
    pub sources: Vec<String>,
    pub runtime_type: String,
    pub annotation_prefixes: Vec<String>,
    pub crio_hook: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct ToolkitOptions {
    pub driver_root: String,
    pub driver_root_ctr: PathBuf,
    /// None: follow the driver root.
    pub dev_root: Option<String>,
    pub dev_root_ctr: PathBuf,
    pub proc_root: Option<PathBuf>,
    pub sys_root: Option<PathBuf>,
    /// config.toml keys and their values, in upstream's names.
    pub settings: Vec<(String, toml::Value)>,
    /// `nvidia-container-runtime.runtimes` as given; empty: asked from the engine.
    pub low_level: Vec<String>,
    pub cdi: Option<(PathBuf, String, String)>,
    pub control_nodes: bool,
    pub ignore_errors: bool,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub install_dir: PathBuf,
    pub no_daemon: bool,
    pub no_runtime_config: bool,
    pub pid_file: PathBuf,
    pub debug: bool,
    pub runtime: RuntimeOptions,
    pub toolkit: ToolkitOptions,
}

impl Options {
    pub fn toolkit_root(&self) -> PathBuf {
        self.install_dir.join("toolkit")
    }
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

fn absolute(what: &str, p: &str) -> Result<PathBuf> {
    if !Path::new(p).is_absolute() {
        bail!("the {what} path {p:?} is not an absolute path");
    }
    Ok(PathBuf::from(p))
}

pub fn build(v: &Values) -> Result<Options> {
    let install_dir = match (&v.positional, v.is_set("toolkit-install-dir")) {
        (Some(p), false) => p.clone(),
        _ => v.str("toolkit-install-dir").to_owned(),
    };
    if install_dir.is_empty() {
        bail!("the install root must be specified");
    }
    let install_dir = absolute("install root", &install_dir)?;
    let pid_file = PathBuf::from(v.str("pid-file"));
    if pid_file.file_name().is_none_or(|n| n != "toolkit.pid") {
        bail!("invalid toolkit.pid path {}", pid_file.display());
    }
    if v.bool("enable-nri-plugin")? {
        bail!("the NRI plugin (--enable-nri-plugin) is not supported by nvbox");
    }
    match v.str("nri-plugin-index").parse::<u32>() {
        Ok(i) if i <= 99 => {}
        _ => bail!("nri-plugin-index must be in the range [0,99]"),
    }
    if !v.str("toolkit-source-root").is_empty() {
        bail!("--toolkit-source-root is not supported: nvbox installs its own static binary");
    }
    match v.str("toolkit-package-type") {
        "" | "auto" | "deb" | "rpm" => {}
        other => bail!("invalid package type: {other}"),
    }
    let toolkit = build_toolkit(v)?;
    let runtime = build_runtime(v, toolkit.cdi.is_some())?;
    Ok(Options {
        install_dir,
        no_daemon: v.bool("no-daemon")?,
        no_runtime_config: v.bool("no-runtime-config")?,
        pid_file,
        debug: v.bool("debug")?,
        runtime,
        toolkit,
    })
}

fn build_toolkit(v: &Values) -> Result<ToolkitOptions> {
    let kind = v.str("cdi-kind");
    let Some((vendor, class)) = kind.split_once('/') else {
        bail!("invalid CDI kind {kind:?}: expected vendor/class");
    };
    crate::spec::cdi::parse_qualified_name(&format!("{kind}=x"))
        .map_err(|e| anyhow::anyhow!("invalid CDI kind {kind:?}: {e:#}"))?;
    let mut cdi_enabled = v.bool("cdi-enabled")?;
    let out_dir = v.str("cdi-output-dir");
    if cdi_enabled && out_dir.is_empty() {
        crate::applets::installer::warn(
            "Skipping CDI spec generation (no output directory specified)",
        );
        cdi_enabled = false;
    }
    let mut control_nodes = true;
    for mode in v.list("create-device-nodes").iter().map(String::as_str) {
        match mode {
            "control" => {}
            "none" => control_nodes = false,
            other => bail!("invalid --create-device-nodes value: {other}"),
        }
    }
    // An explicitly empty list is upstream's "none".
    if v.is_set("create-device-nodes") && v.list("create-device-nodes").is_empty() {
        control_nodes = false;
    }
    let driver_root = v.str("driver-root").to_owned();
    let driver_root_ctr = absolute("driver-root-ctr-path", v.str("driver-root-ctr-path"))?;
    let dev_root = non_empty(v.str("dev-root"));
    let dev_root_ctr = match non_empty(v.str("dev-root-ctr-path")) {
        Some(p) => absolute("dev-root-ctr-path", &p)?,
        None => driver_root_ctr.clone(),
    };
    let mut settings: Vec<(String, toml::Value)> = Vec::new();
    let mut set = |k: &str, val: toml::Value| settings.push((k.to_owned(), val));
    for key in [
        "accept-nvidia-visible-devices-envvar-when-unprivileged",
        "accept-nvidia-visible-devices-as-volume-mounts",
        "nvidia-container-runtime-hook.skip-mode-detection",
    ] {
        set(key, toml::Value::Boolean(v.bool(key)?));
    }
    // Written only when given, as upstream's optional keys.
    for key in [
        "nvidia-container-runtime.debug",
        "nvidia-container-runtime.log-level",
        "nvidia-container-runtime.mode",
        "nvidia-container-runtime.modes.cdi.default-kind",
        "nvidia-container-cli.debug",
    ] {
        if let Some(val) = non_empty(v.str(key)) {
            set(key, toml::Value::String(val));
        }
    }
    let prefixes = v.list("nvidia-container-runtime.modes.cdi.annotation-prefixes");
    if !prefixes.is_empty() {
        set(
            "nvidia-container-runtime.modes.cdi.annotation-prefixes",
            toml::Value::Array(prefixes.into_iter().map(toml::Value::String).collect()),
        );
    }
    for feature in v.list("opt-in-features") {
        set(&format!("features.{feature}"), toml::Value::Boolean(true));
    }
    Ok(ToolkitOptions {
        driver_root,
        driver_root_ctr,
        dev_root,
        dev_root_ctr,
        proc_root: non_empty(v.str("proc-root")).map(PathBuf::from),
        sys_root: non_empty(v.str("sys-root")).map(PathBuf::from),
        settings,
        low_level: v.list("nvidia-container-runtime.runtimes"),
        cdi: cdi_enabled.then(|| (PathBuf::from(out_dir), vendor.to_owned(), class.to_owned())),
        control_nodes: control_nodes && cdi_enabled,
        ignore_errors: v.bool("ignore-errors")?,
    })
}

fn build_runtime(v: &Values, cdi_enabled: bool) -> Result<RuntimeOptions> {
    let engine = match v.str("runtime") {
        "containerd" => Engine::Containerd,
        "crio" => Engine::Crio,
        "docker" => Engine::Docker,
        other => bail!("invalid runtime {other:?}; expected one of [containerd | crio | docker]"),
    };
    let (config, drop_in, socket, restart) = match engine {
        Engine::Containerd => (
            "/etc/containerd/config.toml",
            "/etc/containerd/conf.d/99-nvidia.toml",
            "/run/containerd/containerd.sock",
            "signal",
        ),
        Engine::Crio => (
            "/etc/crio/crio.conf",
            "/etc/crio/crio.conf.d/99-nvidia.toml",
            "/var/run/crio/crio.sock",
            "systemd",
        ),
        Engine::Docker => (
            "/etc/docker/daemon.json",
            "",
            "/var/run/docker.sock",
            "signal",
        ),
    };
    let pick = |name: &str, default: &str| match v.str(name) {
        RUNTIME_DEFAULT => default.to_owned(),
        s => s.to_owned(),
    };
    let mut drop_in = pick("drop-in-config", drop_in);
    let mut executable = non_empty(v.str("executable-path"));
    let mut sources = v.list("config-source");
    if engine == Engine::Docker {
        if executable.take().is_some() {
            super::warn("Ignoring executable-path flag for docker");
        }
        if !drop_in.is_empty() {
            super::warn(&format!(
                "Ignoring drop-in-config={drop_in:?} flag for docker"
            ));
            drop_in.clear();
        }
        sources = vec!["file".to_owned()];
    }
    for s in &sources {
        let kind = s.split_once('=').map_or(s.as_str(), |(k, _)| k).trim();
        if kind != "file" && kind != "command" {
            bail!("unsupported config source {s:?}");
        }
    }
    let restart = match pick("restart-mode", restart).as_str() {
        "none" => Restart::None,
        "signal" if engine == Engine::Crio => {
            bail!("invalid restart mode for crio: supporting crio via signal is unsupported")
        }
        "signal" => Restart::Signal,
        "systemd" => Restart::Systemd,
        other => bail!("invalid restart mode specified: {other}"),
    };
    let crio_hook = match (engine, v.str("config-mode")) {
        (Engine::Crio, "hook") => {
            super::warn("The \"hook\" config for cri-o is deprecated");
            Some(Path::new(v.str("hooks-dir")).join(v.str("hook-filename")))
        }
        (Engine::Crio, "config") => None,
        (Engine::Crio, other) => bail!("invalid cri-o config mode: {other:?}"),
        _ => None,
    };
    if v.bool("use-legacy-config")? {
        bail!("--use-legacy-config (containerd before 1.3) is not supported by nvbox");
    }
    let override_json = v.str("runtime-config-override").trim();
    if !override_json.is_empty() && override_json != "{}" {
        bail!("--runtime-config-override is not supported by nvbox");
    }
    let enable_cdi = match v.is_set("enable-cdi-in-runtime") {
        true => v.bool("enable-cdi-in-runtime")?,
        false => cdi_enabled,
    };
    let drop_in = non_empty(&drop_in)
        .map(|d| absolute("drop-in-config", &d))
        .transpose()?;
    let drop_in_host = non_empty(v.str("drop-in-config-host-path"))
        .map(|d| absolute("drop-in-config-host-path", &d))
        .transpose()?;
    Ok(RuntimeOptions {
        engine,
        config: PathBuf::from(pick("config", config)),
        drop_in,
        drop_in_host,
        executable,
        socket: PathBuf::from(pick("socket", socket)),
        restart,
        enable_cdi,
        host_root: non_empty(v.str("host-root")).map(PathBuf::from),
        name: v.str("runtime-name").to_owned(),
        set_as_default: v.bool("set-as-default")?,
        sources,
        runtime_type: v.str("runtime-type").to_owned(),
        annotation_prefixes: v.list("nvidia-container-runtime.modes.cdi.annotation-prefixes"),
        crio_hook,
    })
}
