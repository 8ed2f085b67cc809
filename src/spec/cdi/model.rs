//! The CDI spec document (cdiVersion 0.3.0–1.1.0) as typed serde structs, with the CDI
//! library's validation. Field names and omission rules follow the spec's JSON tags so that a
//! spec we write reads back in every engine; unknown fields are rejected as the library does.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Deserializer, Serialize};

use super::name::{
    parse_qualifier, validate_class_name, validate_device_name, validate_vendor_name,
};

/// One CDI spec file: a kind (`vendor/class`), its devices and the edits common to all of them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Spec {
    pub cdi_version: String,
    pub kind: String,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub devices: Vec<Device>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "ContainerEdits::is_empty"
    )]
    pub container_edits: ContainerEdits,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Device {
    pub name: String,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub container_edits: ContainerEdits,
}

/// Changes to an OCI spec. Built from spec files or in code (jit-cdi) and applied by
/// `apply_edits`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerEdits {
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub env: Vec<String>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub device_nodes: Vec<DeviceNode>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub hooks: Vec<Hook>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub mounts: Vec<Mount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intel_rdt: Option<IntelRdt>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub additional_gids: Vec<u32>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub net_devices: Vec<NetDevice>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeviceNode {
    /// Path in the container.
    pub path: String,
    /// Path on the host; `path` when absent (cdiVersion ≥ 0.5.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_path: Option<String>,
    /// `b`, `c`, `u` or `p`; read from the host when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r#type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub major: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minor: Option<i64>,
    /// Go `os.FileMode` as a number (e.g. 438 = 0666).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_mode: Option<u32>,
    /// cgroup access: a subset of `rwm`, `""` meaning `rwm`, `none` meaning no access.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permissions: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Mount {
    pub host_path: String,
    pub container_path: String,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub options: Vec<String>,
    /// Filesystem type (cdiVersion ≥ 0.4.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r#type: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Hook {
    /// The OCI hook list: prestart, createRuntime, createContainer, startContainer, poststart,
    /// poststop.
    pub hook_name: String,
    pub path: String,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub args: Vec<String>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub env: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<i64>,
}

/// Intel RDT class of service (cdiVersion ≥ 0.7.0; `schemata`/`enableMonitoring` ≥ 1.1.0).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IntelRdt {
    #[serde(default, rename = "closID", skip_serializing_if = "Option::is_none")]
    pub clos_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub l3_cache_schema: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_bw_schema: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schemata: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_monitoring: Option<bool>,
    /// Dropped in 1.1.0, still read from older specs.
    #[serde(default, rename = "enableCMT", skip_serializing_if = "Option::is_none")]
    pub enable_cmt: Option<bool>,
    #[serde(default, rename = "enableMBM", skip_serializing_if = "Option::is_none")]
    pub enable_mbm: Option<bool>,
}

/// A host network interface moved into the container (cdiVersion ≥ 1.1.0).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetDevice {
    pub host_interface_name: String,
    pub name: String,
}

/// Go decodes `null` into an empty slice or struct; serde would refuse it.
fn null_as_default<'de, D, T>(deserializer: D) -> std::result::Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

impl ContainerEdits {
    pub fn is_empty(&self) -> bool {
        self.env.is_empty()
            && self.device_nodes.is_empty()
            && self.hooks.is_empty()
            && self.mounts.is_empty()
            && self.intel_rdt.is_none()
            && self.additional_gids.is_empty()
            && self.net_devices.is_empty()
    }

    /// Concatenate `other` after `self`, the order the CDI library applies spec then device
    /// edits in; a later intelRdt replaces an earlier one.
    pub fn append(&mut self, other: &ContainerEdits) {
        self.env.extend_from_slice(&other.env);
        self.device_nodes.extend_from_slice(&other.device_nodes);
        self.hooks.extend_from_slice(&other.hooks);
        self.mounts.extend_from_slice(&other.mounts);
        if other.intel_rdt.is_some() {
            self.intel_rdt.clone_from(&other.intel_rdt);
        }
        self.additional_gids
            .extend_from_slice(&other.additional_gids);
        self.net_devices.extend_from_slice(&other.net_devices);
    }

    /// The library's per-field checks; the first failure is returned.
    pub fn validate(&self) -> Result<()> {
        validate_env(&self.env).context("invalid container edits")?;
        for node in &self.device_nodes {
            node.validate()?;
        }
        for hook in &self.hooks {
            if !HOOK_NAMES.contains(&hook.hook_name.as_str()) {
                bail!("invalid hook name {:?}", hook.hook_name);
            }
            if hook.path.is_empty() {
                bail!("invalid hook {:?} with empty path", hook.hook_name);
            }
            validate_env(&hook.env)
                .with_context(|| format!("invalid hook {:?}", hook.hook_name))?;
        }
        for mount in &self.mounts {
            if mount.host_path.is_empty() {
                bail!("invalid mount, empty host path");
            }
            if mount.container_path.is_empty() {
                bail!("invalid mount, empty container path");
            }
        }
        if let Some(clos) = self.intel_rdt.as_ref().and_then(|r| r.clos_id.as_deref()) {
            // A Linux file name, except "/" which names the root class.
            if clos != "/"
                && (clos.len() >= 4096 || clos == "." || clos == ".." || clos.contains(['/', '\n']))
            {
                bail!("invalid ClosID");
            }
        }
        let mut hosts = Vec::new();
        let mut names = Vec::new();
        for dev in &self.net_devices {
            if dev.host_interface_name.is_empty() {
                bail!("invalid linux net device, empty HostInterfaceName");
            }
            if dev.name.is_empty() {
                bail!("invalid linux net device, empty Name");
            }
            if hosts.contains(&&dev.host_interface_name) {
                bail!(
                    "invalid linux net device, duplicate HostInterfaceName {:?}",
                    dev.host_interface_name
                );
            }
            if names.contains(&&dev.name) {
                bail!("invalid linux net device, duplicate Name {:?}", dev.name);
            }
            hosts.push(&dev.host_interface_name);
            names.push(&dev.name);
        }
        Ok(())
    }
}

/// The OCI hook lists a CDI hook may name.
pub const HOOK_NAMES: [&str; 6] = [
    "prestart",
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
];

fn validate_env(env: &[String]) -> Result<()> {
    for var in env {
        // A key must be non-empty: "=x" is as invalid as "x".
        if var.find('=').is_none_or(|i| i == 0) {
            bail!("invalid environment variable {var:?}");
        }
    }
    Ok(())
}

impl DeviceNode {
    fn validate(&self) -> Result<()> {
        if self.path.is_empty() {
            bail!("invalid (empty) device path");
        }
        let kind = self.r#type.as_deref().unwrap_or("");
        if !["", "b", "c", "u", "p"].contains(&kind) {
            bail!("device {:?}: invalid type {kind:?}", self.path);
        }
        // -1 would be a wildcard in a cgroup rule.
        let (major, minor) = (self.major.unwrap_or(0), self.minor.unwrap_or(0));
        if major < 0 || minor < 0 {
            bail!(
                "device {:?}: invalid (negative) device number {major}:{minor}",
                self.path
            );
        }
        match self.permissions.as_deref() {
            None | Some("") | Some("none") => {}
            Some(p) if p.chars().all(|c| "rwm".contains(c)) => {}
            Some(p) => bail!("device {:?}: invalid permissions {p:?}", self.path),
        }
        Ok(())
    }
}

/// Known `cdiVersion`s, oldest first. 0.1.0 and 0.2.0 are known but below the 0.3.0 floor that
/// every spec must meet, so they fail the minimum-version check, as in the library.
const VERSIONS: [(u32, u32, u32); 10] = [
    (0, 1, 0),
    (0, 2, 0),
    (0, 3, 0),
    (0, 4, 0),
    (0, 5, 0),
    (0, 6, 0),
    (0, 7, 0),
    (0, 8, 0),
    (1, 0, 0),
    (1, 1, 0),
];

fn parse_version(text: &str) -> Option<(u32, u32, u32)> {
    let numbers: Vec<u32> = text
        .strip_prefix('v')
        .unwrap_or(text)
        .split('.')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    let &[major, minor, patch] = numbers.as_slice() else {
        return None;
    };
    VERSIONS
        .contains(&(major, minor, patch))
        .then_some((major, minor, patch))
}

/// The lowest `cdiVersion` that has every field this spec uses.
pub fn minimum_version(spec: &Spec) -> (u32, u32, u32) {
    let all_edits = || {
        std::iter::once(&spec.container_edits)
            .chain(spec.devices.iter().map(|d| &d.container_edits))
    };
    let rdt_v110 = |e: &ContainerEdits| {
        e.intel_rdt
            .as_ref()
            .is_some_and(|r| r.schemata.is_some() || r.enable_monitoring == Some(true))
    };
    if all_edits().any(|e| rdt_v110(e) || !e.net_devices.is_empty()) {
        return (1, 1, 0);
    }
    if all_edits().any(|e| e.intel_rdt.is_some() || !e.additional_gids.is_empty()) {
        return (0, 7, 0);
    }
    let dotted_class = parse_qualifier(&spec.kind).is_some_and(|(_, class)| class.contains('.'));
    if !spec.annotations.is_empty()
        || spec.devices.iter().any(|d| !d.annotations.is_empty())
        || dotted_class
    {
        return (0, 6, 0);
    }
    let digit_name = spec.devices.iter().any(|d| {
        d.name
            .bytes()
            .next()
            .is_some_and(|b| !b.is_ascii_alphabetic())
    });
    if digit_name
        || all_edits().any(|e| {
            e.device_nodes
                .iter()
                .any(|n| n.host_path.as_deref().is_some_and(|p| !p.is_empty()))
        })
    {
        return (0, 5, 0);
    }
    if all_edits().any(|e| {
        e.mounts
            .iter()
            .any(|m| m.r#type.as_deref().is_some_and(|t| !t.is_empty()))
    }) {
        return (0, 4, 0);
    }
    (0, 3, 0)
}

impl Spec {
    /// The library's checks on a loaded spec: version, kind, edits, devices.
    pub fn validate(&self) -> Result<()> {
        let Some(version) = parse_version(&self.cdi_version) else {
            bail!("invalid version {:?}", self.cdi_version);
        };
        let min = minimum_version(self);
        if min > version {
            bail!(
                "the spec version must be at least v{}.{}.{}",
                min.0,
                min.1,
                min.2
            );
        }
        let (vendor, class) = parse_qualifier(&self.kind).unwrap_or(("", &self.kind));
        validate_vendor_name(vendor)?;
        validate_class_name(class)?;
        self.container_edits.validate()?;
        let mut seen: Vec<&str> = Vec::new();
        for dev in &self.devices {
            dev.validate()
                .with_context(|| format!("failed add device {:?}", dev.name))?;
            if seen.contains(&dev.name.as_str()) {
                bail!("invalid spec, multiple device {:?}", dev.name);
            }
            seen.push(&dev.name);
        }
        if seen.is_empty() {
            bail!("invalid spec, no devices");
        }
        Ok(())
    }

    /// `vendor` and `class` of the kind (valid after `validate`).
    pub fn vendor_class(&self) -> (&str, &str) {
        parse_qualifier(&self.kind).unwrap_or(("", &self.kind))
    }
}

impl Device {
    fn validate(&self) -> Result<()> {
        validate_device_name(&self.name)?;
        if self.container_edits.is_empty() {
            bail!("invalid device, empty device edits");
        }
        self.container_edits.validate()
    }
}

/// Decode a spec (YAML, of which JSON is a subset, as the library reads both) and validate it.
pub fn parse_spec(bytes: &[u8], path_for_errors: &Path) -> Result<Spec> {
    let shown = path_for_errors.display();
    // JSON first: a JSON spec gets serde_json's exact error text, and it is the common case
    // for generated transient specs.
    let spec: Spec = if bytes.trim_ascii_start().starts_with(b"{") {
        serde_json::from_slice(bytes).map_err(|e| {
            anyhow!("failed to parse CDI Spec \"{shown}\": failed to unmarshal CDI Spec: {e}")
        })?
    } else {
        serde_yaml_ng::from_slice(bytes).map_err(|e| {
            anyhow!("failed to parse CDI Spec \"{shown}\": failed to unmarshal CDI Spec: {e}")
        })?
    };
    spec.validate()
        .map_err(|e| anyhow!("invalid CDI Spec \"{shown}\": {e:#}"))?;
    Ok(spec)
}
