//! All CDI specs found in the spec directories, indexed by qualified device name. A
//! directory's index in the list is its priority: a device defined again in a later directory
//! replaces the earlier one, while two definitions at the same priority conflict and the device
//! is dropped (the CDI library's rules). A bad spec is recorded and the others still load.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

use super::model::{ContainerEdits, Spec, parse_spec};

/// A spec loaded from `path` in the spec directory of index `priority`.
#[derive(Debug, Clone)]
pub struct LoadedSpec {
    pub path: PathBuf,
    pub priority: usize,
    pub spec: Spec,
}

/// A problem found while loading: a spec that did not parse or validate, a conflicting
/// device, or a directory that could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    pub path: PathBuf,
    pub message: String,
}

#[derive(Debug, Clone, Default)]
pub struct Registry {
    pub spec_dirs: Vec<PathBuf>,
    specs: Vec<LoadedSpec>,
    /// Qualified name → (index in `specs`, index in that spec's devices).
    devices: BTreeMap<String, (usize, usize)>,
    errors: Vec<LoadError>,
}

/// Read every `.json` and `.yaml` file directly in each of `spec_dirs` (subdirectories and
/// other files are skipped; a missing directory is empty).
pub fn load_registry(spec_dirs: &[PathBuf]) -> Result<Registry> {
    let mut registry = Registry {
        spec_dirs: spec_dirs.to_vec(),
        ..Registry::default()
    };
    for (priority, dir) in spec_dirs.iter().enumerate() {
        for path in list_spec_files(dir, &mut registry.errors) {
            let loaded = std::fs::read(&path)
                .map_err(|e| anyhow::anyhow!("failed to read CDI Spec \"{}\": {e}", path.display()))
                .and_then(|bytes| parse_spec(&bytes, &path));
            match loaded {
                Ok(spec) => registry.specs.push(LoadedSpec {
                    path,
                    priority,
                    spec,
                }),
                Err(e) => registry.errors.push(LoadError {
                    path,
                    message: format!("failed to load CDI Spec {e:#}"),
                }),
            }
        }
    }
    registry.index_devices();
    Ok(registry)
}

/// Spec files of one directory in name order (the library walks lexically).
fn list_spec_files(dir: &Path, errors: &mut Vec<LoadError>) -> Vec<PathBuf> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            errors.push(LoadError {
                path: dir.to_path_buf(),
                message: format!("failed to read CDI spec dir: {e}"),
            });
            return Vec::new();
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.file_type().is_ok_and(|t| !t.is_dir()))
        .map(|entry| entry.path())
        .filter(|path| {
            path.extension()
                .is_some_and(|ext| ext == "json" || ext == "yaml")
        })
        .collect();
    files.sort();
    files
}

impl Registry {
    /// Index every device by qualified name, resolving priorities and recording conflicts.
    fn index_devices(&mut self) {
        // Per name: the winning definition and whether its priority level holds a conflict.
        let mut winners: BTreeMap<String, ((usize, usize), bool)> = BTreeMap::new();
        for (s, loaded) in self.specs.iter().enumerate() {
            for (d, dev) in loaded.spec.devices.iter().enumerate() {
                let name = format!("{}={}", loaded.spec.kind, dev.name);
                let Some(((old_s, old_d), conflicted)) = winners.get(&name).copied() else {
                    winners.insert(name, ((s, d), false));
                    continue;
                };
                let old = &self.specs[old_s];
                if loaded.priority > old.priority {
                    // A later directory overrides, and clears a conflict of an earlier one.
                    winners.insert(name, ((s, d), false));
                } else if loaded.priority == old.priority {
                    let message = format!(
                        "conflicting device \"{name}\" (specs \"{}\", \"{}\")",
                        loaded.path.display(),
                        old.path.display()
                    );
                    for path in [&loaded.path, &old.path] {
                        self.errors.push(LoadError {
                            path: path.clone(),
                            message: message.clone(),
                        });
                    }
                    if !conflicted {
                        winners.insert(name, ((old_s, old_d), true));
                    }
                }
            }
        }
        self.devices = winners
            .into_iter()
            .filter(|(_, (_, conflicted))| !conflicted)
            .map(|(n, (at, _))| (n, at))
            .collect();
    }

    /// Fully qualified names of every resolvable device, sorted.
    pub fn device_names(&self) -> Vec<String> {
        self.devices.keys().cloned().collect()
    }

    pub fn specs(&self) -> &[LoadedSpec] {
        &self.specs
    }

    /// Spec parse/validation errors and conflicts, in the order found.
    pub fn errors(&self) -> &[LoadError] {
        &self.errors
    }

    /// The edits for `names` (qualified): each involved spec's own edits once, when its first
    /// device is met, then each device's edits, in request order.
    pub fn resolve(&self, names: &[String]) -> Result<Vec<ContainerEdits>> {
        let unresolved: Vec<&str> = names
            .iter()
            .filter(|n| !self.devices.contains_key(n.as_str()))
            .map(String::as_str)
            .collect();
        if !unresolved.is_empty() {
            bail!("unresolvable CDI devices {}", unresolved.join(", "));
        }
        let mut seen_specs = Vec::new();
        let mut edits = Vec::new();
        for name in names {
            let (s, d) = self.devices[name.as_str()];
            let spec = &self.specs[s].spec;
            if !seen_specs.contains(&s) {
                seen_specs.push(s);
                if !spec.container_edits.is_empty() {
                    edits.push(spec.container_edits.clone());
                }
            }
            edits.push(spec.devices[d].container_edits.clone());
        }
        Ok(edits)
    }
}
