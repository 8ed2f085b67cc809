//! The slice of the OCI runtime spec (config.json) and state (hook stdin) the toolkit reads
//! (reference nvidia-container-toolkit.md §4.3). The spec stays a `serde_json::Value` elsewhere so
//! unknown fields survive edits; this view only reads.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use anyhow::{Result, anyhow, bail};
use serde_json::{Map, Value};

pub struct Container {
    /// root.path as written (relative to the bundle, or absolute).
    pub root_path: String,
    /// process.env, raw `KEY=VALUE` strings.
    pub env: Vec<String>,
    /// CAP_SYS_ADMIN is in the bounding set.
    pub privileged: bool,
    /// (source, destination) of each mount, in spec order.
    pub mounts: Vec<(String, String)>,
    /// CDI requests from device plugins (runtime shim, cdi mode).
    pub annotations: BTreeMap<String, String>,
}

/// The OCI state a runtime writes to a hook's stdin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    pub pid: i32,
    pub bundle: String,
}

const CAP_SYS_ADMIN: &str = "CAP_SYS_ADMIN";

/// Read the container view from a parsed config.json. `ociVersion`, `process` and `root` must be
/// present (a JSON null counts as absent, as it does for upstream's Go pointers).
pub fn read_container(spec: &Value) -> Result<Container> {
    let spec = spec
        .as_object()
        .ok_or_else(|| anyhow!("could not decode OCI spec: not a JSON object"))?;
    let version = match present(spec, "ociVersion") {
        Some(v) => v
            .as_str()
            .ok_or_else(|| field_error("ociVersion", "a string"))?,
        None => bail!("version is empty in OCI spec"),
    };
    let process = match present(spec, "process") {
        Some(p) => p
            .as_object()
            .ok_or_else(|| field_error("process", "an object"))?,
        None => bail!("process is empty in OCI spec"),
    };
    let root = match present(spec, "root") {
        Some(r) => r
            .as_object()
            .ok_or_else(|| field_error("root", "an object"))?,
        None => bail!("root is empty in OCI spec"),
    };
    Ok(Container {
        root_path: optional_string(root, "path", "root.path")?,
        env: string_list(process.get("env"), "process.env")?,
        privileged: is_privileged(version, process.get("capabilities"))?,
        mounts: read_mounts(spec.get("mounts"))?,
        annotations: read_annotations(spec.get("annotations"))?,
    })
}

/// Decode the OCI state: one JSON object; trailing bytes after it are not read, as with the Go
/// decoder upstream uses. `bundle`, else the pre-17.06 runc `bundlePath`.
pub fn read_state(bytes: &[u8]) -> Result<State> {
    let value = serde_json::Deserializer::from_slice(bytes)
        .into_iter::<Value>()
        .next()
        .ok_or_else(|| anyhow!("could not decode container state: no JSON value on stdin"))?
        .map_err(|e| anyhow!("could not decode container state: {e}"))?;
    let state = value
        .as_object()
        .ok_or_else(|| anyhow!("could not decode container state: not a JSON object"))?;
    let pid = match present(state, "pid") {
        None => 0,
        Some(v) => v
            .as_i64()
            .and_then(|n| i32::try_from(n).ok())
            .ok_or_else(|| anyhow!("could not decode container state: pid {v} is not an int"))?,
    };
    let bundle = state_string(state, "bundle")?;
    let bundle = if bundle.is_empty() {
        state_string(state, "bundlePath")?
    } else {
        bundle
    };
    // Upstream would fall back to the hook's cwd; an explicit path is required here so a
    // truncated state never makes us read some other directory's config.json.
    if bundle.is_empty() {
        bail!("could not decode container state: no bundle path");
    }
    Ok(State { pid, bundle })
}

fn state_string(state: &Map<String, Value>, key: &str) -> Result<String> {
    match present(state, key) {
        None => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => bail!("could not decode container state: {key} is not a string"),
    }
}

/// A key whose value is not null.
fn present<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

fn field_error(field: &str, expected: &str) -> anyhow::Error {
    anyhow!("could not decode OCI spec: {field} is not {expected}")
}

fn optional_string(obj: &Map<String, Value>, key: &str, field: &str) -> Result<String> {
    match present(obj, key) {
        None => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(field_error(field, "a string")),
    }
}

fn string_list(value: Option<&Value>, field: &str) -> Result<Vec<String>> {
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| field_error(field, "a list of strings"))
            })
            .collect(),
        Some(_) => Err(field_error(field, "a list of strings")),
    }
}

fn read_mounts(value: Option<&Value>) -> Result<Vec<(String, String)>> {
    let items = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(field_error("mounts", "a list")),
    };
    items
        .iter()
        .map(|m| {
            let m = m
                .as_object()
                .ok_or_else(|| field_error("mounts", "a list of objects"))?;
            Ok((
                optional_string(m, "source", "mounts[].source")?,
                optional_string(m, "destination", "mounts[].destination")?,
            ))
        })
        .collect()
}

fn read_annotations(value: Option<&Value>) -> Result<BTreeMap<String, String>> {
    let map = match value {
        None | Some(Value::Null) => return Ok(BTreeMap::new()),
        Some(Value::Object(map)) => map,
        Some(_) => return Err(field_error("annotations", "an object")),
    };
    map.iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k.clone(), s.clone())),
            _ => Err(field_error("annotations", "a map of strings")),
        })
        .collect()
}

/// CAP_SYS_ADMIN in the bounding set. Specs from runtime-spec 1.0.0-rc1 up to (not including)
/// rc5 carry capabilities as one flat list; later ones as an object of sets. A shape that does
/// not match the version is an error, as it is upstream.
fn is_privileged(version: &str, caps: Option<&Value>) -> Result<bool> {
    let caps = match caps {
        None | Some(Value::Null) => return Ok(false),
        Some(c) => c,
    };
    let bounding = if is_flat_caps_version(version) {
        caps
    } else {
        let sets = caps
            .as_object()
            .ok_or_else(|| field_error("process.capabilities", "an object"))?;
        match sets.get("bounding") {
            None | Some(Value::Null) => return Ok(false),
            Some(b) => b,
        }
    };
    let list = string_list(Some(bounding), "process.capabilities")?;
    Ok(list.iter().any(|c| c == CAP_SYS_ADMIN))
}

/// 1.0.0-rc1 <= version < 1.0.0-rc5, by semver precedence. A version that is not semver is
/// below every valid one (as in Go's x/mod/semver), so it takes the modern form.
fn is_flat_caps_version(version: &str) -> bool {
    let Some(v) = Semver::parse(version) else {
        return false;
    };
    let rc1 = Semver::parse("1.0.0-rc1").expect("valid literal");
    let rc5 = Semver::parse("1.0.0-rc5").expect("valid literal");
    v.cmp_precedence(&rc1) != Ordering::Less && v.cmp_precedence(&rc5) == Ordering::Less
}

/// Just enough semver for precedence: MAJOR[.MINOR[.PATCH]][-PRERELEASE][+BUILD], an optional
/// leading `v`; missing MINOR/PATCH read as 0.
#[derive(Debug, PartialEq, Eq)]
struct Semver<'a> {
    core: [u64; 3],
    pre: Vec<&'a str>,
}

impl<'a> Semver<'a> {
    fn parse(text: &'a str) -> Option<Semver<'a>> {
        let text = text.strip_prefix('v').unwrap_or(text);
        let text = text.split_once('+').map_or(text, |(v, _)| v);
        let (core_text, pre_text) = match text.split_once('-') {
            Some((c, p)) => (c, Some(p)),
            None => (text, None),
        };
        let mut core = [0u64; 3];
        for (n, part) in core_text.split('.').enumerate() {
            if n == 3 || part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            core[n] = part.parse().ok()?;
        }
        let pre: Vec<&str> = match pre_text {
            Some(p) => p.split('.').collect(),
            None => Vec::new(),
        };
        if pre.iter().any(|id| id.is_empty()) {
            return None;
        }
        Some(Semver { core, pre })
    }

    fn cmp_precedence(&self, other: &Semver) -> Ordering {
        self.core.cmp(&other.core).then_with(|| {
            match (self.pre.is_empty(), other.pre.is_empty()) {
                (true, true) => Ordering::Equal,
                // A release outranks its pre-releases.
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                (false, false) => {
                    for (a, b) in self.pre.iter().zip(&other.pre) {
                        let ord = cmp_pre_id(a, b);
                        if ord != Ordering::Equal {
                            return ord;
                        }
                    }
                    self.pre.len().cmp(&other.pre.len())
                }
            }
        })
    }
}

/// Numeric identifiers compare numerically and rank below alphanumeric ones, which compare
/// in ASCII order.
fn cmp_pre_id(a: &str, b: &str) -> Ordering {
    let numeric = |s: &str| s.bytes().all(|c| c.is_ascii_digit());
    match (numeric(a), numeric(b)) {
        (true, true) => {
            let (a, b) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
            a.len().cmp(&b.len()).then_with(|| a.cmp(b))
        }
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        (false, false) => a.cmp(b),
    }
}

#[cfg(test)]
#[path = "oci_tests.rs"]
mod tests;
