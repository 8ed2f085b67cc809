//! `nvidia-container-runtime`: the runc shim (reference nvidia-container-toolkit.md §2). On
//! anything but `create` it execs the low-level runtime at once, argv untouched, without reading
//! the bundle. On `create` it edits `<bundle>/config.json` for the configured mode, then execs.
//! An error before the exec is one line on stderr (and in the engine's `--log` file), exit 1,
//! and runc never runs.

pub mod args;
mod jit;
mod log;

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Result, anyhow, bail};

use crate::config::Config;
use crate::discover::tegra;
use crate::request::{Devices, Request, read_container, request_for_runtime};
use crate::spec::oci::{self, SpecFile};
use crate::version;

pub const NAME: &str = "nvidia-container-runtime";

/// Directories searched after `$PATH` for the runtime and the hook (upstream's list).
const DEFAULT_DIRS: &[&str] = &[
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

pub fn main(name: &str, args: Vec<OsString>) -> ExitCode {
    let args: Vec<String> = args
        .into_iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let scan = match args::scan(&args) {
        Ok(s) => s,
        Err(e) => return fail(&args::Scan::default(), e),
    };
    if scan.version {
        println!("NVIDIA Container Runtime version {}", version::VERSION);
        println!("commit: {}", version::COMMIT);
        println!("spec: {}", OCI_VERSION);
        println!();
    }
    match run(&scan, &args, forced_mode(name)) {
        // run only returns on failure: success is an exec.
        Ok(never) => match never {},
        Err(e) => fail(&scan, e),
    }
}

/// The OCI runtime-spec version our edits follow.
const OCI_VERSION: &str = "1.2.0";

fn fail(scan: &args::Scan, e: anyhow::Error) -> ExitCode {
    let msg = crate::report::one_line(&e);
    log::error(scan, &msg);
    eprintln!("{NAME}: {msg}");
    ExitCode::FAILURE
}

/// `nvidia-container-runtime.cdi` and `.legacy` (upstream's packaged binaries, which the
/// installer registers as the `nvidia-cdi` and `nvidia-legacy` runtimes) run in that mode
/// whatever config.toml says.
fn forced_mode(name: &str) -> Option<&'static str> {
    match name.rsplit_once('.') {
        Some((_, "cdi")) => Some("cdi"),
        Some((_, "legacy")) => Some("legacy"),
        _ => None,
    }
}

fn run(
    scan: &args::Scan,
    args: &[String],
    forced: Option<&'static str>,
) -> Result<std::convert::Infallible> {
    // A broken config.toml fails `create` (we cannot know what the container should get), but
    // never `delete`, `kill` or `state`: upstream fails every command, which wedges teardown.
    let (cfg, cfg_path) = match Config::load() {
        Ok(loaded) => loaded,
        Err(e) if !scan.create => {
            eprintln!(
                "{NAME}: warning: {}; using the default runtimes to run this command",
                crate::report::one_line(&e)
            );
            (Config::default(), None)
        }
        Err(e) => return Err(e),
    };
    let mut cfg = cfg;
    if let Some(mode) = forced {
        cfg.runtime.mode = mode.to_owned();
    }
    let runtime = find_runtime(&cfg.runtime.runtimes)?;
    if scan.create {
        if driver_not_loaded_in_installed_toolkit(&cfg, cfg_path.as_deref()) {
            eprintln!(
                "{NAME}: warning: nvidia driver modules are not yet loaded, invoking {} directly",
                runtime.display()
            );
        } else {
            modify_bundle(scan, &cfg, cfg_path.as_deref())?;
        }
    }
    let err = std::process::Command::new(&runtime)
        .arg0(&runtime)
        .args(args)
        .exec();
    Err(anyhow!("exec {}: {err}", runtime.display()))
}

/// A toolkit installed by `nvidia-ctk-installer` (its config beside the binary) on a node whose
/// driver is not loaded yet (no `<proc root>/driver/nvidia/version`): as upstream's installed
/// wrappers do, the container runs unmodified, so pods on a default `nvidia` runtime start
/// while the driver container is still coming up. Packages and hand installs keep failing a
/// GPU request instead.
fn driver_not_loaded_in_installed_toolkit(cfg: &Config, cfg_path: Option<&Path>) -> bool {
    if cfg_path.is_none() || cfg_path != crate::config::beside_binary().as_deref() {
        return false;
    }
    let roots = crate::discover::Roots::new(None, None, cfg.nvbox.proc_root.as_deref(), None);
    !roots.proc_path("/proc/driver/nvidia/version").exists()
}

/// The low-level runtime: the first candidate that is an executable regular file, a name being
/// looked up in `$PATH` and then the default directories (§2.3).
fn find_runtime(candidates: &[String]) -> Result<PathBuf> {
    if candidates.is_empty() {
        bail!("at least one runtime candidate must be specified");
    }
    candidates
        .iter()
        .find_map(|c| find_executable(c))
        .ok_or_else(|| anyhow!("no runtime binary found from candidate list: {candidates:?}"))
}

pub fn find_executable(name: &str) -> Option<PathBuf> {
    let is_exec = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if name.contains('/') {
        let p = PathBuf::from(name);
        return is_exec(&p).then_some(p);
    }
    let path = std::env::var("PATH").unwrap_or_default();
    let mut dirs: Vec<&str> = path.split(':').filter(|d| !d.is_empty()).collect();
    for d in DEFAULT_DIRS {
        if !dirs.contains(d) {
            dirs.push(d);
        }
    }
    dirs.into_iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| is_exec(p))
}

/// The mode in effect for this container: `auto` is cdi when every requested device is a
/// fully-qualified CDI name, csv on a Tegra host with integrated GPUs only, else jit-cdi
/// (upstream 1.18+).
fn resolve_mode(cfg: &Config, devices: &Devices) -> Result<&'static str> {
    Ok(match cfg.runtime.mode.as_str() {
        "legacy" => "legacy",
        "cdi" => "cdi",
        "jit-cdi" => "jit-cdi",
        "csv" => "csv",
        "auto" => {
            let all_cdi = match devices {
                Devices::Ids(ids) => !ids.is_empty() && ids.iter().all(|d| is_cdi_name(d)),
                _ => false,
            };
            if all_cdi {
                "cdi"
            } else if is_tegra(cfg) {
                "csv"
            } else {
                "jit-cdi"
            }
        }
        "" => bail!("a mode must be specified"),
        other => bail!("invalid mode {other:?}"),
    })
}

/// Device names from annotations whose key starts with a configured prefix: keys in sorted
/// order, values split on `,` (not validated or de-duplicated here, as upstream).
fn cdi_annotation_devices(
    annotations: &std::collections::BTreeMap<String, String>,
    prefixes: &[String],
) -> Vec<String> {
    annotations
        .iter()
        .filter(|(k, _)| {
            prefixes
                .iter()
                .any(|p| !p.is_empty() && k.starts_with(p.as_str()))
        })
        .flat_map(|(_, v)| v.split(','))
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The kind of upstream's just-in-time CDI names: a spec for them is made at `create`.
const AUTOMATIC_PREFIX: &str = "runtime.nvidia.com/gpu=";

/// `runtime.nvidia.com/gpu=<index|uuid|all|none>` names become the plain ids jit-cdi selects.
/// As upstream, they cannot be mixed with names resolved from spec files (in cdi mode every
/// plain id is such a name, `nvidia.com/gpu=<id>`). True when the request had such names.
fn take_automatic_names(req: &mut Request, mode: &str) -> Result<bool> {
    let Devices::Ids(ids) = &req.devices else {
        return Ok(false);
    };
    if !ids.iter().any(|i| i.starts_with(AUTOMATIC_PREFIX)) {
        return Ok(false);
    }
    let from_specs = |i: &String| mode == "cdi" || is_cdi_name(i);
    if ids
        .iter()
        .any(|i| !i.starts_with(AUTOMATIC_PREFIX) && from_specs(i))
    {
        bail!(
            "requesting a CDI device with vendor 'runtime.nvidia.com' is not supported when \
             requesting other CDI devices"
        );
    }
    let plain: Vec<String> = ids
        .iter()
        .map(|i| i.strip_prefix(AUTOMATIC_PREFIX).unwrap_or(i).to_owned())
        .collect();
    req.devices = if plain.iter().any(|i| i == "all") {
        Devices::All
    } else if plain.iter().all(|i| i == "none") {
        Devices::DriverOnly
    } else {
        Devices::Ids(plain.into_iter().filter(|i| i != "none").collect())
    };
    Ok(true)
}

pub fn is_cdi_name(s: &str) -> bool {
    matches!(s.split_once('='), Some((kind, name)) if kind.contains('/') && !name.is_empty())
}

/// Upstream's platform check: Tegra files, and no discrete GPU beside the integrated one.
fn is_tegra(cfg: &Config) -> bool {
    let g = crate::applets::cli::Global {
        config: Some(cfg.clone()),
        ..Default::default()
    };
    let Ok(roots) = crate::applets::cli::roots(&g) else {
        return false;
    };
    tegra::is_tegra(&roots) && tegra::read_tegra(&roots).only_integrated()
}

/// `create`: decide from the spec what the container asks for, then edit it for the mode.
fn modify_bundle(scan: &args::Scan, cfg: &Config, cfg_path: Option<&Path>) -> Result<()> {
    let bundle = if scan.bundle.is_empty() {
        std::env::current_dir()?
    } else {
        PathBuf::from(&scan.bundle)
    };
    let mut file = SpecFile::read(&bundle)?;
    let container = read_container(&file.value)?;
    let mut req = request_for_runtime(&container, cfg)?;
    // CDI annotations (Kubernetes device plugins set `cdi.k8s.io/…`) come first, and only where
    // CDI names can be honoured (toolkit §3.1).
    if matches!(cfg.runtime.mode.as_str(), "auto" | "cdi") {
        let names = cdi_annotation_devices(
            &container.annotations,
            &cfg.runtime.modes.cdi.annotation_prefixes,
        );
        if !names.is_empty() {
            req.devices = Devices::Ids(names);
        }
    }
    let mut mode = resolve_mode(cfg, &req.devices)?;
    if matches!(mode, "cdi" | "jit-cdi") && take_automatic_names(&mut req, mode)? {
        mode = "jit-cdi";
    }
    crate::info!("Using mode '{mode}' for {}", bundle.display());
    let changed = match mode {
        "legacy" => {
            // A container that asks for nothing is left exactly as the engine wrote it; the
            // hook would only have exited at once (upstream adds it anyway).
            if !req.is_gpu_container() {
                return Ok(());
            }
            let rootfs = oci::rootfs_of(&bundle, &file.value)?;
            let graphics =
                jit::inject_legacy_graphics(&mut file.value, cfg, cfg_path, &req, &rootfs)?;
            let hook = hook_path(cfg);
            let added = oci::add_prestart_hook(&mut file.value, &hook, cfg_path)?;
            let gids = jit::add_legacy_node_gids(&mut file.value, cfg)?;
            jit::add_legacy_compat_hooks(&mut file.value, cfg, cfg_path)?
                || gids
                || added
                || graphics
        }
        _ => {
            let removed = oci::remove_nvidia_hooks(&mut file.value);
            let injected = if req.is_gpu_container() {
                let rootfs = oci::rootfs_of(&bundle, &file.value)?;
                match mode {
                    "cdi" => jit::inject_cdi(&mut file.value, cfg, &req)?,
                    "csv" => {
                        let all = container
                            .env
                            .iter()
                            .any(|e| e == "NVIDIA_REQUIRE_JETPACK=csv-mounts=all");
                        jit::inject_csv(&mut file.value, cfg, cfg_path, &req, all)?
                    }
                    _ => jit::inject_jit(&mut file.value, cfg, cfg_path, &req, &rootfs)?,
                }
                // jit-cdi's plan has them already.
                if matches!(mode, "cdi" | "csv") {
                    jit::inject_gated(&mut file.value, cfg, &req)?;
                }
                true
            } else {
                false
            };
            removed || injected
        }
    };
    if changed {
        file.write()?;
    }
    Ok(())
}

/// `[nvidia-container-runtime-hook] path`, resolved like upstream: absolute as given, else
/// looked up, else `/usr/bin/nvidia-container-runtime-hook`.
fn hook_path(cfg: &Config) -> String {
    let configured = if cfg.hook.path.is_empty() {
        "nvidia-container-runtime-hook"
    } else {
        cfg.hook.path.as_str()
    };
    if configured.starts_with('/') {
        return configured.to_owned();
    }
    find_executable(configured)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| format!("/usr/bin/{configured}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cdi_names_from_annotations() {
        let a: std::collections::BTreeMap<String, String> = [
            ("cdi.k8s.io/b", "nvidia.com/gpu=1, nvidia.com/gpu=3"),
            ("cdi.k8s.io/a", "nvidia.com/gpu=0,"),
            ("other/x", "nvidia.com/gpu=7"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let prefixes = vec!["cdi.k8s.io/".to_owned()];
        assert_eq!(
            cdi_annotation_devices(&a, &prefixes),
            ["nvidia.com/gpu=0", "nvidia.com/gpu=1", "nvidia.com/gpu=3"]
        );
        assert!(cdi_annotation_devices(&a, &[]).is_empty());
        assert!(is_cdi_name("nvidia.com/gpu=0") && !is_cdi_name("0") && !is_cdi_name("a=b"));
    }

    #[test]
    fn automatic_names_become_jit_ids() {
        let take = |ids: &[&str], mode: &str| {
            let mut req = Request::unrequested();
            req.devices = Devices::Ids(ids.iter().map(|s| s.to_string()).collect());
            take_automatic_names(&mut req, mode).map(|t| (t, req.devices))
        };
        let ids = |v: &[&str]| Devices::Ids(v.iter().map(|s| s.to_string()).collect());
        let auto = "runtime.nvidia.com/gpu=";
        assert_eq!(
            take(&[&format!("{auto}1"), &format!("{auto}GPU-x")], "cdi").unwrap(),
            (true, ids(&["1", "GPU-x"]))
        );
        assert_eq!(
            take(&[&format!("{auto}0"), &format!("{auto}all")], "cdi").unwrap(),
            (true, Devices::All)
        );
        assert_eq!(
            take(&[&format!("{auto}none")], "cdi").unwrap(),
            (true, Devices::DriverOnly)
        );
        // In jit-cdi a plain id is a jit id too.
        assert_eq!(
            take(&["2", &format!("{auto}0")], "jit-cdi").unwrap(),
            (true, ids(&["2", "0"]))
        );
        assert_eq!(take(&["0"], "cdi").unwrap(), (false, ids(&["0"])));
        for (mixed, mode) in [
            (&[&format!("{auto}0"), "nvidia.com/gpu=1"][..], "jit-cdi"),
            (&[&format!("{auto}0"), "1"][..], "cdi"),
        ] {
            let e = take(mixed, mode).unwrap_err().to_string();
            assert!(
                e.contains("vendor 'runtime.nvidia.com' is not supported"),
                "{e}"
            );
        }
    }
}
