//! Apply `ContainerEdits` to an OCI config.json held as a `serde_json::Value`, with the CDI
//! library's semantics (reference nvidia-container-toolkit.md §2.5 "How a CDI spec is
//! applied"). Everything not touched is kept as it was, unknown fields included.

use std::os::unix::fs::{FileTypeExt, MetadataExt};

use anyhow::{Result, anyhow, bail};
use nix::sys::stat::{major, minor};
use serde_json::{Map, Value, json};

use super::model::{ContainerEdits, DeviceNode, Hook, IntelRdt, Mount};

/// Apply `edits` to `spec` in the library's order: env, device nodes (+ cgroup rules), net
/// devices, mounts (then re-sorted), hooks, intelRdt, additional gids.
pub fn apply_edits(spec: &mut Value, edits: &ContainerEdits) -> Result<()> {
    if !spec.is_object() {
        bail!("can't edit OCI spec: not a JSON object");
    }
    edits.validate()?;
    for var in &edits.env {
        set_env(spec, var)?;
    }
    for node in &edits.device_nodes {
        add_device_node(spec, node)?;
    }
    for dev in &edits.net_devices {
        let nets = object_at(spec, &["linux", "netDevices"])?;
        nets.insert(dev.host_interface_name.clone(), json!({ "name": dev.name }));
    }
    if !edits.mounts.is_empty() {
        for mount in &edits.mounts {
            add_mount(spec, mount)?;
        }
        sort_mounts(spec)?;
    }
    for hook in &edits.hooks {
        let list = array_at(object_at(spec, &["hooks"])?, &hook.hook_name)?;
        list.push(oci_hook(hook));
    }
    if let Some(rdt) = &edits.intel_rdt {
        object_at(spec, &["linux"])?.insert("intelRdt".into(), oci_intel_rdt(rdt));
    }
    for &gid in &edits.additional_gids {
        // 0 is everyone's primary group already.
        if gid == 0 {
            continue;
        }
        let gids = array_at(object_at(spec, &["process", "user"])?, "additionalGids")?;
        if !gids.iter().any(|g| g.as_u64() == Some(u64::from(gid))) {
            gids.push(json!(gid));
        }
    }
    Ok(())
}

/// `KEY=VALUE`: an entry with the same key is replaced in place, otherwise appended.
fn set_env(spec: &mut Value, var: &str) -> Result<()> {
    let key = var.split_once('=').map_or(var, |(k, _)| k);
    let env = array_at(object_at(spec, &["process"])?, "env")?;
    let same_key = |v: &Value| {
        v.as_str()
            .is_some_and(|s| s.split_once('=').map_or(s, |(k, _)| k) == key)
    };
    match env.iter_mut().find(|v| same_key(v)) {
        Some(slot) => *slot = json!(var),
        None => env.push(json!(var)),
    }
    Ok(())
}

/// Type, major and minor of a device node, from the spec or else from the host.
fn resolve_node(node: &DeviceNode) -> Result<(String, i64, i64)> {
    let host = node
        .host_path
        .as_deref()
        .filter(|p| !p.is_empty())
        .unwrap_or(&node.path);
    let given = node.r#type.clone().unwrap_or_default();
    let (major_no, minor_no) = (node.major.unwrap_or(0), node.minor.unwrap_or(0));
    // "Minimally specified": a type with a major, or a fifo, needs no host node.
    if !given.is_empty() && (major_no != 0 || given == "p") {
        return Ok((given, major_no, minor_no));
    }
    let meta = std::fs::symlink_metadata(host)
        .map_err(|e| anyhow!("failed to stat CDI host device {host:?}: {e}"))?;
    let file_type = meta.file_type();
    let found = if file_type.is_block_device() {
        "b"
    } else if file_type.is_char_device() {
        "c"
    } else if file_type.is_fifo() {
        "p"
    } else {
        bail!("failed to stat CDI host device {host:?}: not a device node");
    };
    if !given.is_empty() && given != found {
        bail!(
            "CDI device ({:?}, {host:?}), host type mismatch ({given}, {found})",
            node.path
        );
    }
    if major_no == 0 && found != "p" {
        return Ok((
            found.to_string(),
            major(meta.rdev()) as i64,
            minor(meta.rdev()) as i64,
        ));
    }
    Ok((found.to_string(), major_no, minor_no))
}

fn add_device_node(spec: &mut Value, node: &DeviceNode) -> Result<()> {
    let (kind, major_no, minor_no) = resolve_node(node)?;
    let process_id = |key: &str| {
        spec.pointer(&format!("/process/user/{key}"))
            .and_then(Value::as_u64)
            .filter(|&v| v > 0)
    };
    let uid = node.uid.map(u64::from).or_else(|| process_id("uid"));
    let gid = node.gid.map(u64::from).or_else(|| process_id("gid"));

    let mut dev = Map::new();
    dev.insert("path".into(), json!(node.path));
    dev.insert("type".into(), json!(kind));
    dev.insert("major".into(), json!(major_no));
    dev.insert("minor".into(), json!(minor_no));
    if let Some(mode) = node.file_mode {
        dev.insert("fileMode".into(), json!(mode));
    }
    if let Some(uid) = uid {
        dev.insert("uid".into(), json!(uid));
    }
    if let Some(gid) = gid {
        dev.insert("gid".into(), json!(gid));
    }
    let devices = array_at(object_at(spec, &["linux"])?, "devices")?;
    devices.retain(|d| d.get("path").and_then(Value::as_str) != Some(node.path.as_str()));
    devices.push(Value::Object(dev));

    if kind == "b" || kind == "c" {
        let access = match node.permissions.as_deref() {
            None | Some("") => "rwm",
            Some("none") => "",
            Some(p) => p,
        };
        let mut rule = json!({ "allow": true, "type": kind, "major": major_no, "minor": minor_no });
        if !access.is_empty() {
            rule["access"] = json!(access);
        }
        array_at(object_at(spec, &["linux", "resources"])?, "devices")?.push(rule);
    }
    Ok(())
}

fn add_mount(spec: &mut Value, mount: &Mount) -> Result<()> {
    let mounts = array_at(spec.as_object_mut().expect("checked object"), "mounts")?;
    mounts.retain(|m| {
        m.get("destination").and_then(Value::as_str) != Some(mount.container_path.as_str())
    });
    let mut oci = Map::new();
    oci.insert("destination".into(), json!(mount.container_path));
    if let Some(kind) = mount.r#type.as_deref().filter(|t| !t.is_empty()) {
        oci.insert("type".into(), json!(kind));
    }
    oci.insert("source".into(), json!(mount.host_path));
    if !mount.options.is_empty() {
        oci.insert("options".into(), json!(mount.options));
    }
    mounts.push(Value::Object(oci));
    Ok(())
}

/// Stable sort by the number of separators in the cleaned destination, so that a mount lands
/// after the mounts of its parent directories (the order Docker, CRI-O and the CDI library use).
fn sort_mounts(spec: &mut Value) -> Result<()> {
    let mounts = array_at(spec.as_object_mut().expect("checked object"), "mounts")?;
    mounts.sort_by_key(|m| mount_depth(m.get("destination").and_then(Value::as_str).unwrap_or("")));
    Ok(())
}

/// `strings.Count(filepath.Clean(p), "/")`, computed without building the cleaned path.
pub(super) fn mount_depth(path: &str) -> usize {
    let absolute = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." if parts.last().is_some_and(|p| *p != "..") => {
                parts.pop();
            }
            // `/..` is `/`; a relative path keeps its leading `..`.
            ".." if absolute => {}
            _ => parts.push(part),
        }
    }
    match (absolute, parts.len()) {
        (true, 0) => 1,
        (true, n) => n,
        (false, 0) => 0,
        (false, n) => n - 1,
    }
}

fn oci_hook(hook: &Hook) -> Value {
    let mut oci = Map::new();
    oci.insert("path".into(), json!(hook.path));
    if !hook.args.is_empty() {
        oci.insert("args".into(), json!(hook.args));
    }
    if !hook.env.is_empty() {
        oci.insert("env".into(), json!(hook.env));
    }
    if let Some(timeout) = hook.timeout {
        oci.insert("timeout".into(), json!(timeout));
    }
    Value::Object(oci)
}

fn oci_intel_rdt(rdt: &IntelRdt) -> Value {
    let mut oci = Map::new();
    let mut put = |key: &str, value: Option<Value>| {
        if let Some(v) = value {
            oci.insert(key.into(), v);
        }
    };
    put("closID", rdt.clos_id.as_ref().map(|v| json!(v)));
    put(
        "l3CacheSchema",
        rdt.l3_cache_schema.as_ref().map(|v| json!(v)),
    );
    put("memBwSchema", rdt.mem_bw_schema.as_ref().map(|v| json!(v)));
    put("schemata", rdt.schemata.as_ref().map(|v| json!(v)));
    put("enableMonitoring", rdt.enable_monitoring.map(|v| json!(v)));
    put("enableCMT", rdt.enable_cmt.map(|v| json!(v)));
    put("enableMBM", rdt.enable_mbm.map(|v| json!(v)));
    Value::Object(oci)
}

/// The object at `path` below the root, created where missing or null.
fn object_at<'a>(spec: &'a mut Value, path: &[&str]) -> Result<&'a mut Map<String, Value>> {
    let mut here = spec;
    let mut walked = String::new();
    for key in path {
        walked = if walked.is_empty() {
            key.to_string()
        } else {
            format!("{walked}.{key}")
        };
        let map = here.as_object_mut().expect("walked through objects only");
        let slot = map.entry(key.to_string()).or_insert(Value::Null);
        if slot.is_null() {
            *slot = Value::Object(Map::new());
        }
        if !slot.is_object() {
            bail!("can't edit OCI spec: {walked} is not an object");
        }
        here = slot;
    }
    Ok(here.as_object_mut().expect("checked object"))
}

/// The array under `key`, created where missing or null.
fn array_at<'a>(map: &'a mut Map<String, Value>, key: &str) -> Result<&'a mut Vec<Value>> {
    let slot = map.entry(key.to_string()).or_insert(Value::Null);
    if slot.is_null() {
        *slot = Value::Array(Vec::new());
    }
    slot.as_array_mut()
        .ok_or_else(|| anyhow!("can't edit OCI spec: {key} is not an array"))
}
