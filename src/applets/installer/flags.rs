//! The installer's settings, urfave/cli style as upstream's `nvidia-ctk-installer`: each flag has
//! aliases and environment variables (the GPU Operator configures it only through the
//! environment). A flag on the command line beats the environment, which beats the default; an
//! environment variable that is present counts even when empty (`RUNTIME_DROP_IN_CONFIG=""`
//! means "edit the main config"), as urfave's lookup does.

use std::collections::HashMap;
use std::ffi::OsString;

use anyhow::{Result, bail};

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bool,
    Str,
    List,
}

/// One flag: its name, its aliases, the environment variables that set it, and its default.
pub struct Flag {
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    pub env: &'static [&'static str],
    pub kind: Kind,
    pub default: &'static str,
    pub usage: &'static str,
}

const fn flag(
    name: &'static str,
    aliases: &'static [&'static str],
    env: &'static [&'static str],
    kind: Kind,
    default: &'static str,
    usage: &'static str,
) -> Flag {
    Flag {
        name,
        aliases,
        env,
        kind,
        default,
        usage,
    }
}

use Kind::{Bool, List, Str};

/// Where a runtime-specific default applies (upstream's `RUNTIME_SPECIFIC_DEFAULT`).
pub const RUNTIME_DEFAULT: &str = "RUNTIME_SPECIFIC_DEFAULT";

/// Upstream's flags (main.go, container/runtime/*, toolkit/toolkit.go), plus nvbox's
/// `--proc-root`/`--sys-root` for a host whose procfs and sysfs are elsewhere (a simulated one).
#[rustfmt::skip]
pub const FLAGS: &[Flag] = &[
    flag("no-daemon", &["n"], &["NO_DAEMON"], Bool, "false", "exit after installing; nothing is undone"),
    flag("no-runtime-config", &[], &["NO_RUNTIME_CONFIG"], Bool, "false", "install the toolkit without configuring an engine"),
    flag("enable-nri-plugin", &["p"], &["ENABLE_NRI_PLUGIN"], Bool, "false", "stand up the NRI plugin (not supported by nvbox: refused)"),
    flag("nri-plugin-index", &[], &["NRI_PLUGIN_INDEX"], Str, "10", "the NRI plugin index [0,99]"),
    flag("nri-socket", &[], &["NRI_SOCKET"], Str, "/var/run/nri/nri.sock", "the NRI socket"),
    flag("nri-namespace", &[], &["NRI_NAMESPACE"], Str, "", "the Kubernetes namespace of the NRI plugin"),
    flag("nri-management-cdi-device-namespaces", &[], &["NRI_MANAGEMENT_CDI_DEVICE_NAMESPACES"], List, "", "more namespaces for management CDI devices"),
    flag("runtime", &["r"], &["RUNTIME"], Str, "docker", "the engine to configure: docker, crio or containerd"),
    flag("toolkit-install-dir", &["root"], &["TOOLKIT_INSTALL_DIR", "ROOT"], Str, "/usr/local/nvidia", "the toolkit goes to DIR/toolkit (use the same path as on the host)"),
    flag("toolkit-source-root", &[], &["TOOLKIT_SOURCE_ROOT"], Str, "", "where package artifacts are (nvbox installs its own binary: refused)"),
    flag("toolkit-package-type", &[], &["TOOLKIT_PACKAGE_TYPE"], Str, "auto", "deb, rpm, auto or '' (one static binary serves all)"),
    flag("pid-file", &[], &["TOOLKIT_PID_FILE", "PID_FILE"], Str, "/run/nvidia/toolkit/toolkit.pid", "the pid file; a second installer refuses to run"),
    flag("debug", &[], &["TOOLKIT_DEBUG"], Bool, "false", "debug logging"),
    // container/runtime/runtime.go
    flag("config", &[], &["RUNTIME_CONFIG", "CONTAINERD_CONFIG", "DOCKER_CONFIG"], Str, RUNTIME_DEFAULT, "the engine's config file"),
    flag("drop-in-config", &[], &["RUNTIME_DROP_IN_CONFIG"], Str, RUNTIME_DEFAULT, "the NVIDIA drop-in file; '' edits the main config"),
    flag("drop-in-config-host-path", &[], &["RUNTIME_DROP_IN_CONFIG_HOST_PATH"], Str, "", "the drop-in's path on the host, for the import entry"),
    flag("executable-path", &[], &["RUNTIME_EXECUTABLE_PATH"], Str, "", "the engine binary used to dump its config"),
    flag("socket", &[], &["RUNTIME_SOCKET", "CONTAINERD_SOCKET", "DOCKER_SOCKET"], Str, RUNTIME_DEFAULT, "the engine's socket (restart by signal)"),
    flag("restart-mode", &[], &["RUNTIME_RESTART_MODE"], Str, RUNTIME_DEFAULT, "signal, systemd or none"),
    flag("enable-cdi-in-runtime", &[], &["RUNTIME_ENABLE_CDI"], Bool, "false", "enable CDI in the engine (default: --cdi-enabled)"),
    flag("host-root", &[], &["HOST_ROOT_MOUNT"], Str, "/host", "the host's / for systemctl and config dumps"),
    flag("runtime-name", &["nvidia-runtime-name", "runtime-class"], &["NVIDIA_RUNTIME_NAME", "CONTAINERD_RUNTIME_CLASS", "DOCKER_RUNTIME_NAME"], Str, "nvidia", "the name of the nvidia runtime"),
    flag("set-as-default", &[], &["NVIDIA_RUNTIME_SET_AS_DEFAULT", "CONTAINERD_SET_AS_DEFAULT", "DOCKER_SET_AS_DEFAULT"], Bool, "true", "make the nvidia runtime the default"),
    flag("config-source", &["config-sources"], &["RUNTIME_CONFIG_SOURCES", "RUNTIME_CONFIG_SOURCE"], List, "command,file", "where the current config is read: command, file[=PATH]"),
    // container/runtime/containerd
    flag("use-legacy-config", &[], &["CONTAINERD_USE_LEGACY_CONFIG"], Bool, "false", "containerd < 1.3 layout (refused)"),
    flag("runtime-type", &[], &["CONTAINERD_RUNTIME_TYPE"], Str, "io.containerd.runc.v2", "the runtime_type of the nvidia runtimes"),
    flag("nvidia-container-runtime.modes.cdi.annotation-prefixes", &[], &["NVIDIA_CONTAINER_RUNTIME_MODES_CDI_ANNOTATION_PREFIXES"], List, "", "CDI annotation prefixes (config.toml, containerd container_annotations)"),
    flag("runtime-config-override", &[], &["RUNTIME_CONFIG_OVERRIDE", "CONTAINERD_RUNTIME_CONFIG_OVERRIDE"], Str, "{}", "more runtime options as JSON"),
    // container/runtime/crio
    flag("hooks-dir", &[], &["CRIO_HOOKS_DIR"], Str, "/usr/share/containers/oci/hooks.d", "CRI-O's hooks directory (config-mode hook)"),
    flag("hook-filename", &[], &["CRIO_HOOK_FILENAME"], Str, "oci-nvidia-hook.json", "the hook file (config-mode hook)"),
    flag("config-mode", &[], &["CRIO_CONFIG_MODE"], Str, "config", "CRI-O: config or hook"),
    // toolkit/toolkit.go
    flag("driver-root", &["nvidia-driver-root"], &["NVIDIA_DRIVER_ROOT", "DRIVER_ROOT"], Str, "/run/nvidia/driver", "the driver root on the host"),
    flag("driver-root-ctr-path", &[], &["DRIVER_ROOT_CTR_PATH"], Str, "/run/nvidia/driver", "the driver root as this process sees it"),
    flag("dev-root", &[], &["NVIDIA_DEV_ROOT", "DEV_ROOT"], Str, "", "where /dev is on the host (default: the driver root)"),
    flag("dev-root-ctr-path", &[], &["DEV_ROOT_CTR_PATH"], Str, "", "where /dev is as this process sees it (default: driver-root-ctr-path)"),
    flag("proc-root", &[], &["NVBOX_PROC_ROOT"], Str, "", "nvbox: where /proc is (default: /)"),
    flag("sys-root", &[], &["NVBOX_SYS_ROOT"], Str, "", "nvbox: where /sys is (default: /)"),
    flag("nvidia-container-runtime.debug", &["nvidia-container-runtime-debug"], &["NVIDIA_CONTAINER_RUNTIME_DEBUG"], Str, "", "the runtime's debug log"),
    flag("nvidia-container-runtime.log-level", &["nvidia-container-runtime-debug-log-level"], &["NVIDIA_CONTAINER_RUNTIME_LOG_LEVEL"], Str, "", "the runtime's log level"),
    flag("nvidia-container-runtime.mode", &["nvidia-container-runtime-mode"], &["NVIDIA_CONTAINER_RUNTIME_MODE"], Str, "", "the runtime's mode"),
    flag("nvidia-container-runtime.modes.cdi.default-kind", &[], &["NVIDIA_CONTAINER_RUNTIME_MODES_CDI_DEFAULT_KIND"], Str, "", "the CDI kind of bare device ids"),
    flag("nvidia-container-runtime.runtimes", &[], &["NVIDIA_CONTAINER_RUNTIME_RUNTIMES"], List, "", "the low-level runtimes (default: from the engine, then runc, crun)"),
    flag("nvidia-container-runtime-hook.skip-mode-detection", &[], &["NVIDIA_CONTAINER_RUNTIME_HOOK_SKIP_MODE_DETECTION"], Bool, "true", "the hook skips mode detection"),
    flag("nvidia-container-cli.debug", &["nvidia-container-cli-debug"], &["NVIDIA_CONTAINER_CLI_DEBUG"], Str, "", "nvidia-container-cli's debug log"),
    flag("accept-nvidia-visible-devices-envvar-when-unprivileged", &[], &["ACCEPT_NVIDIA_VISIBLE_DEVICES_ENVVAR_WHEN_UNPRIVILEGED"], Bool, "true", "config.toml key of that name"),
    flag("accept-nvidia-visible-devices-as-volume-mounts", &[], &["ACCEPT_NVIDIA_VISIBLE_DEVICES_AS_VOLUME_MOUNTS"], Bool, "false", "config.toml key of that name"),
    flag("cdi-enabled", &["enable-cdi"], &["CDI_ENABLED", "ENABLE_CDI"], Bool, "false", "generate the management CDI spec (and enable CDI in the engine)"),
    flag("cdi-output-dir", &[], &["CDI_OUTPUT_DIR"], Str, "/var/run/cdi", "where the CDI spec goes; '' generates none"),
    flag("cdi-kind", &[], &["CDI_KIND"], Str, "management.nvidia.com/gpu", "the vendor/class of the CDI spec"),
    flag("ignore-errors", &[], &[], Bool, "false", "carry on after a failed install step (testing only)"),
    flag("create-device-nodes", &[], &["CREATE_DEVICE_NODES"], List, "control", "with --cdi-enabled: control, or none"),
    flag("opt-in-features", &[], &["NVIDIA_CONTAINER_TOOLKIT_OPT_IN_FEATURES"], List, "", "config.toml features to set"),
];

/// The values after flags, environment and defaults: for each flag name, its value (a list
/// flag keeps its items), and which ones were set explicitly.
#[derive(Default)]
pub struct Values {
    values: HashMap<&'static str, Vec<String>>,
    explicit: Vec<&'static str>,
    /// A positional install dir (upstream before 1.18: `nvidia-toolkit DIR`).
    pub positional: Option<String>,
}

impl Values {
    pub fn str(&self, name: &str) -> &str {
        self.values
            .get(name)
            .and_then(|v| v.last())
            .map_or("", String::as_str)
    }

    pub fn list(&self, name: &str) -> Vec<String> {
        self.values.get(name).cloned().unwrap_or_default()
    }

    pub fn is_set(&self, name: &str) -> bool {
        self.explicit.contains(&name)
    }

    pub fn bool(&self, name: &str) -> Result<bool> {
        parse_bool(name, self.str(name))
    }
}

pub fn parse_bool(name: &str, v: &str) -> Result<bool> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "" | "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        other => bail!("invalid value {other:?} for flag --{name}: not a boolean"),
    }
}

fn find(name: &str) -> Option<&'static Flag> {
    FLAGS
        .iter()
        .find(|f| f.name == name || f.aliases.contains(&name))
}

/// A list value as urfave splits it: on commas, each item trimmed, empty items kept out.
fn split(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Parse argv; None when help was asked for.
pub fn parse(
    args: Vec<OsString>,
    getenv: impl Fn(&str) -> Option<String>,
) -> Result<Option<Values>> {
    let mut v = Values::default();
    let mut from_cli: HashMap<&'static str, Vec<String>> = HashMap::new();
    let mut it = args.into_iter().map(|a| a.to_string_lossy().into_owned());
    while let Some(arg) = it.next() {
        let Some(body) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
            if v.positional.is_some() {
                bail!("unexpected argument: {arg}");
            }
            v.positional = Some(arg);
            continue;
        };
        let (name, inline) = match body.split_once('=') {
            Some((n, val)) => (n, Some(val.to_owned())),
            None => (body, None),
        };
        if matches!(name, "help" | "h") {
            return Ok(None);
        }
        let Some(f) = find(name) else {
            bail!("flag provided but not defined: -{name}");
        };
        let value = match (f.kind, inline) {
            (Bool, None) => "true".to_owned(),
            (_, Some(val)) => val,
            (_, None) => match it.next() {
                Some(val) => val,
                None => bail!("flag needs an argument: -{name}"),
            },
        };
        if f.kind == Bool {
            parse_bool(f.name, &value)?;
        }
        let slot = from_cli.entry(f.name).or_default();
        match f.kind {
            List => slot.extend(split(&value)),
            _ => *slot = vec![value],
        }
    }
    for f in FLAGS {
        if let Some(val) = from_cli.remove(f.name) {
            v.values.insert(f.name, val);
            v.explicit.push(f.name);
            continue;
        }
        let from_env = f.env.iter().find_map(|k| getenv(k).map(|val| (k, val)));
        match from_env {
            Some((key, val)) => {
                if f.kind == Bool && !val.is_empty() {
                    parse_bool(f.name, &val).map_err(|_| {
                        anyhow::anyhow!("invalid value {val:?} for {key}: not a boolean")
                    })?;
                }
                let items = match f.kind {
                    List => split(&val),
                    _ => vec![val],
                };
                v.values.insert(f.name, items);
                v.explicit.push(f.name);
            }
            None => {
                let items = match f.kind {
                    List => split(f.default),
                    _ => vec![f.default.to_owned()],
                };
                v.values.insert(f.name, items);
            }
        }
    }
    Ok(Some(v))
}

pub fn help() -> String {
    let mut s = String::from(
        "NAME:
   nvidia-ctk-installer - Install the NVIDIA Container Toolkit and configure the specified runtime to use the `nvidia` runtime.

USAGE:
   nvidia-ctk-installer [options] [TOOLKIT_INSTALL_DIR]

OPTIONS:
",
    );
    for f in FLAGS {
        let mut names = format!("--{}", f.name);
        for a in f.aliases {
            names.push_str(if a.len() == 1 { ", -" } else { ", --" });
            names.push_str(a);
        }
        let default = match f.default {
            "" | "false" => String::new(),
            RUNTIME_DEFAULT => " (default: per runtime)".to_owned(),
            d => format!(" (default: {d:?})"),
        };
        let env = if f.env.is_empty() {
            String::new()
        } else {
            format!(" [${}]", f.env.join(", $"))
        };
        s.push_str(&format!("   {names}  {}{default}{env}\n", f.usage));
    }
    s.push_str("   --help, -h  show help\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    fn args(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }

    #[test]
    fn flags_beat_env_which_beats_defaults() {
        let e = [
            ("RUNTIME", "containerd"),
            ("CONTAINERD_RUNTIME_CLASS", "gpu"),
        ];
        let v = parse(args(&["--runtime-name=nv"]), env(&e))
            .unwrap()
            .unwrap();
        assert_eq!(v.str("runtime"), "containerd");
        assert_eq!(v.str("runtime-name"), "nv");
        assert_eq!(v.str("toolkit-install-dir"), "/usr/local/nvidia");
        assert!(v.is_set("runtime") && !v.is_set("toolkit-install-dir"));
        let v = parse(args(&[]), env(&e)).unwrap().unwrap();
        assert_eq!(v.str("runtime-name"), "gpu");
        assert!(v.bool("set-as-default").unwrap());
    }

    #[test]
    fn an_empty_env_value_counts_and_lists_split_on_commas() {
        let e = [
            ("RUNTIME_DROP_IN_CONFIG", ""),
            ("RUNTIME_CONFIG_SOURCES", " file=/a.toml , command"),
            ("NO_DAEMON", ""),
        ];
        let v = parse(args(&["-n=false"]), env(&e)).unwrap().unwrap();
        assert_eq!(v.str("drop-in-config"), "");
        assert!(v.is_set("drop-in-config"));
        assert_eq!(v.list("config-source"), ["file=/a.toml", "command"]);
        assert!(!v.bool("no-daemon").unwrap());
        let v = parse(args(&[]), env(&[])).unwrap().unwrap();
        assert_eq!(v.list("config-source"), ["command", "file"]);
        assert_eq!(v.list("create-device-nodes"), ["control"]);
    }

    #[test]
    fn bad_input_is_refused() {
        assert!(parse(args(&["--no-such"]), env(&[])).is_err());
        assert!(parse(args(&["--runtime"]), env(&[])).is_err());
        assert!(parse(args(&["--no-daemon=maybe"]), env(&[])).is_err());
        assert!(parse(args(&[]), env(&[("CDI_ENABLED", "yes")])).is_err());
        assert!(parse(args(&["a", "b"]), env(&[])).is_err());
        assert!(parse(args(&["-h"]), env(&[])).unwrap().is_none());
        let v = parse(args(&["/opt/nv"]), env(&[])).unwrap().unwrap();
        assert_eq!(v.positional.as_deref(), Some("/opt/nv"));
    }
}
