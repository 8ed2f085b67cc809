//! The spec-editing modes. jit-cdi turns the same plan the live backend applies into CDI
//! container edits and puts them in config.json: runc then creates the device nodes, mounts the
//! files and owns the cgroup rules, so GPU access survives anything that re-applies the cgroup
//! (systemd daemon-reload, `runc update`). cdi resolves CDI names from the spec directories;
//! csv reads Tegra mount specs.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};

use crate::applets::cli::{self, Global};
use crate::config::Config;
use crate::discover::Roots;
use crate::discover::csv::list_csv_files;
use crate::discover::files::IpcOptions;
use crate::discover::gated::find_gated;
use crate::discover::host::{HostQuery, read_host};
use crate::discover::tegra::read_tegra;
use crate::discover::wsl::{Wsl, read_wsl};
use crate::plan::{self, CompatMode, Options, Plan};
use crate::request::{Caps, Devices, Request};
use crate::select::select_devices;
use crate::spec::cdi::{self, ContainerEdits};
use crate::spec::features::Features;
use crate::spec::generate::csv::{CsvOptions, generate_csv_spec};
use crate::spec::generate::wsl::wsl_edits;
use crate::spec::generate::{
    GenerateOptions, HookCommand, NameStrategy, driver_links, edits_from_binds, edits_from_plan,
    finish_nodes, graphics_edits_from_plan,
};
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
    if let Some(wsl) = read_wsl(&roots)? {
        return inject_wsl(spec, &wsl, &roots, cfg_path);
    }
    let needs_gpus = !matches!(req.devices, Devices::DriverOnly);
    let jit = &cfg.runtime.modes.jit_cdi;
    let features = jit_features(cfg)?;
    let query = HostQuery {
        ldcache: Some(cfg.cli.ldcache.clone()).filter(|l| !l.is_empty()),
        gpus: needs_gpus,
        path_env: std::env::var("PATH").ok(),
        mps_dir: std::env::var("CUDA_MPS_PIPE_DIRECTORY").ok(),
        imex_channels: req.imex_channels.clone(),
        gated: req.gated.clone(),
        ipc: IpcOptions::default(),
        cdi_files: true,
        cdi_explicit_libraries: features.explicit_libraries,
        graphics: true,
        ..HostQuery::default()
    };
    let disabled = jit.nvcdi_disable_hooks.clone().unwrap_or_default();
    check_hook_names(&disabled)?;
    let mut host = read_host(&roots, &query)?;
    if features.no_ipc {
        host.ipcs.clear();
    }
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
        graphics: true,
        ..Options::default()
    };
    let mut plan = plan::build_plan(&host, &sel, &opts, &layout)?;
    // As upstream's jit-cdi: driver files at their host paths, with the links a generated spec
    // makes (GBM, the `.so` links the host has); soname links come with the loader cache.
    plan.keep_host_paths(&layout);
    for (target, link) in driver_links(&host).into_iter().flatten() {
        let made = plan.symlinks.iter().any(|(l, _)| *l == link)
            || plan
                .cache
                .iter()
                .any(|c| format!("{}/{}", c.dir, c.soname) == link);
        if !made {
            plan.symlinks.push((link, target));
        }
    }
    let hook = hook_command(cfg_path)?;
    let compute = req.caps.contains(Caps::COMPUTE) || req.caps.contains(Caps::VIDEO);
    let compat = (compute && compat_mode(cfg) != CompatMode::Disabled)
        .then_some(host.driver.version.as_str());
    let mut edits = edits_from_plan(&plan, &host.roots, &hook, compat);
    // Upstream's jit specs keep each host node's mode and group (internal/edits/device.go).
    finish_nodes(&mut edits, features.no_additional_gids);
    edits
        .hooks
        .push(hook.make("update-application-profile", &[]));
    edits.hooks.retain(|h| {
        let name = h.args.get(1).map(String::as_str).unwrap_or("");
        !disabled.iter().any(|d| d == "all" || d == name)
    });
    combine_hooks(&mut edits, &hook);
    // Where the libraries are in this container.
    let mut lib_dirs: Vec<&str> = Vec::new();
    for c in &plan.cache {
        if !lib_dirs.contains(&c.dir.as_str()) {
            lib_dirs.push(&c.dir);
        }
    }
    if !lib_dirs.is_empty() {
        edits
            .env
            .push(format!("NVIDIA_CTK_LIBCUDA_DIR={}", lib_dirs.join(":")));
    }
    edits.env.push("NVIDIA_VISIBLE_DEVICES=void".to_owned());
    cdi::apply_edits(spec, &edits)?;
    allow_extra_rules(spec, &plan, &edits)
}

/// legacy: what upstream's graphics modifier adds beside the prestart hook, for a container
/// that asks for devices and the `graphics` or `display` capability: the graphics config files,
/// EGL platform libraries, X.Org modules, the selected GPUs' DRM nodes and their links. The
/// hook's libraries land in the same directory, so the loader cache is updated over it after the
/// hook ran (createContainer follows prestart); upstream leaves that to libnvidia-container's
/// ldconfig run. Returns whether the spec changed.
pub fn inject_legacy_graphics(
    spec: &mut Value,
    cfg: &Config,
    cfg_path: Option<&Path>,
    req: &Request,
    rootfs: &Path,
) -> Result<bool> {
    let wants = req.caps.contains(Caps::GRAPHICS) || req.caps.contains(Caps::DISPLAY);
    let Some(ids) = req.device_spec().filter(|d| !d.is_empty()) else {
        return Ok(false);
    };
    if !wants {
        return Ok(false);
    }
    let g = Global {
        config: Some(cfg.clone()),
        ..Global::default()
    };
    let roots = cli::roots(&g)?;
    let query = HostQuery {
        ldcache: Some(cfg.cli.ldcache.clone()).filter(|l| !l.is_empty()),
        gpus: true,
        path_env: std::env::var("PATH").ok(),
        graphics: true,
        ..HostQuery::default()
    };
    let host = read_host(&roots, &query)?;
    let sel = select_devices(&host.gpus, &ids).context("device error")?;
    let layout = crate::live::probe_layout(rootfs, false)?;
    let opts = Options {
        caps: req.caps,
        graphics: true,
        ..Options::default()
    };
    let plan = plan::build_graphics_plan(&host, &sel, &opts, &layout);
    let hook = hook_command(cfg_path)?;
    let mut edits = graphics_edits_from_plan(&plan, &host.roots, &hook);
    if edits.is_empty() {
        return Ok(false);
    }
    combine_hooks(&mut edits, &hook);
    cdi::apply_edits(spec, &edits)?;
    Ok(true)
}

/// jit-cdi on WSL2: whatever GPUs are asked for, the container gets `/dev/dxg` and the driver
/// store (upstream's wsl spec has a single `all` device); the same edits `cdi generate --mode
/// wsl` writes.
fn inject_wsl(spec: &mut Value, wsl: &Wsl, roots: &Roots, cfg_path: Option<&Path>) -> Result<()> {
    let plan = plan::build_wsl_plan(wsl, &Options::default());
    let hook = hook_command(cfg_path)?;
    let (device, mut edits) = wsl_edits(&plan, roots, &hook, &|_| true, None);
    edits.append(&device);
    combine_hooks(&mut edits, &hook);
    edits.env.push("NVIDIA_VISIBLE_DEVICES=void".to_owned());
    cdi::apply_edits(spec, &edits)
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
        "update-application-profile",
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
            if matches!(
                name,
                "disable-device-node-modification" | "update-application-profile"
            ) {
                args.push(format!("--{name}"));
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

/// csv (Tegra): the spec `cdi generate --mode csv` would write for this host, and from it the
/// requested devices (`all`, an index or a UUID; upstream's automatic CSV spec) with the common
/// edits. `all_files` is `NVIDIA_REQUIRE_JETPACK=csv-mounts=all` (every CSV file, not only the
/// base three).
pub fn inject_csv(
    spec: &mut Value,
    cfg: &Config,
    cfg_path: Option<&Path>,
    req: &Request,
    all_files: bool,
) -> Result<()> {
    let g = Global {
        config: Some(cfg.clone()),
        ..Global::default()
    };
    let roots = cli::roots(&g)?;
    let tegra = read_tegra(&roots);
    let csv_opts = CsvOptions {
        files: list_csv_files(Path::new(&cfg.runtime.modes.csv.mount_spec_path), all_files),
        ignore_patterns: Vec::new(),
        compat_container_root: cfg.runtime.modes.csv.compat_container_root.clone(),
    };
    let wanted: Vec<String> = match &req.devices {
        Devices::Unrequested => return Ok(()),
        Devices::DriverOnly => Vec::new(),
        Devices::All => vec!["all".to_owned()],
        Devices::Ids(ids) => ids.clone(),
    };
    let hook = hook_command(cfg_path)?;
    let opts = GenerateOptions {
        vendor: "nvidia.com".to_owned(),
        class: "gpu".to_owned(),
        strategies: vec![NameStrategy::Index, NameStrategy::Uuid],
        device_ids: if wanted.is_empty() {
            vec!["none".to_owned()]
        } else {
            wanted.clone()
        },
        no_all_device: false,
        management: false,
        disabled_hooks: cfg
            .runtime
            .modes
            .jit_cdi
            .nvcdi_disable_hooks
            .clone()
            .unwrap_or_default(),
        enabled_hooks: Vec::new(),
        hook: hook.clone(),
        ldconfig_path: None,
        features: jit_features(cfg)?,
    };
    let (csv_spec, warnings) =
        generate_csv_spec(&roots, &tegra, &csv_opts, &opts).context("csv mode")?;
    for w in &warnings {
        crate::warn!("{w}");
    }
    let mut edits = csv_spec.container_edits.clone();
    for name in &wanted {
        let device = csv_spec
            .devices
            .iter()
            .find(|d| d.name == *name)
            .ok_or_else(|| anyhow!("csv mode: unsupported device id: {name}"))?;
        edits.append(&device.container_edits);
    }
    combine_hooks(&mut edits, &hook);
    cdi::apply_edits(spec, &edits)
}

/// The nvcdi feature flags of the spec-making modes; `features.no-additional-gids-for-device-nodes`
/// is the same switch as its flag.
fn jit_features(cfg: &Config) -> Result<Features> {
    let flags = cfg.runtime.modes.jit_cdi.nvcdi_feature_flags.as_deref();
    let mut f = Features::parse(flags.unwrap_or_default())
        .context("[nvidia-container-runtime.modes.jit-cdi] nvcdi-feature-flags")?;
    if cfg.features.no_additional_gids_for_device_nodes == Some(true) {
        f.no_additional_gids = true;
    }
    Ok(f)
}

/// Legacy mode with `cuda-compat-mode = "hook"`: the prestart hook leaves the image's compat
/// libraries alone and these createContainer hooks enable them, then rebuild the loader cache
/// (upstream's gated modifier). `features.disable-cuda-compat-lib-hook` turns them off.
pub fn add_legacy_compat_hooks(
    spec: &mut Value,
    cfg: &Config,
    cfg_path: Option<&Path>,
) -> Result<bool> {
    if cfg.runtime.mode != "legacy"
        || cfg.runtime.modes.legacy.cuda_compat_mode != "hook"
        || cfg.features.disable_cuda_compat_lib_hook == Some(true)
    {
        return Ok(false);
    }
    let g = Global {
        config: Some(cfg.clone()),
        ..Global::default()
    };
    let driver = crate::discover::driver::read_driver(&cli::roots(&g)?)?;
    let hook = hook_command(cfg_path)?;
    let edits = ContainerEdits {
        hooks: vec![
            hook.make(
                "enable-cuda-compat",
                &[format!("--host-driver-version={}", driver.version)],
            ),
            hook.make("update-ldcache", &[]),
        ],
        ..ContainerEdits::default()
    };
    cdi::apply_edits(spec, &edits)?;
    Ok(true)
}

/// Legacy mode: the hook bind-mounts the host's nodes, which keep their mode and group, so a
/// non-root user of a host with 0660 `root:video` nodes would get EACCES (upstream's legacy mode
/// does). The group of the driver's nodes (`NVreg_DeviceFileGID` sets it for all of them, as
/// `/dev/nvidiactl` shows) becomes an additional GID when the mode does not open them to all,
/// as jit-cdi does; `no-additional-gids-for-device-nodes` turns it off.
pub fn add_legacy_node_gids(spec: &mut Value, cfg: &Config) -> Result<bool> {
    use std::os::unix::fs::MetadataExt;
    if cfg.features.no_additional_gids_for_device_nodes == Some(true) {
        return Ok(false);
    }
    let g = Global {
        config: Some(cfg.clone()),
        ..Global::default()
    };
    let Ok(m) = std::fs::metadata(cli::roots(&g)?.dev_path("/dev/nvidiactl")) else {
        return Ok(false);
    };
    if m.gid() == 0 || m.mode() & 0o006 == 0o006 {
        return Ok(false);
    }
    let edits = ContainerEdits {
        additional_gids: vec![m.gid()],
        ..ContainerEdits::default()
    };
    cdi::apply_edits(spec, &edits)?;
    Ok(true)
}

/// `nvcdi-disable-hooks` names upstream's hooks (or `all`); a name no hook has is a typo that
/// would otherwise disable nothing.
fn check_hook_names(names: &[String]) -> Result<()> {
    const HOOKS: &[&str] = &[
        "all",
        "chmod",
        "create-symlinks",
        "disable-device-node-modification",
        "enable-cuda-compat",
        "update-application-profile",
        "update-ldcache",
    ];
    match names.iter().find(|n| !HOOKS.contains(&n.as_str())) {
        Some(n) => bail!(
            "[nvidia-container-runtime.modes.jit-cdi] nvcdi-disable-hooks: unknown hook {n:?}"
        ),
        None => Ok(()),
    }
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
