//! Docker's daemon.json (reference nvidia-container-toolkit.md §6.2): the `nvidia` entry under
//! `runtimes`, `default-runtime`, and `features.cdi`. The file is a generic JSON object, so every
//! key we do not touch is kept. Unlike upstream, an existing `features` object is merged into,
//! never replaced (upstream dropped flags such as `containerd-snapshotter`).

use anyhow::{Result, anyhow, bail};
use serde::Serialize;
use serde_json::{Map, Value, json};

/// daemon.json text (None or blank: a missing file) as an object.
pub fn parse(text: Option<&str>) -> Result<Map<String, Value>> {
    let Some(text) = text.filter(|t| !t.trim().is_empty()) else {
        return Ok(Map::new());
    };
    match serde_json::from_str(text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => bail!("unable to parse config: not a JSON object"),
        Err(e) => Err(anyhow!("unable to parse config: {e}")),
    }
}

fn object_mut<'a>(
    cfg: &'a mut Map<String, Value>,
    key: &str,
) -> Result<&'a mut Map<String, Value>> {
    match cfg
        .entry(key.to_owned())
        .or_insert_with(|| Value::Object(Map::new()))
    {
        Value::Object(m) => Ok(m),
        _ => bail!("unable to update config: {key} is not an object"),
    }
}

/// `runtimes.<name> = {"args": [], "path": <path>}` (replacing an entry of that name), and
/// `default-runtime` when asked; an existing default is otherwise left alone.
pub fn add_runtime(
    cfg: &mut Map<String, Value>,
    name: &str,
    path: &str,
    set_as_default: bool,
) -> Result<()> {
    object_mut(cfg, "runtimes")?.insert(name.to_owned(), json!({"args": [], "path": path}));
    if set_as_default {
        cfg.insert("default-runtime".into(), Value::String(name.to_owned()));
    }
    Ok(())
}

/// `features.cdi = true`, other features kept.
pub fn enable_cdi(cfg: &mut Map<String, Value>) -> Result<()> {
    object_mut(cfg, "features")?.insert("cdi".into(), Value::Bool(true));
    Ok(())
}

/// Undo `add_runtime`: drop `runtimes.<name>` (and `runtimes` once empty); a default that named
/// it goes back to `runc`. True when anything changed.
pub fn remove_runtime(cfg: &mut Map<String, Value>, name: &str) -> bool {
    let mut changed = false;
    if let Some(Value::Object(runtimes)) = cfg.get_mut("runtimes") {
        changed = runtimes.remove(name).is_some();
        if runtimes.is_empty() {
            cfg.remove("runtimes");
        }
    }
    if cfg.get("default-runtime").and_then(Value::as_str) == Some(name) {
        cfg.insert("default-runtime".into(), Value::String("runc".into()));
        changed = true;
    }
    changed
}

/// Four-space indentation and sorted keys, as upstream writes it, plus a final newline.
pub fn render(cfg: &Map<String, Value>) -> String {
    let mut buf = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    cfg.serialize(&mut ser)
        .expect("a JSON map always serialises");
    buf.push(b'\n');
    String::from_utf8(buf).expect("serde_json writes UTF-8")
}

#[cfg(test)]
#[path = "docker_tests.rs"]
mod tests;
