//! CRI-O's config (reference nvidia-container-toolkit.md §6.4): `[crio.runtime.runtimes.<name>]`
//! with `runtime_path` and `runtime_type = "oci"`, inheriting the options of CRI-O's default
//! runtime (unless an NVIDIA one), else runc's, else crun's. The target is normally a drop-in
//! (the top-level file is only read); an existing drop-in is edited, not replaced, so keys a user
//! added there are kept.

use anyhow::Result;
use toml::{Table, Value};

use super::toml_doc::{get, get_table, remove_pruning, table_mut};

const RUNTIME: [&str; 2] = ["crio", "runtime"];
const RUNTIMES: [&str; 3] = ["crio", "runtime", "runtimes"];

fn inherited_options(source: &Table) -> Table {
    let runtimes = get_table(source, &RUNTIMES);
    let default = get(source, &["crio", "runtime", "default_runtime"])
        .and_then(Value::as_str)
        .filter(|d| !d.starts_with("nvidia"));
    default
        .into_iter()
        .chain(["runc", "crun"])
        .find_map(|n| runtimes.and_then(|r| r.get(n)).and_then(Value::as_table))
        .cloned()
        .unwrap_or_default()
}

/// Add (or replace) runtime `name` in `target`, inheriting from `source`; set the default when
/// asked, and clear a default naming it when not.
pub fn add_runtime(
    target: &mut Table,
    source: &Table,
    name: &str,
    path: &str,
    set_as_default: bool,
) -> Result<()> {
    let mut runtime = inherited_options(source);
    runtime.insert("runtime_path".into(), Value::String(path.into()));
    runtime.insert("runtime_type".into(), Value::String("oci".into()));
    table_mut(target, &RUNTIMES)?.insert(name.into(), Value::Table(runtime));
    let section = table_mut(target, &RUNTIME)?;
    let is_default = section.get("default_runtime").and_then(Value::as_str) == Some(name);
    if set_as_default {
        section.insert("default_runtime".into(), Value::String(name.into()));
    } else if is_default {
        section.remove("default_runtime");
    }
    Ok(())
}

/// Undo `add_runtime`: the runtime and a default naming it go (CRI-O then uses its built-in
/// default); tables left empty are pruned. True when anything changed.
pub fn remove_runtime(target: &mut Table, name: &str) -> bool {
    let mut changed = remove_pruning(target, &["crio", "runtime", "runtimes", name]).is_some();
    let default = ["crio", "runtime", "default_runtime"];
    if get(target, &default).and_then(Value::as_str) == Some(name) {
        remove_pruning(target, &default);
        changed = true;
    }
    changed
}

#[cfg(test)]
#[path = "crio_tests.rs"]
mod tests;
