//! The container's ask, from its environment and mounts (reference nvidia-container-toolkit.md §3).

use std::collections::BTreeMap;

use anyhow::{Result, anyhow, bail};

use super::{Caps, Container, Devices, Request, split_list};
use crate::config::Config;
use crate::discover::gated::{ALL_GATED, Gated};

const VISIBLE_DEVICES: &str = "NVIDIA_VISIBLE_DEVICES";
const DRIVER_CAPABILITIES: &str = "NVIDIA_DRIVER_CAPABILITIES";
const REQUIRE_PREFIX: &str = "NVIDIA_REQUIRE_";
const REQUIRE_JETPACK: &str = "NVIDIA_REQUIRE_JETPACK";
const REQUIRE_CUDA: &str = "NVIDIA_REQUIRE_CUDA";
const DISABLE_REQUIRE: &str = "NVIDIA_DISABLE_REQUIRE";
const CUDA_VERSION: &str = "CUDA_VERSION";
const MIG_CONFIG: &str = "NVIDIA_MIG_CONFIG_DEVICES";
const MIG_MONITOR: &str = "NVIDIA_MIG_MONITOR_DEVICES";
const IMEX_CHANNELS: &str = "NVIDIA_IMEX_CHANNELS";

/// Where device-plugin volume mounts land; the remainder of the destination names the device.
const DEVICE_MOUNT_ROOT: &str = "/var/run/nvidia-container-devices";
/// IMEX channel ids are minors of one char device region: 20 bits.
const IMEX_CHANNEL_LIMIT: u32 = 1 << 20;

type Env = BTreeMap<String, String>;

/// The request of a container, from its config.json view.
pub fn request_from_container(c: &Container, cfg: &Config) -> Result<Request> {
    let env = parse_env(&c.env)?;
    build_request(&env, c.privileged, &c.mounts, cfg, Checks::Strict)
}

/// The request as the runtime shim reads it: NVIDIA_DRIVER_CAPABILITIES and the MIG variables
/// are the legacy hook's to judge (toolkit §3.2: jit-cdi and cdi ignore them, and in legacy
/// mode the hook the shim adds refuses them), so a bad value there does not fail `create`.
pub fn request_for_runtime(c: &Container, cfg: &Config) -> Result<Request> {
    let env = parse_env(&c.env)?;
    build_request(&env, c.privileged, &c.mounts, cfg, Checks::HookOnly)
}

/// Whether the checks only the legacy hook makes upstream fail the request here too.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Checks {
    Strict,
    HookOnly,
}

/// The request from a bare environment (no mounts), as an unprivileged or privileged container.
#[cfg(test)]
pub fn request_from_env(env: &[String], privileged: bool, cfg: &Config) -> Result<Request> {
    let env = parse_env(env)?;
    build_request(&env, privileged, &[], cfg, Checks::Strict)
}

/// `KEY=VALUE` entries; a later duplicate overwrites an earlier one, so docker's appended
/// `--gpus` value beats the image's.
fn parse_env(entries: &[String]) -> Result<Env> {
    let mut env = Env::new();
    for entry in entries {
        let (key, value) = entry
            .split_once('=')
            .ok_or_else(|| anyhow!("invalid environment variable {entry:?}"))?;
        env.insert(key.to_owned(), value.to_owned());
    }
    Ok(env)
}

fn build_request(
    env: &Env,
    privileged: bool,
    mounts: &[(String, String)],
    cfg: &Config,
    checks: Checks,
) -> Result<Request> {
    let legacy = is_legacy_image(env);
    let env_allowed = privileged || cfg.accept_nvidia_visible_devices_envvar_when_unprivileged;
    let from_mounts = if cfg.accept_nvidia_visible_devices_as_volume_mounts {
        read_device_mounts(mounts)
    } else {
        DeviceMounts::default()
    };
    // Mount-listed devices come from the orchestrator, not the image, so they skip the gate.
    let devices = if !from_mounts.devices.is_empty() {
        classify_devices(&from_mounts.devices)
    } else if env_allowed {
        devices_from_env(env, cfg, legacy)
    } else {
        Devices::Unrequested
    };
    // A container that asks for no GPU must behave exactly like runc: none of the checks below
    // may fail it (upstream's hook returns before reaching them, too).
    if devices == Devices::Unrequested {
        return Ok(Request::unrequested());
    }
    let supported = parse_supported_caps(&cfg.supported_driver_capabilities)?;
    Ok(Request {
        devices,
        caps: caps_from_env(env, legacy, supported, checks)?,
        requirements: requirements_from_env(env, legacy, cfg)?,
        mig_config: hook_check(
            mig_request(env, MIG_CONFIG, "MIG_CONFIG_DEVICES", privileged),
            checks,
        )?,
        mig_monitor: hook_check(
            mig_request(env, MIG_MONITOR, "MIG_MONITOR_DEVICES", privileged),
            checks,
        )?,
        imex_channels: imex_request(env, &from_mounts.imex, env_allowed, cfg)?,
        gated: gated_request(env),
    })
}

/// `NVIDIA_GDS=enabled` …: exactly that value, as upstream compares it.
fn gated_request(env: &Env) -> Vec<Gated> {
    ALL_GATED
        .into_iter()
        .filter(|g| env.get(g.env()).is_some_and(|v| v == "enabled"))
        .collect()
}

/// An image built before NVIDIA_REQUIRE_CUDA existed: it only says CUDA_VERSION.
fn is_legacy_image(env: &Env) -> bool {
    let set = |key: &str| env.get(key).is_some_and(|v| !v.is_empty());
    set(CUDA_VERSION) && !set(REQUIRE_CUDA)
}

/// Devices from the swarm-resource variables when any is present, else NVIDIA_VISIBLE_DEVICES.
fn devices_from_env(env: &Env, cfg: &Config, legacy: bool) -> Devices {
    let present: Vec<&String> = split_list(&cfg.swarm_resource)
        .filter_map(|name| env.get(name))
        .collect();
    let entries: Vec<String> = if !present.is_empty() {
        present
            .iter()
            .flat_map(|v| split_list(v))
            .map(str::to_owned)
            .collect()
    } else if let Some(value) = env.get(VISIBLE_DEVICES) {
        split_list(value).map(str::to_owned).collect()
    } else if legacy {
        return Devices::All;
    } else {
        return Devices::Unrequested;
    };
    classify_devices(&entries)
}

/// Trimmed, non-empty entries to a request: nothing or any `void` ⇒ nothing; else the first
/// `all` or `none` scanning left to right decides; else the literal ids without duplicates.
fn classify_devices(entries: &[String]) -> Devices {
    if entries.is_empty() || entries.iter().any(|e| e == "void") {
        return Devices::Unrequested;
    }
    for entry in entries {
        match entry.as_str() {
            "all" => return Devices::All,
            "none" => return Devices::DriverOnly,
            _ => {}
        }
    }
    let mut ids: Vec<String> = Vec::with_capacity(entries.len());
    for entry in entries {
        if !ids.contains(entry) {
            ids.push(entry.clone());
        }
    }
    Devices::Ids(ids)
}

#[derive(Default)]
struct DeviceMounts {
    devices: Vec<String>,
    imex: Vec<String>,
}

/// Device-plugin style requests: `/dev/null` mounted at DEVICE_MOUNT_ROOT/<name>.
fn read_device_mounts(mounts: &[(String, String)]) -> DeviceMounts {
    let mut seen: Vec<String> = Vec::new();
    let mut found = DeviceMounts::default();
    for (source, destination) in mounts {
        if clean_path(source) != "/dev/null" {
            continue;
        }
        let destination = clean_path(destination);
        let Some(rest) = destination
            .strip_prefix(DEVICE_MOUNT_ROOT)
            .and_then(|r| r.strip_prefix('/'))
        else {
            continue;
        };
        let name = rest.trim_matches('/');
        if name.is_empty() || seen.contains(&destination) {
            continue;
        }
        seen.push(destination.clone());
        if let Some(channel) = name.strip_prefix("imex/") {
            found.imex.push(channel.to_owned());
        } else if let Some(cdi) = name.strip_prefix("cdi/") {
            found.devices.push(cdi_name(cdi));
        } else {
            found.devices.push(name.to_owned());
        }
    }
    found
}

/// A mount path spells a CDI name either as `vendor/class/dev` or already as `vendor/class=dev`;
/// both become `vendor/class=dev`. Anything else is kept as written so the consumer's error
/// names what the orchestrator sent.
fn cdi_name(name: &str) -> String {
    if name.contains('=') {
        return name.to_owned();
    }
    match name.splitn(3, '/').collect::<Vec<_>>()[..] {
        [vendor, class, dev] if ![vendor, class, dev].contains(&"") => {
            format!("{vendor}/{class}={dev}")
        }
        _ => name.to_owned(),
    }
}

/// Lexical cleaning as Go's path.Clean: collapse `//`, drop `.`, resolve `..` lexically.
fn clean_path(path: &str) -> String {
    let absolute = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|p| *p != "..") {
                    parts.pop();
                } else if !absolute {
                    parts.push("..");
                }
            }
            _ => parts.push(part),
        }
    }
    let joined = parts.join("/");
    match (absolute, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_owned(),
        (false, false) => joined,
    }
}

/// The config's `supported-driver-capabilities`; `all` is the full set.
fn parse_supported_caps(value: &str) -> Result<Caps> {
    Caps::parse_list(value)
        .map_err(|_| anyhow!("Invalid value for config option 'supported-driver-capabilities'"))
}

/// A refusal only the legacy hook makes: dropped (as "nothing asked") outside it.
fn hook_check(r: Result<Option<String>>, checks: Checks) -> Result<Option<String>> {
    match checks {
        Checks::Strict => r,
        Checks::HookOnly => Ok(r.unwrap_or(None)),
    }
}

fn caps_from_env(env: &Env, legacy: bool, supported: Caps, checks: Checks) -> Result<Caps> {
    let value = match env.get(DRIVER_CAPABILITIES) {
        None if legacy => return Ok(supported),
        None => return Ok(Caps::DEFAULT.intersection(supported)),
        Some(v) => v,
    };
    let names: Vec<&str> = split_list(value).collect();
    if names.is_empty() {
        return Ok(Caps::DEFAULT.intersection(supported));
    }
    if names.contains(&"all") {
        return Ok(supported);
    }
    let mut caps = Caps::default();
    let mut rejected = false;
    for name in &names {
        match Caps::from_name(name) {
            Some(c) if supported.contains(c) => caps = caps.union(c),
            _ => rejected = true,
        }
    }
    if rejected && checks == Checks::Strict {
        // Upstream's words: the request as a sorted set, then what of it is allowed.
        let mut asked = names.clone();
        asked.sort_unstable();
        asked.dedup();
        bail!(
            "unsupported capabilities found in '{}' (allowed '{}')",
            asked.join(","),
            caps.names().join(",")
        );
    }
    Ok(caps)
}

fn requirements_from_env(env: &Env, legacy: bool, cfg: &Config) -> Result<Vec<String>> {
    if cfg.disable_require || env.get(DISABLE_REQUIRE).is_some_and(|v| parse_go_bool(v)) {
        return Ok(Vec::new());
    }
    // Env is a BTreeMap: variables come out sorted by name. Empty values carry no predicate.
    let mut requirements: Vec<String> = env
        .iter()
        .filter(|(k, _)| k.starts_with(REQUIRE_PREFIX) && !k.starts_with(REQUIRE_JETPACK))
        .filter(|(_, v)| !v.trim().is_empty())
        .map(|(_, v)| v.clone())
        .collect();
    if legacy {
        let version = &env[CUDA_VERSION];
        let (major, minor) = parse_cuda_version(version)
            .ok_or_else(|| anyhow!("invalid CUDA_VERSION {version:?}: not a version"))?;
        requirements.push(format!("cuda>={major}.{minor}"));
    }
    Ok(requirements)
}

/// Go's strconv.ParseBool, true side; anything else (including invalid text) is false.
fn parse_go_bool(value: &str) -> bool {
    matches!(value, "1" | "t" | "T" | "TRUE" | "true" | "True")
}

/// MAJOR.MINOR of a semver-ish version: optional `v`, one or more numeric components, an
/// optional `-pre`/`+build` suffix; `10.1.243` ⇒ (10, 1), `11` ⇒ (11, 0).
fn parse_cuda_version(value: &str) -> Option<(u64, u64)> {
    let value = value.strip_prefix('v').unwrap_or(value);
    let core = value.split(['-', '+']).next().unwrap_or_default();
    let mut parts = core.split('.');
    let mut component = || -> Option<Option<u64>> {
        match parts.next() {
            None => Some(None),
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse().ok().map(Some)
            }
            Some(_) => None,
        }
    };
    let major = component()??;
    let minor = component()?.unwrap_or(0);
    while component()?.is_some() {}
    Some((major, minor))
}

/// A MIG management request; only a privileged container may make one.
fn mig_request(env: &Env, var: &str, label: &str, privileged: bool) -> Result<Option<String>> {
    let Some(value) = env.get(var).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if !privileged {
        bail!("cannot set {label} in non privileged container");
    }
    Ok(Some(value.clone()))
}

/// IMEX channels: `imex/<id>` mounts win; else NVIDIA_IMEX_CHANNELS under the same gate as
/// devices. `all` is skipped (upstream 1.17.0 failed on it; later versions ignore it).
fn imex_request(
    env: &Env,
    from_mounts: &[String],
    env_allowed: bool,
    cfg: &Config,
) -> Result<Vec<u32>> {
    if cfg.features.ignore_imex_channel_requests == Some(true) {
        return Ok(Vec::new());
    }
    let ids: Vec<&str> = if !from_mounts.is_empty() {
        from_mounts.iter().map(String::as_str).collect()
    } else if env_allowed {
        env.get(IMEX_CHANNELS)
            .map(|v| split_list(v).filter(|e| *e != "all").collect())
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    let mut channels = Vec::with_capacity(ids.len());
    for id in ids {
        let channel = parse_imex_channel(id)?;
        if !channels.contains(&channel) {
            channels.push(channel);
        }
    }
    Ok(channels)
}

/// `5` or, as upstream also takes it, `channel5`.
fn parse_imex_channel(id: &str) -> Result<u32> {
    let digits = id.strip_prefix("channel").unwrap_or(id);
    digits
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| digits.parse::<u32>().ok())
        .flatten()
        .filter(|&n| n < IMEX_CHANNEL_LIMIT)
        .ok_or_else(|| {
            anyhow!("invalid IMEX channel {id:?}: not a decimal id below {IMEX_CHANNEL_LIMIT}")
        })
}

#[cfg(test)]
#[path = "env_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "mount_tests.rs"]
mod mount_tests;
