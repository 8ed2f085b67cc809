//! `nvidia-container-cli info [--csv|--json]`: driver and GPU facts in upstream's exact layout.
//! Unlike upstream, `info` does not look up driver files: a broken ld.so.cache has nothing to do
//! with the versions and GPUs it prints, and skipping the lookup keeps it well under a millisecond.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result};
use lexopt::prelude::*;
use serde_json::json;

use super::{Global, command_help, input_error, prepare_host, reject_positional};
use crate::discover::driver::{Driver, read_driver};
use crate::discover::gpus::{Gpu, read_gpus};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Text,
    Csv,
    Json,
}

pub fn run(g: &Global, args: Vec<OsString>) -> Result<ExitCode> {
    let mut format = Format::Text;
    let mut parser = lexopt::Parser::from_args(args);
    while let Some(arg) = parser.next().map_err(input_error)? {
        match arg {
            Short('c') | Long("csv") => format = Format::Csv,
            Long("json") => format = Format::Json,
            Short('h') | Short('?') | Long("help") => return command_help(HELP),
            Value(v) => reject_positional(v)?,
            other => return Err(input_error(other.unexpected())),
        }
    }
    let (roots, known_gpus) = prepare_host(g)?;
    if let Some(wsl) = super::list::wsl_host(&roots)? {
        // The version is the store's (its `.inf`); the GPUs sit behind /dev/dxg, where only
        // NVML (which nvbox does not load) can name them.
        let version = wsl
            .store
            .version
            .clone()
            .unwrap_or_else(|| "unknown".to_owned());
        let branch = version.split('.').next().and_then(|b| b.parse().ok());
        let driver = Driver {
            cuda: branch.and_then(crate::discover::tables::cuda_version_for_branch),
            version,
        };
        eprintln!(
            "nvidia-container-cli: WSL2: GPUs behind {} are not listed (they need NVML); driver store {}",
            wsl.dxg.path, wsl.store.path
        );
        let text = match format {
            Format::Text => render_text(&driver, &[]),
            Format::Csv => render_csv(&driver, &[]),
            Format::Json => render_json(&driver, &[]),
        };
        std::io::stdout().lock().write_all(text.as_bytes())?;
        return Ok(ExitCode::SUCCESS);
    }
    let driver = read_driver(&roots).context("initialization error")?;
    let gpus = match known_gpus {
        Some(gpus) => gpus,
        None => read_gpus(&roots).context("detection error")?,
    };
    let text = match format {
        Format::Text => render_text(&driver, &gpus),
        Format::Csv => render_csv(&driver, &gpus),
        Format::Json => render_json(&driver, &gpus),
    };
    std::io::stdout().lock().write_all(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

/// Labels left-justified in 15 columns, then one space (libnvidia-container's `%-15s `).
fn field(out: &mut String, label: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "{:<15} {value}", format!("{label}:"));
}

pub fn render_text(driver: &Driver, gpus: &[Gpu]) -> String {
    let mut out = String::new();
    field(&mut out, "NVRM version", &driver.version);
    field(&mut out, "CUDA version", driver.cuda_string());
    for gpu in gpus {
        out.push('\n');
        field(&mut out, "Device Index", gpu.index);
        field(&mut out, "Device Minor", gpu.minor);
        field(&mut out, "Model", &gpu.model);
        field(&mut out, "Brand", gpu.brand);
        field(&mut out, "GPU UUID", &gpu.uuid);
        field(&mut out, "Bus Location", gpu.bus_id);
        field(&mut out, "Architecture", gpu.arch_string());
    }
    out
}

/// No quoting, as upstream: a comma in a model name would split the field there too.
pub fn render_csv(driver: &Driver, gpus: &[Gpu]) -> String {
    let mut out = String::from("NVRM version,CUDA version\n");
    let _ = writeln!(out, "{},{}", driver.version, driver.cuda_string());
    out.push_str("\nDevice Index,Device Minor,Model,Brand,GPU UUID,Bus Location,Architecture\n");
    for gpu in gpus {
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{}",
            gpu.index,
            gpu.minor,
            gpu.model,
            gpu.brand,
            gpu.uuid,
            gpu.bus_id,
            gpu.arch_string()
        );
    }
    out
}

/// A stable machine-readable form (nvbox extension; schema in README "info --json").
pub fn render_json(driver: &Driver, gpus: &[Gpu]) -> String {
    let devices: Vec<_> = gpus
        .iter()
        .map(|gpu| {
            json!({
                "index": gpu.index,
                "minor": gpu.minor,
                "model": gpu.model,
                "brand": gpu.brand,
                "uuid": gpu.uuid,
                "bus_id": gpu.bus_id.to_string(),
                "architecture": gpu.arch.map(|_| gpu.arch_string()),
                "pci_device_id": gpu.pci_device_id.map(|id| format!("0x{id:04x}")),
                "mig": {
                    "capable": gpu.mig.capable,
                    "enabled": !gpu.mig.devices.is_empty(),
                    "devices": gpu.mig.devices.iter().enumerate().map(|(i, m)| json!({
                        "index": i,
                        "gpu_instance": m.gi,
                        "compute_instance": m.ci,
                    })).collect::<Vec<_>>(),
                },
            })
        })
        .collect();
    let doc = json!({
        "nvrm_version": driver.version,
        "cuda_version": driver.cuda.map(|_| driver.cuda_string()),
        "devices": devices,
    });
    let mut s = serde_json::to_string_pretty(&doc).unwrap_or_default();
    s.push('\n');
    s
}

const HELP: &str = "Usage: nvidia-container-cli info [OPTION...]
Report information about the driver and devices

  -c, --csv                  Output in CSV format
      --json                 Output as JSON (nvbox extension; schema in README)
  -?, -h, --help             Give this help list
";
