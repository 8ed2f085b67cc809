//! containerd's config.toml (reference nvidia-container-toolkit.md §6.3): the version decides where
//! the CRI plugin lives; the `nvidia` runtime inherits the options of the default runtime (else
//! runc, else crun). From version 2 on the change goes to a drop-in that starts as a full copy of
//! the CRI plugin table (containerd < 2.1 merges imported plugin tables by key, not deeply) and the
//! top-level file only gains an `imports` entry, edited as text so its comments stay.

use std::path::Path;

use anyhow::{Result, bail};
use toml::{Table, Value};

use super::toml_doc::{self, get, get_table, remove_pruning, table_mut};

pub const RUNC_V2: &str = "io.containerd.runc.v2";

/// The config version: empty ⇒ 2, non-empty without `version` ⇒ 1, else its integer.
pub fn version_of(cfg: &Table) -> Result<i64> {
    if cfg.is_empty() {
        return Ok(2);
    }
    match cfg.get("version") {
        None => Ok(1),
        Some(Value::Integer(v)) if *v >= 1 => Ok(*v),
        Some(v) => bail!("unsupported config version: {v}"),
    }
}

/// The CRI plugin's table path for a version.
pub fn cri_path(version: i64) -> [&'static str; 2] {
    match version {
        1 => ["plugins", "cri"],
        2 => ["plugins", "io.containerd.grpc.v1.cri"],
        _ => ["plugins", "io.containerd.cri.v1.runtime"],
    }
}

fn path_under<'a>(version: i64, rest: &[&'a str]) -> Vec<&'a str> {
    let mut p: Vec<&str> = cri_path(version).to_vec();
    p.extend_from_slice(rest);
    p
}

/// The drop-in's starting point: `version` plus a copy of the source's CRI plugin table.
pub fn drop_in_base(source: &Table, version: i64) -> Table {
    let mut out = Table::new();
    out.insert("version".into(), Value::Integer(version));
    if let Some(cri) = get_table(source, &cri_path(version)) {
        let [plugins, name] = cri_path(version);
        let mut p = Table::new();
        p.insert(name.into(), Value::Table(cri.clone()));
        out.insert(plugins.into(), Value::Table(p));
    }
    out
}

/// The options the new runtime starts from: those of the default runtime (unless it is an
/// NVIDIA one), else runc's, else crun's, else runc v2 defaults.
fn inherited_options(cfg: &Table, version: i64) -> Table {
    let runtimes = get_table(cfg, &path_under(version, &["containerd", "runtimes"]));
    let default = get(
        cfg,
        &path_under(version, &["containerd", "default_runtime_name"]),
    )
    .and_then(Value::as_str)
    .filter(|d| !d.starts_with("nvidia"));
    let candidates = default.into_iter().chain(["runc", "crun"]);
    for name in candidates {
        if let Some(t) = runtimes.and_then(|r| r.get(name)).and_then(Value::as_table) {
            return t.clone();
        }
    }
    let mut t = Table::new();
    t.insert("runtime_type".into(), Value::String(RUNC_V2.into()));
    t.insert("runtime_root".into(), Value::String(String::new()));
    t.insert("runtime_engine".into(), Value::String(String::new()));
    t.insert(
        "privileged_without_host_devices".into(),
        Value::Boolean(false),
    );
    t
}

/// Add (or replace) runtime `name` running `path`; set or clear the default; set `version`.
pub fn add_runtime(
    cfg: &mut Table,
    version: i64,
    name: &str,
    path: &str,
    set_as_default: bool,
) -> Result<()> {
    let mut runtime = inherited_options(cfg, version);
    if runtime
        .get("runtime_type")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        runtime.insert("runtime_type".into(), Value::String(RUNC_V2.into()));
    }
    let options = table_mut(&mut runtime, &["options"])?;
    options.insert("BinaryName".into(), Value::String(path.into()));
    if version == 1 {
        options.insert("Runtime".into(), Value::String(path.into()));
    }
    let containerd = table_mut(cfg, &path_under(version, &["containerd"]))?;
    table_mut(containerd, &["runtimes"])?.insert(name.into(), Value::Table(runtime));
    let is_default = containerd
        .get("default_runtime_name")
        .and_then(Value::as_str)
        == Some(name);
    if set_as_default {
        containerd.insert("default_runtime_name".into(), Value::String(name.into()));
    } else if is_default {
        containerd.remove("default_runtime_name");
    }
    cfg.insert("version".into(), Value::Integer(version));
    Ok(())
}

/// `enable_cdi = true` on the CRI plugin (v1: under its `containerd` table).
pub fn enable_cdi(cfg: &mut Table, version: i64) -> Result<()> {
    let at = match version {
        1 => path_under(version, &["containerd"]),
        _ => path_under(version, &[]),
    };
    table_mut(cfg, &at)?.insert("enable_cdi".into(), Value::Boolean(true));
    Ok(())
}

/// Undo `add_runtime` in a config edited in place: drop the runtime; a default naming it is
/// removed (containerd then defaults to runc). True when anything changed.
pub fn remove_runtime(cfg: &mut Table, version: i64, name: &str) -> bool {
    let changed =
        remove_pruning(cfg, &path_under(version, &["containerd", "runtimes", name])).is_some();
    let default = path_under(version, &["containerd", "default_runtime_name"]);
    if get(cfg, &default).and_then(Value::as_str) == Some(name) {
        remove_pruning(cfg, &default);
        return true;
    }
    changed
}

/// What the top-level file imports so that containerd reads `drop_in`: the directory glob
/// upstream uses, or the file itself when the glob would miss it (no `.toml` suffix) or would
/// also match the top-level file (same directory).
pub fn import_entry(top_level: &Path, drop_in: &Path) -> String {
    let dir = drop_in.parent().unwrap_or(Path::new("/"));
    let is_toml = drop_in.extension().is_some_and(|e| e == "toml");
    let beside_top =
        top_level.parent() == Some(dir) && top_level.extension().is_some_and(|e| e == "toml");
    if is_toml && !beside_top {
        format!("{}/*.toml", dir.display())
    } else {
        drop_in.display().to_string()
    }
}

/// `imports` as containerd reads it: a list of strings. Anything else is refused rather than
/// replaced, which would silently drop what the file named.
fn imports_of(cfg: &Table) -> Result<Vec<Value>> {
    match cfg.get("imports") {
        None => Ok(Vec::new()),
        Some(Value::Array(a)) if a.iter().all(Value::is_str) => Ok(a.clone()),
        Some(_) => bail!("imports is not a list of strings"),
    }
}

/// The top-level text with `entry` imported (and `version` when the file was empty), comments
/// kept; the flag says whether they could be (false: fully re-rendered).
pub fn add_import(text: &str, entry: &str, version: i64) -> Result<(String, bool)> {
    let cfg = toml_doc::parse(text, "containerd config")?;
    let mut imports = imports_of(&cfg)?;
    let mut out = text.to_owned();
    if cfg.is_empty() {
        let v = Value::Integer(version);
        out = toml_doc::set_root_key(text, "version", Some(&v))
            .unwrap_or_else(|| format!("version = {version}\n"));
    }
    if imports.iter().any(|v| v.as_str() == Some(entry)) && !cfg.is_empty() {
        return Ok((out, true));
    }
    imports.push(Value::String(entry.into()));
    let value = Value::Array(imports);
    if let Some(edited) = toml_doc::set_root_key(&out, "imports", Some(&value)) {
        return Ok((edited, true));
    }
    let mut full = toml_doc::parse(&out, "containerd config")?;
    full.insert("imports".into(), value);
    Ok((toml_doc::render(&full), false))
}

/// The top-level text without `entry` in `imports` (the key dropped once empty).
pub fn remove_import(text: &str, entry: &str) -> Result<(String, bool)> {
    let cfg = toml_doc::parse(text, "containerd config")?;
    let before = imports_of(&cfg)?;
    let after: Vec<Value> = before
        .iter()
        .filter(|v| v.as_str() != Some(entry))
        .cloned()
        .collect();
    if after.len() == before.len() {
        return Ok((text.to_owned(), true));
    }
    let value = (!after.is_empty()).then_some(Value::Array(after));
    if let Some(edited) = toml_doc::set_root_key(text, "imports", value.as_ref()) {
        return Ok((edited, true));
    }
    let mut full = cfg;
    match value {
        Some(v) => full.insert("imports".into(), v),
        None => full.remove("imports"),
    };
    Ok((toml_doc::render(&full), false))
}

#[cfg(test)]
#[path = "containerd_tests.rs"]
mod tests;
