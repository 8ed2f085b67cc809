//! The NVIDIA Container Toolkit configuration file
//! (`/etc/nvidia-container-runtime/config.toml`), with nvbox's `[nvbox]`
//! extension table.
//!
//! Keys absent from the file keep their defaults, and keys nvbox does not
//! know are ignored so that a file written for a newer upstream still loads.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{Result, anyhow};
use serde::{Deserialize, Serialize};

const ETC_CONFIG: &str = "/etc/nvidia-container-runtime/config.toml";
const OS_RELEASE: &str = "/etc/os-release";
const LDCONFIG_REAL: &str = "/sbin/ldconfig.real";

const MODES: &[&str] = &["auto", "legacy", "cdi", "jit-cdi", "csv"];
// The levels upstream's logger (logrus) accepts.
const LOG_LEVELS: &[&str] = &[
    "trace", "debug", "info", "warn", "warning", "error", "fatal", "panic",
];
const CUDA_COMPAT_MODES: &[&str] = &["ldconfig", "mount", "disabled", "hook"];

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, rename_all = "kebab-case", expecting = "a table")]
pub struct Config {
    pub disable_require: bool,
    pub swarm_resource: String,
    pub accept_nvidia_visible_devices_envvar_when_unprivileged: bool,
    pub accept_nvidia_visible_devices_as_volume_mounts: bool,
    pub supported_driver_capabilities: String,
    #[serde(rename = "nvidia-container-cli")]
    pub cli: CliConfig,
    #[serde(rename = "nvidia-container-runtime")]
    pub runtime: RuntimeConfig,
    #[serde(rename = "nvidia-container-runtime-hook")]
    pub hook: HookConfig,
    #[serde(rename = "nvidia-ctk")]
    pub ctk: CtkConfig,
    pub features: Features,
    pub nvbox: NvboxConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            disable_require: false,
            swarm_resource: String::new(),
            accept_nvidia_visible_devices_envvar_when_unprivileged: true,
            accept_nvidia_visible_devices_as_volume_mounts: false,
            supported_driver_capabilities: "compat32,compute,display,graphics,ngx,utility,video"
                .to_owned(),
            cli: CliConfig::default(),
            runtime: RuntimeConfig::default(),
            hook: HookConfig::default(),
            ctk: CtkConfig::default(),
            features: Features::default(),
            nvbox: NvboxConfig::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, rename_all = "kebab-case", expecting = "a table")]
pub struct CliConfig {
    pub root: String,
    pub path: String,
    pub environment: Vec<String>,
    pub debug: String,
    pub ldcache: String,
    pub load_kmods: bool,
    pub no_pivot: bool,
    pub no_cgroups: bool,
    pub user: String,
    pub ldconfig: String,
}

impl CliConfig {
    /// The defaults for a host described by `os_release` and by whether
    /// `ldconfig_real` exists; `Default` probes /etc/os-release and
    /// /sbin/ldconfig.real. The probe path only decides; the value is always
    /// the in-host path "@/sbin/ldconfig.real".
    pub fn default_for_host(os_release: &Path, ldconfig_real: &Path) -> Self {
        // SUSE hosts give the NVIDIA device nodes to group `video`, so the
        // CLI runs with that group to reach them.
        let user = if is_suse(os_release) {
            "root:video"
        } else {
            ""
        };
        // On Debian-family hosts /sbin/ldconfig is a wrapper script around
        // ldconfig.real; call the binary directly.
        let ldconfig = if ldconfig_real.exists() {
            "@/sbin/ldconfig.real"
        } else {
            "@/sbin/ldconfig"
        };
        Self {
            root: String::new(),
            path: String::new(),
            environment: Vec::new(),
            debug: String::new(),
            ldcache: String::new(),
            load_kmods: true,
            no_pivot: false,
            no_cgroups: false,
            user: user.to_owned(),
            ldconfig: ldconfig.to_owned(),
        }
    }
}

impl Default for CliConfig {
    fn default() -> Self {
        // Serde asks for defaults more than once per load (the whole config,
        // then this table again when the file has it); probe the host once.
        static HOST: OnceLock<CliConfig> = OnceLock::new();
        HOST.get_or_init(|| Self::default_for_host(Path::new(OS_RELEASE), Path::new(LDCONFIG_REAL)))
            .clone()
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, rename_all = "kebab-case", expecting = "a table")]
pub struct RuntimeConfig {
    pub debug: String,
    pub log_level: String,
    pub runtimes: Vec<String>,
    pub mode: String,
    pub modes: Modes,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            debug: "/dev/null".to_owned(),
            log_level: "info".to_owned(),
            runtimes: strings(&["runc", "crun"]),
            mode: "auto".to_owned(),
            modes: Modes::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(default, rename_all = "kebab-case", expecting = "a table")]
pub struct Modes {
    pub cdi: CdiMode,
    pub csv: CsvMode,
    #[serde(rename = "jit-cdi")]
    pub jit_cdi: JitCdiMode,
    pub legacy: LegacyMode,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, rename_all = "kebab-case", expecting = "a table")]
pub struct CdiMode {
    pub spec_dirs: Vec<String>,
    pub default_kind: String,
    pub annotation_prefixes: Vec<String>,
}

impl Default for CdiMode {
    fn default() -> Self {
        Self {
            spec_dirs: strings(&["/etc/cdi", "/var/run/cdi"]),
            default_kind: "nvidia.com/gpu".to_owned(),
            annotation_prefixes: strings(&["cdi.k8s.io/"]),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, rename_all = "kebab-case", expecting = "a table")]
pub struct CsvMode {
    pub mount_spec_path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compat_container_root: Option<String>,
}

impl Default for CsvMode {
    fn default() -> Self {
        Self {
            mount_spec_path: "/etc/nvidia-container-runtime/host-files-for-container.d".to_owned(),
            compat_container_root: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(default, rename_all = "kebab-case", expecting = "a table")]
pub struct JitCdiMode {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nvcdi_feature_flags: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nvcdi_disable_hooks: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, rename_all = "kebab-case", expecting = "a table")]
pub struct LegacyMode {
    pub cuda_compat_mode: String,
}

impl Default for LegacyMode {
    fn default() -> Self {
        Self {
            cuda_compat_mode: "ldconfig".to_owned(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, rename_all = "kebab-case", expecting = "a table")]
pub struct HookConfig {
    pub path: String,
    pub skip_mode_detection: bool,
}

impl Default for HookConfig {
    fn default() -> Self {
        Self {
            path: "nvidia-container-runtime-hook".to_owned(),
            skip_mode_detection: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, rename_all = "kebab-case", expecting = "a table")]
pub struct CtkConfig {
    pub path: String,
}

impl Default for CtkConfig {
    fn default() -> Self {
        Self {
            path: "nvidia-ctk".to_owned(),
        }
    }
}

/// Feature gates. `None` (key absent) is kept apart from an explicit
/// `false` so that writing a config back out adds no keys the user never set.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(default, rename_all = "kebab-case", expecting = "a table")]
pub struct Features {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_cuda_compat_libs_from_container: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_ldconfig_from_container: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_unknown_oci_spec_fields: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disable_cuda_compat_lib_hook: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disable_imex_channel_creation: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ignore_imex_channel_requests: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub no_additional_gids_for_device_nodes: Option<bool>,
}

/// nvbox-only settings: alternative roots for the host's /dev, /proc and
/// /sys, so discovery can run against a mock tree.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(default, rename_all = "kebab-case", expecting = "a table")]
pub struct NvboxConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dev_root: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proc_root: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sys_root: Option<PathBuf>,
    /// How the container's ld.so.cache is updated: "builtin" (default: merged and written by
    /// nvbox, nothing executed) or "ldconfig" (upstream: run `[nvidia-container-cli] ldconfig`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ldcache: Option<String>,
}

impl Config {
    /// Load from `locate_config()`; missing file = defaults. Returns the
    /// config and the path it came from (None when the file was absent).
    pub fn load() -> Result<(Config, Option<PathBuf>)> {
        let path = locate_config();
        match read_config(&path, false)? {
            Some(text) => Ok((Self::parse(&text, &path)?, Some(path))),
            None => Ok((Self::default(), None)),
        }
    }

    /// Load from an explicit path; with `required`, a missing file is an
    /// error instead of the defaults. (The hook's `-config FILE` uses it.)
    pub fn load_from(path: &Path, required: bool) -> Result<Config> {
        match read_config(path, required)? {
            Some(text) => Self::parse(&text, path),
            None => Ok(Self::default()),
        }
    }

    /// Parse and validate text; `path` is used only in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config> {
        let config: Config =
            toml::from_str(text).map_err(|e| describe_toml_error(&e, text, path))?;
        config
            .validate()
            .map_err(|msg| anyhow!("{}: invalid config: {msg}", show_path(path)))?;
        Ok(config)
    }

    fn validate(&self) -> std::result::Result<(), String> {
        if !self.cli.ldconfig.starts_with('@')
            && self.features.allow_ldconfig_from_container != Some(true)
        {
            return Err(format!(
                "nvidia-container-cli.ldconfig {:?} must be a host path starting with '@' \
                 (set features.allow-ldconfig-from-container = true to allow a container path)",
                self.cli.ldconfig
            ));
        }
        check_choice("nvidia-container-runtime.mode", &self.runtime.mode, MODES)?;
        check_choice(
            "nvidia-container-runtime.log-level",
            &self.runtime.log_level,
            LOG_LEVELS,
        )?;
        check_choice(
            "nvidia-container-runtime.modes.legacy.cuda-compat-mode",
            &self.runtime.modes.legacy.cuda_compat_mode,
            CUDA_COMPAT_MODES,
        )?;
        if let Some(mode) = &self.nvbox.ldcache {
            check_choice("nvbox.ldcache", mode, &["builtin", "ldconfig"])?;
        }
        Ok(())
    }
}

/// Where the config file is, from the process environment; without one, the config a toolkit
/// installed by `nvidia-ctk-installer` keeps beside its binary
/// (`<dir>/.config/nvidia-container-runtime/config.toml`), which spares that install upstream's
/// shell wrappers, whose only job is to set `NVIDIA_CTK_CONFIG_FILE_PATH`; else /etc.
pub fn locate_config() -> PathBuf {
    // var_os keeps a non-UTF-8 path intact instead of silently dropping it.
    let found = locate_config_from(|key| std::env::var_os(key));
    if found != Path::new(ETC_CONFIG) {
        return found;
    }
    beside_binary().unwrap_or(found)
}

/// One readlink and one stat: the installed toolkit's config, when this binary is one.
pub fn beside_binary() -> Option<PathBuf> {
    let exe = std::fs::read_link("/proc/self/exe").ok()?;
    let path = exe
        .parent()?
        .join(".config/nvidia-container-runtime/config.toml");
    path.is_file().then_some(path)
}

/// The lookup behind `locate_config`, with the environment passed in so it
/// can be tested without touching process state. Empty values count as unset.
pub fn locate_config_from<S: Into<PathBuf>>(getenv: impl Fn(&str) -> Option<S>) -> PathBuf {
    let lookup = |key: &str| {
        getenv(key)
            .map(Into::into)
            .filter(|p: &PathBuf| !p.as_os_str().is_empty())
    };
    if let Some(path) = lookup("NVIDIA_CTK_CONFIG_FILE_PATH") {
        return path;
    }
    if let Some(dir) = lookup("XDG_CONFIG_HOME") {
        return dir.join("nvidia-container-runtime/config.toml");
    }
    PathBuf::from(ETC_CONFIG)
}

/// Read the file in one open and one read; `None` when it does not exist and
/// is not `required`.
fn read_config(path: &Path, required: bool) -> Result<Option<String>> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound && !required => return Ok(None),
        Err(e) => {
            return Err(anyhow!(
                "{}: open: {}",
                show_path(path),
                describe_io_error(&e)
            ));
        }
    };
    let mut text = String::new();
    file.read_to_string(&mut text)
        .map_err(|e| anyhow!("{}: read: {}", show_path(path), describe_io_error(&e)))?;
    Ok(Some(text))
}

fn check_choice(key: &str, value: &str, allowed: &[&str]) -> std::result::Result<(), String> {
    if allowed.contains(&value) {
        return Ok(());
    }
    Err(format!(
        "{key} {value:?} is not one of {}",
        allowed.join(", ")
    ))
}

fn describe_toml_error(err: &toml::de::Error, text: &str, path: &Path) -> anyhow::Error {
    // toml's message can carry a multi-line note after the headline; callers
    // log errors as single lines, so only the headline is kept.
    let message = err
        .message()
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .unwrap_or("malformed TOML");
    match err.span() {
        Some(span) => anyhow!(
            "{}:{}: invalid config: {message}",
            show_path(path),
            line_of(text, span.start)
        ),
        None => anyhow!("{}: invalid config: {message}", show_path(path)),
    }
}

/// 1-based line number of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Like io::Error's Display, minus the " (os error N)" suffix, so messages
/// read the way the upstream Go tools print them.
fn describe_io_error(err: &io::Error) -> String {
    let text = err.to_string();
    match err.raw_os_error() {
        Some(code) => match text.strip_suffix(&format!(" (os error {code})")) {
            Some(bare) => bare.to_owned(),
            None => text,
        },
        None => text,
    }
}

/// A path for an error message, with line breaks escaped so the message
/// stays on one line.
fn show_path(path: &Path) -> String {
    path.display()
        .to_string()
        .replace('\n', "\\n")
        .replace('\r', "\\r")
}

fn is_suse(os_release: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(os_release) else {
        return false;
    };
    text.lines().any(|line| {
        let Some((key, value)) = line.split_once('=') else {
            return false;
        };
        matches!(key.trim(), "ID" | "ID_LIKE") && unquote(value.trim()).contains("suse")
    })
}

fn unquote(value: &str) -> &str {
    for quote in ['"', '\''] {
        if let Some(inner) = value
            .strip_prefix(quote)
            .and_then(|v| v.strip_suffix(quote))
        {
            return inner;
        }
    }
    value
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|&s| s.to_owned()).collect()
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
