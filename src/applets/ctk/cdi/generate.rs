//! `nvidia-ctk cdi generate`: discovery from procfs, sysfs, /dev and the driver root's
//! ld.so.cache (no NVML), roots from flags, then the environment, then config.toml as
//! `nvidia-container-cli` reads them.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};

use super::{Flag, Format, env_list, log_warn, next_flag, parse_bool, split_list, write_spec};
use crate::applets::ctk::Global;
use crate::discover::Roots;
use crate::discover::csv::{DEFAULT_CSV_FILES, DEFAULT_MOUNT_SPEC_PATH};
use crate::discover::gated::Gated;
use crate::discover::host::{HostQuery, read_host};
use crate::discover::tegra::{is_tegra, read_tegra};
use crate::discover::wsl::{DXG, Wsl, is_wsl, read_wsl};
use crate::spec::cdi::parse_qualified_name;
use crate::spec::features::Features;
use crate::spec::generate::csv::{CsvOptions, generate_csv_spec};
use crate::spec::generate::wsl::generate_wsl_spec;
use crate::spec::generate::{
    GenerateOptions, HookCommand, NameStrategy, generate_gated_spec, generate_imex_spec,
    generate_spec,
};

/// Driver binaries are looked up in fixed directories: a spec must not depend on the caller.
const BIN_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Debug, Default)]
struct Args {
    output: Option<PathBuf>,
    format: Option<String>,
    mode: Option<String>,
    strategies: Vec<String>,
    driver_root: Option<PathBuf>,
    dev_root: Option<PathBuf>,
    proc_root: Option<PathBuf>,
    sys_root: Option<PathBuf>,
    hook_path: Option<String>,
    ldconfig_path: Option<String>,
    vendor: Option<String>,
    class: Option<String>,
    device_ids: Vec<String>,
    no_all_device: Option<bool>,
    disabled_hooks: Vec<String>,
    enabled_hooks: Vec<String>,
    feature_flags: Vec<String>,
    library_search_paths: Vec<String>,
    config_search_paths: Vec<String>,
    csv_files: Vec<String>,
    csv_ignore_patterns: Vec<String>,
    csv_compat_root: Option<String>,
}

const PREFIX: &str = "NVIDIA_CTK_CDI_GENERATE_";

fn env(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.is_empty())
}

fn parse_args(args: Vec<OsString>) -> Result<Option<Args>> {
    let mut a = Args::default();
    let mut it = args.into_iter();
    while let Some(flag) = next_flag(&mut it)? {
        let list = |f: Flag, it: &mut std::vec::IntoIter<OsString>, to: &mut Vec<String>| {
            f.value(it).map(|v| to.extend(split_list(&v)))
        };
        match flag.name.as_str() {
            "output" => a.output = Some(flag.value(&mut it)?.into()),
            "format" => a.format = Some(flag.value(&mut it)?),
            "mode" | "discovery-mode" => a.mode = Some(flag.value(&mut it)?),
            "device-name-strategy" => list(flag, &mut it, &mut a.strategies)?,
            "driver-root" => a.driver_root = Some(flag.value(&mut it)?.into()),
            "dev-root" => a.dev_root = Some(flag.value(&mut it)?.into()),
            "proc-root" => a.proc_root = Some(flag.value(&mut it)?.into()),
            "sys-root" => a.sys_root = Some(flag.value(&mut it)?.into()),
            "nvidia-cdi-hook-path" | "nvidia-ctk-path" => a.hook_path = Some(flag.value(&mut it)?),
            "ldconfig-path" => a.ldconfig_path = Some(flag.value(&mut it)?),
            "vendor" | "cdi-vendor" => a.vendor = Some(flag.value(&mut it)?),
            "class" | "cdi-class" => a.class = Some(flag.value(&mut it)?),
            "device-id" | "device-ids" | "device" | "devices" => {
                list(flag, &mut it, &mut a.device_ids)?
            }
            "no-all-device" => a.no_all_device = Some(flag.boolean()?),
            "disable-hook" | "disable-hooks" => list(flag, &mut it, &mut a.disabled_hooks)?,
            "enable-hook" | "enable-hooks" => list(flag, &mut it, &mut a.enabled_hooks)?,
            "feature-flag" | "feature-flags" => list(flag, &mut it, &mut a.feature_flags)?,
            "library-search-path" => list(flag, &mut it, &mut a.library_search_paths)?,
            "config-search-path" => list(flag, &mut it, &mut a.config_search_paths)?,
            "csv.file" => list(flag, &mut it, &mut a.csv_files)?,
            "csv.ignore-pattern" => list(flag, &mut it, &mut a.csv_ignore_patterns)?,
            "csv.compat-container-root" => a.csv_compat_root = Some(flag.value(&mut it)?),
            "help" | "h" => return Ok(None),
            other => bail!("flag provided but not defined: -{other}"),
        }
    }
    Ok(Some(a))
}

pub fn run(g: &Global, args: Vec<OsString>) -> Result<ExitCode> {
    let Some(mut a) = parse_args(args)? else {
        print!("{HELP}");
        return Ok(ExitCode::SUCCESS);
    };
    fill_from_env(&mut a);
    let cfg = super::load_config(g)?;
    let mode = a
        .mode
        .clone()
        .unwrap_or_else(|| "auto".to_owned())
        .to_lowercase();
    let gated = Gated::from_mode(&mode);
    let imex = mode == "imex";
    let management = match mode.as_str() {
        "auto" | "nvml" | "wsl" | "csv" => false,
        "management" => true,
        _ if gated.is_some() || imex => false,
        _ => bail!("invalid discovery mode: {mode}"),
    };
    // Upstream uses library search paths in csv mode only, and config search paths to find the
    // graphics config files; neither has a use in what nvbox generates.
    if !a.library_search_paths.is_empty() {
        bail!("--library-search-path is not supported by nvbox: it applies to csv mode only");
    }
    if !a.config_search_paths.is_empty() {
        bail!(
            "--config-search-path is not supported by nvbox: graphics config files are searched in /etc and $XDG_DATA_DIRS"
        );
    }
    let format = output_format(g, &a)?;
    let vendor = a.vendor.clone().unwrap_or_else(|| {
        if management {
            "management.nvidia.com"
        } else {
            "nvidia.com"
        }
        .to_owned()
    });
    // Upstream's command line defaults every mode to `gpu`, so a gated spec's `all` collides
    // with the GPU spec's in the same directory and the CDI registry drops both; its library
    // names the class after the mode, which is what nvbox defaults to.
    let class = a.class.clone().unwrap_or_else(|| {
        match gated {
            Some(kind) => kind.name(),
            None if imex => "imex-channel",
            None => "gpu",
        }
        .to_owned()
    });
    parse_qualified_name(&format!("{vendor}/{class}=x"))
        .context("invalid CDI vendor or class name")?;
    let mut strategies = Vec::new();
    for s in if a.strategies.is_empty() {
        vec!["index".to_owned(), "uuid".to_owned()]
    } else {
        a.strategies.clone()
    } {
        match NameStrategy::parse(&s) {
            Some(n) => strategies.push(n),
            None => bail!("invalid device name strategy: {s}"),
        }
    }
    let device_ids = if a.device_ids.is_empty() {
        vec!["all".to_owned()]
    } else {
        a.device_ids.clone()
    };
    for id in &device_ids {
        // A fully qualified CDI name is not a device id.
        if parse_qualified_name(id).is_ok() {
            bail!("invalid device id {id:?}");
        }
    }
    let no_all = a.no_all_device.unwrap_or(false) || device_ids.iter().any(|d| d == "none");
    let cfg_root = Some(PathBuf::from(&cfg.cli.root)).filter(|p| !p.as_os_str().is_empty());
    let roots = Roots::new(
        a.driver_root.as_deref().or(cfg_root.as_deref()),
        a.dev_root.as_deref().or(cfg.nvbox.dev_root.as_deref()),
        a.proc_root.as_deref().or(cfg.nvbox.proc_root.as_deref()),
        a.sys_root.as_deref().or(cfg.nvbox.sys_root.as_deref()),
    );
    let features = Features::parse(&a.feature_flags).context("failed to create CDI library")?;
    if gated.is_some() || imex {
        let opts = GenerateOptions {
            vendor,
            class,
            strategies,
            device_ids,
            no_all_device: no_all,
            management: false,
            disabled_hooks: Vec::new(),
            enabled_hooks: Vec::new(),
            hook: HookCommand::new(String::new(), Vec::new()),
            ldconfig_path: None,
            features,
        };
        let spec = match gated {
            Some(kind) => generate_gated_spec(&roots, kind, &opts),
            None => generate_imex_spec(&roots, &opts),
        }
        .context("failed to generate CDI spec")?;
        write_spec(&spec, format, a.output.as_deref())?;
        return Ok(ExitCode::SUCCESS);
    }
    // Upstream's auto mode picks wsl where dxcore is found; here, where `/dev/dxg` is.
    let wsl = mode == "wsl" || (mode == "auto" && is_wsl(&roots));
    if wsl {
        let found = read_wsl(&roots)
            .context("failed to create CDI library")?
            .ok_or_else(|| anyhow!("failed to create CDI library: WSL2 mode but no {DXG}"))?;
        report_wsl(g, &found);
        let mut opts = generate_options(
            &a, vendor, class, strategies, device_ids, no_all, management,
        );
        opts.features = features;
        let spec =
            generate_wsl_spec(&found, &roots, &opts).context("failed to generate CDI spec")?;
        write_spec(&spec, format, a.output.as_deref())?;
        return Ok(ExitCode::SUCCESS);
    }
    // Upstream's auto mode picks csv on Tegra hosts whose GPUs are all integrated.
    let csv = mode == "csv"
        || (mode == "auto" && is_tegra(&roots) && read_tegra(&roots).only_integrated());
    if csv {
        let tegra = read_tegra(&roots);
        let files = if a.csv_files.is_empty() {
            DEFAULT_CSV_FILES
                .iter()
                .map(|f| Path::new(DEFAULT_MOUNT_SPEC_PATH).join(f))
                .collect()
        } else {
            a.csv_files.iter().map(PathBuf::from).collect()
        };
        let csv_opts = CsvOptions {
            files,
            ignore_patterns: a.csv_ignore_patterns.clone(),
            compat_container_root: a.csv_compat_root.clone(),
        };
        let mut opts = generate_options(
            &a, vendor, class, strategies, device_ids, no_all, management,
        );
        opts.features = features;
        let (spec, warnings) = generate_csv_spec(&roots, &tegra, &csv_opts, &opts)
            .context("failed to generate CDI spec")?;
        for w in &warnings {
            log_warn(g, w);
        }
        write_spec(&spec, format, a.output.as_deref())?;
        return Ok(ExitCode::SUCCESS);
    }
    let query = HostQuery {
        gpus: !management,
        cdi_explicit_libraries: features.explicit_libraries,
        path_env: Some(BIN_PATH.to_owned()),
        cdi_files: true,
        // Management specs carry device nodes only (upstream pkg/nvcdi/management.go).
        graphics: !management,
        ..HostQuery::default()
    };
    let mut host = read_host(&roots, &query).context("failed to create CDI library")?;
    if features.no_ipc {
        // The sockets only: the MPS binaries stay, as upstream's.
        host.ipcs.clear();
    }
    let mut opts = generate_options(
        &a, vendor, class, strategies, device_ids, no_all, management,
    );
    opts.features = features;
    let spec = generate_spec(&host, &opts).context("failed to generate CDI spec")?;
    write_spec(&spec, format, a.output.as_deref())?;
    Ok(ExitCode::SUCCESS)
}

fn generate_options(
    a: &Args,
    vendor: String,
    class: String,
    strategies: Vec<NameStrategy>,
    device_ids: Vec<String>,
    no_all_device: bool,
    management: bool,
) -> GenerateOptions {
    GenerateOptions {
        vendor,
        class,
        strategies,
        device_ids,
        no_all_device,
        management,
        disabled_hooks: a.disabled_hooks.clone(),
        enabled_hooks: a.enabled_hooks.clone(),
        hook: HookCommand::new(
            hook_path(a.hook_path.as_deref()),
            vec!["NVIDIA_CTK_DEBUG=false".to_owned()],
        ),
        ldconfig_path: a.ldconfig_path.clone(),
        // Set by the caller, which has parsed them.
        features: Features::default(),
    }
}

/// Upstream's log lines for the store it uses and the required files it skips.
fn report_wsl(g: &Global, w: &Wsl) {
    for other in &w.other_stores {
        log_warn(
            g,
            &format!("Ignoring older NVIDIA driver store {}", other.path),
        );
    }
    for m in &w.missing {
        log_warn(g, &format!("Could not locate {m}: skipping"));
    }
}

fn fill_from_env(a: &mut Args) {
    let set = |slot: &mut Option<String>, key: &str| {
        if slot.is_none() {
            *slot = env(key);
        }
    };
    set(&mut a.format, &format!("{PREFIX}OUTPUT_FORMAT"));
    set(&mut a.mode, &format!("{PREFIX}MODE"));
    set(&mut a.hook_path, "NVIDIA_CTK_CDI_HOOK_PATH");
    set(&mut a.ldconfig_path, &format!("{PREFIX}LDCONFIG_PATH"));
    set(&mut a.vendor, &format!("{PREFIX}VENDOR"));
    set(&mut a.class, &format!("{PREFIX}CLASS"));
    let path = |slot: &mut Option<PathBuf>, key: &str| {
        if slot.is_none() {
            *slot = env(key).map(PathBuf::from);
        }
    };
    path(&mut a.output, "NVIDIA_CTK_CDI_OUTPUT_FILE_PATH");
    path(&mut a.driver_root, "NVIDIA_CTK_DRIVER_ROOT");
    path(&mut a.dev_root, "NVIDIA_CTK_DEV_ROOT");
    let list = |slot: &mut Vec<String>, key: &str| {
        if slot.is_empty() {
            *slot = env_list(key);
        }
    };
    list(
        &mut a.strategies,
        &format!("{PREFIX}DEVICE_NAME_STRATEGIES"),
    );
    list(&mut a.device_ids, &format!("{PREFIX}DEVICE_IDS"));
    list(&mut a.disabled_hooks, &format!("{PREFIX}DISABLED_HOOKS"));
    list(&mut a.enabled_hooks, &format!("{PREFIX}ENABLED_HOOKS"));
    list(&mut a.feature_flags, &format!("{PREFIX}FEATURE_FLAGS"));
    list(
        &mut a.library_search_paths,
        &format!("{PREFIX}LIBRARY_SEARCH_PATHS"),
    );
    list(
        &mut a.config_search_paths,
        &format!("{PREFIX}CONFIG_SEARCH_PATHS"),
    );
    list(&mut a.csv_files, &format!("{PREFIX}CSV_FILES"));
    list(
        &mut a.csv_ignore_patterns,
        &format!("{PREFIX}CSV_IGNORE_PATTERNS"),
    );
    if a.csv_compat_root.is_none() {
        a.csv_compat_root = env(&format!("{PREFIX}CSV_CONTAINER_COMPAT_ROOT"));
    }
    if a.no_all_device.is_none() {
        a.no_all_device = env(&format!("{PREFIX}NO_ALL_DEVICE")).and_then(|v| parse_bool(&v));
    }
}

/// An explicit format wins (a different extension only warns); else the output's extension.
fn output_format(g: &Global, a: &Args) -> Result<Format> {
    let by_ext = a.output.as_deref().and_then(Format::from_path);
    match &a.format {
        Some(f) => {
            let f = Format::parse(f)?;
            if by_ext.is_some_and(|e| e != f) {
                log_warn(
                    g,
                    "Requested output format does not match output file extension",
                );
            }
            Ok(f)
        }
        None => Ok(by_ext.unwrap_or(Format::Yaml)),
    }
}

/// `nvidia-cdi-hook` from PATH, else its packaged location.
fn hook_path(explicit: Option<&str>) -> String {
    if let Some(p) = explicit {
        return p.to_owned();
    }
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join("nvidia-cdi-hook"))
        .find(|p| p.is_file())
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "/usr/bin/nvidia-cdi-hook".to_owned())
}

const HELP: &str = "NAME:
   nvidia-ctk cdi generate - Generate CDI specifications for use with CDI-enabled runtimes

USAGE:
   nvidia-ctk cdi generate [command options]

OPTIONS:
   --output value                    the path where the spec is written (default: stdout) [$NVIDIA_CTK_CDI_OUTPUT_FILE_PATH]
   --format value                    json or yaml (default: yaml) [$NVIDIA_CTK_CDI_GENERATE_OUTPUT_FORMAT]
   --mode value, --discovery-mode    auto, nvml, management, csv, wsl, gds, mofed, gdrcopy, nvswitch
                                     or imex (default: auto) [$NVIDIA_CTK_CDI_GENERATE_MODE]
   --device-name-strategy value      index, uuid, type-index (default: index, uuid) [$NVIDIA_CTK_CDI_GENERATE_DEVICE_NAME_STRATEGIES]
   --driver-root value               the driver root (default: /) [$NVIDIA_CTK_DRIVER_ROOT]
   --dev-root value                  where /dev is read (default: the driver root) [$NVIDIA_CTK_DEV_ROOT]
   --proc-root value                 where /proc is read (default: /)
   --sys-root value                  where /sys is read (default: /)
   --nvidia-cdi-hook-path value      the hook binary [$NVIDIA_CTK_CDI_HOOK_PATH]
   --ldconfig-path value             ldconfig for the update-ldcache hook [$NVIDIA_CTK_CDI_GENERATE_LDCONFIG_PATH]
   --vendor value, --cdi-vendor      (default: nvidia.com) [$NVIDIA_CTK_CDI_GENERATE_VENDOR]
   --class value, --cdi-class        (default: gpu; the mode's name for gds, mofed, gdrcopy and
                                     nvswitch; imex-channel for imex) [$NVIDIA_CTK_CDI_GENERATE_CLASS]
   --device-id value                 all, none, or device ids (default: all) [$NVIDIA_CTK_CDI_GENERATE_DEVICE_IDS]
   --no-all-device                   no `all` device (default: false) [$NVIDIA_CTK_CDI_GENERATE_NO_ALL_DEVICE]
   --disable-hook value              hooks to leave out, or all [$NVIDIA_CTK_CDI_GENERATE_DISABLED_HOOKS]
   --enable-hook value               hooks to include (beats --disable-hook) [$NVIDIA_CTK_CDI_GENERATE_ENABLED_HOOKS]
   --feature-flag value              disable-ipc-discoverer, enable-explicit-driver-libraries,
                                     no-additional-gids-for-device-nodes [$NVIDIA_CTK_CDI_GENERATE_FEATURE_FLAGS]
   --csv.file value                  CSV files for csv mode, repeatable (default: devices.csv, drivers.csv, l4t.csv
                                     of /etc/nvidia-container-runtime/host-files-for-container.d) [$NVIDIA_CTK_CDI_GENERATE_CSV_FILES]
   --csv.ignore-pattern value        sym entries to leave out: a glob on the path, **/GLOB on the name [$NVIDIA_CTK_CDI_GENERATE_CSV_IGNORE_PATTERNS]
   --csv.compat-container-root value CUDA forward-compat directory in Orin images (default: /usr/local/cuda/compat_orin)
                                     [$NVIDIA_CTK_CDI_GENERATE_CSV_CONTAINER_COMPAT_ROOT]
";
