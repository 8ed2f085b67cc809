//! The spec-editing modes. jit-cdi turns the same plan the live backend applies into CDI
//! container edits and puts them in config.json: runc then creates the device nodes, mounts the
//! files and owns the cgroup rules, so GPU access survives anything that re-applies the cgroup
//! (systemd daemon-reload, `runc update`). cdi resolves CDI names from the spec directories;
//! csv reads Tegra mount specs.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use serde_json::{Value, json};

use crate::applets::cli::{self, Global};
use crate::config::Config;
use crate::discover::files::IpcOptions;
use crate::discover::gated::find_gated;
use crate::discover::host::{HostQuery, read_host};
use crate::plan::{self, CompatMode, Options, Plan};
use crate::request::{Caps, Devices, Request};
use crate::select::select_devices;
use crate::spec::cdi::{self, ContainerEdits};
use crate::spec::generate::{HookCommand, edits_from_binds, edits_from_plan};
use crate::spec::oci;

/// jit-cdi: discover, plan, and write the plan into the spec.
pub fn inject_jit(
    spec: &mut Value,
    cfg: &Config,
    cfg_path: Option<&Path>,
    req: &Request,
    rootfs: &Path,
) -> Result<()> {
    let g = Global {
        config: Some(cfg.clone()),
        ..Global::default()
    };
    let roots = cli::roots(&g)?;
    let needs_gpus = !matches!(req.devices, Devices::DriverOnly);
    let query = HostQuery {
        ldcache: Some(cfg.cli.ldcache.clone()).filter(|l| !l.is_empty()),
        gpus: needs_gpus,
        path_env: std::env::var("PATH").ok(),
        mps_dir: std::env::var("CUDA_MPS_PIPE_DIRECTORY").ok(),
        imex_channels: req.imex_channels.clone(),
        gated: req.gated.clone(),
        ipc: IpcOptions::default(),
        ..HostQuery::default()
    };
    let host = read_host(&roots, &query)?;
    let spec_ids = req.device_spec().unwrap_or_default();
    let sel = select_devices(&host.gpus, &spec_ids).context("device error")?;
    let layout = crate::live::probe_layout(rootfs, false)?;
    // Like upstream's jit-cdi, every driver library is offered whatever NVIDIA_DRIVER_CAPABILITIES
    // says (32-bit ones excepted): the image decides what it loads.
    let opts = Options {
        caps: Caps::COMPUTE
            .union(Caps::DISPLAY)
            .union(Caps::GRAPHICS)
            .union(Caps::NGX)
            .union(Caps::UTILITY)
            .union(Caps::VIDEO),
        compat_mode: CompatMode::Disabled,
        ..Options::default()
    };
    let plan = plan::build_plan(&host, &sel, &opts, &layout)?;
    let hook = hook_command(cfg_path)?;
    let compute = req.caps.contains(Caps::COMPUTE) || req.caps.contains(Caps::VIDEO);
    let compat = (compute && compat_mode(cfg) != CompatMode::Disabled)
        .then_some(host.driver.version.as_str());
    let mut edits = edits_from_plan(&plan, &host.roots, &hook, compat);
    combine_hooks(&mut edits, &hook);
    edits.env.push("NVIDIA_VISIBLE_DEVICES=void".to_owned());
    cdi::apply_edits(spec, &edits)?;
    allow_extra_rules(spec, &plan, &edits)
}

/// Our own hooks, run as one `nvbox-jit` process: the spec is made for this binary on the fly,
/// so there is no need for four hook processes per container start (upstream's form, which
/// `cdi generate` keeps for specs other tools read).
fn combine_hooks(edits: &mut ContainerEdits, hook: &HookCommand) {
    const OURS: &[&str] = &[
        "create-symlinks",
        "enable-cuda-compat",
        "disable-device-node-modification",
        "update-ldcache",
    ];
    let mut args: Vec<String> = Vec::new();
    edits.hooks.retain(|h| {
        // `nvidia-cdi-hook NAME …` or, for a binary named nvidia-ctk, `nvidia-ctk hook NAME …`.
        let at = if h.args.first().is_some_and(|a| a == "nvidia-ctk") {
            2
        } else {
            1
        };
        let name = h.args.get(at).map(String::as_str).unwrap_or("");
        let ours = h.path == hook.path && OURS.contains(&name);
        if ours {
            if name == "disable-device-node-modification" {
                args.push("--disable-device-node-modification".to_owned());
            }
            args.extend(h.args.iter().skip(at + 1).cloned());
        }
        !ours
    });
    if !args.is_empty() {
        edits
            .hooks
            .push(hook.make(crate::applets::cdi_hook::JIT_HOOK, &args));
    }
}

/// cdi: resolve the requested names (unqualified ones get the default kind) from the spec
/// directories and apply them.
pub fn inject_cdi(spec: &mut Value, cfg: &Config, req: &Request) -> Result<()> {
    let kind = &cfg.runtime.modes.cdi.default_kind;
    let names: Vec<String> = match &req.devices {
        Devices::Unrequested => return Ok(()),
        Devices::DriverOnly => vec![format!("{kind}=none")],
        Devices::All => vec![format!("{kind}=all")],
        Devices::Ids(ids) => {
            let mut names: Vec<String> = Vec::new();
            for id in ids {
                let name = if super::is_cdi_name(id) {
                    id.clone()
                } else {
                    format!("{kind}={id}")
                };
                if !names.contains(&name) {
                    names.push(name);
                }
            }
            names
        }
    };
    let dirs: Vec<PathBuf> = cfg
        .runtime
        .modes
        .cdi
        .spec_dirs
        .iter()
        .map(PathBuf::from)
        .collect();
    let registry = cdi::load_registry(&dirs)?;
    let edits = registry.resolve(&names).map_err(|e| {
        // Upstream logs the spec errors as warnings beside this error; on our one line they
        // say why a device is missing (a spec that does not parse, two files defining it).
        let causes: Vec<String> = registry
            .errors()
            .iter()
            .map(|l| format!("{}: {}", l.path.display(), l.message))
            .collect();
        if causes.is_empty() {
            anyhow!("failed to inject CDI devices: {e:#}")
        } else {
            anyhow!(
                "failed to inject CDI devices: {e:#} (spec errors: {})",
                causes.join("; ")
            )
        }
    })?;
    for e in &edits {
        cdi::apply_edits(spec, e)?;
    }
    Ok(())
}

/// The gated devices of cdi and csv modes, which have no plan of their own: discovered, made
/// plan data and turned into edits as jit-cdi's are. Upstream's cdi mode drops them silently.
pub fn inject_gated(spec: &mut Value, cfg: &Config, req: &Request) -> Result<()> {
    if req.gated.is_empty() {
        return Ok(());
    }
    let g = Global {
        config: Some(cfg.clone()),
        ..Global::default()
    };
    let roots = cli::roots(&g)?;
    let mut plan = Plan::default();
    plan::add_gated(
        &mut plan,
        &Options::default(),
        &find_gated(&roots, &req.gated),
    );
    cdi::apply_edits(spec, &edits_from_binds(&plan.binds, &roots))
}

/// csv (Tegra): the mount spec files turned into edits; `all_files` is
/// `NVIDIA_REQUIRE_JETPACK=csv-mounts=all` (every CSV file, not only the base three).
pub fn inject_csv(spec: &mut Value, cfg: &Config, all_files: bool) -> Result<()> {
    use crate::spec::csv;
    let files = csv::list_csv_files(Path::new(&cfg.runtime.modes.csv.mount_spec_path), all_files);
    let (specs, mut warnings) = csv::load_mount_specs(&files);
    let root = if cfg.cli.root.is_empty() {
        "/"
    } else {
        cfg.cli.root.as_str()
    };
    let exe = std::env::current_exe().context("locate the nvbox binary")?;
    let (mut edits, more) =
        csv::edits_from_mount_specs(&specs, Path::new(root), &exe.display().to_string());
    warnings.extend(more);
    for w in &warnings {
        crate::warn!("{w}");
    }
    for h in &mut edits.hooks {
        // Called by path, the binary picks its role from argv[0].
        if let Some(first) = h.args.first_mut() {
            *first = "nvidia-cdi-hook".to_owned();
        }
    }
    // The soname links of the listed libraries (`sym` entries for them are skipped, as upstream
    // does) come from the loader-cache update over their directories.
    let mut folders: Vec<String> = Vec::new();
    for m in &edits.mounts {
        if m.container_path.contains(".so")
            && let Some((dir, _)) = m.container_path.rsplit_once('/')
            && !folders.iter().any(|f| f == dir)
        {
            folders.push(dir.to_owned());
        }
    }
    if !folders.is_empty() {
        let hook = hook_command(None)?;
        let args: Vec<String> = folders.iter().map(|f| format!("--folder={f}")).collect();
        edits.hooks.push(hook.make("update-ldcache", &args));
    }
    cdi::apply_edits(spec, &edits)
}

fn compat_mode(cfg: &Config) -> CompatMode {
    match cfg.runtime.modes.legacy.cuda_compat_mode.as_str() {
        "disabled" => CompatMode::Disabled,
        _ if cfg.features.disable_cuda_compat_lib_hook == Some(true) => CompatMode::Disabled,
        _ => CompatMode::Ldconfig,
    }
}

/// How the injected createContainer hooks call us: this very binary, as `nvidia-cdi-hook`,
/// with an explicit environment (the engine's is not passed to hooks reliably) that carries
/// the config file the runtime used.
fn hook_command(cfg_path: Option<&Path>) -> Result<HookCommand> {
    let exe = std::env::current_exe().context("locate the nvbox binary")?;
    let mut env = vec!["PATH=/usr/sbin:/usr/bin:/sbin:/bin".to_owned()];
    if let Some(p) = cfg_path {
        env.push(format!("NVIDIA_CTK_CONFIG_FILE_PATH={}", p.display()));
    }
    Ok(HookCommand::new(exe.display().to_string(), env))
}

/// Cgroup rules with no device node of their own (mig-config's whole cap directory) go
/// straight into `linux.resources.devices`.
fn allow_extra_rules(spec: &mut Value, plan: &Plan, edits: &ContainerEdits) -> Result<()> {
    let covered = |major: u32, minor: u32| {
        edits
            .device_nodes
            .iter()
            .any(|d| d.major == Some(i64::from(major)) && d.minor == Some(i64::from(minor)))
    };
    let extra: Vec<Value> = plan
        .cgroup
        .iter()
        .filter(|(ma, mi)| !covered(*ma, *mi))
        .map(|(ma, mi)| json!({"allow": true, "type": "c", "major": ma, "minor": mi, "access": "rwm"}))
        .collect();
    if extra.is_empty() {
        return Ok(());
    }
    oci::array_at_path(spec, &["linux", "resources", "devices"])?.extend(extra);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_hooks_run_as_one_process_in_upstreams_order() {
        let hook = HookCommand::new("/usr/bin/nvbox".into(), vec!["PATH=/bin".into()]);
        let mut edits = ContainerEdits {
            hooks: vec![
                hook.make("create-symlinks", &["--link=a::/b".into()]),
                hook.make("disable-device-node-modification", &[]),
                hook.make(
                    "enable-cuda-compat",
                    &["--host-driver-version=535.1".into()],
                ),
                hook.make("update-ldcache", &["--folder=/usr/lib64".into()]),
            ],
            ..ContainerEdits::default()
        };
        let mut other = hook.make("chmod", &["--mode=755".into()]);
        other.path = "/elsewhere/tool".into();
        edits.hooks.push(other.clone());
        combine_hooks(&mut edits, &hook);
        assert_eq!(edits.hooks.len(), 2);
        assert_eq!(edits.hooks[0], other);
        assert_eq!(
            edits.hooks[1].args,
            [
                "nvidia-cdi-hook",
                "nvbox-jit",
                "--link=a::/b",
                "--disable-device-node-modification",
                "--host-driver-version=535.1",
                "--folder=/usr/lib64"
            ]
        );
        assert_eq!(edits.hooks[1].env, ["PATH=/bin"]);
    }
}
