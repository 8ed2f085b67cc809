//! A bundle's config.json, edited as a `serde_json::Value` so that every field we do not know
//! survives (upstream decodes into a typed struct and drops or rejects unknown fields), and
//! written back atomically: temp file, rename, with the original mode. No fsync: a bundle does
//! not outlive a host crash (the engine discards it), readers only need the rename's
//! atomicity, and an fsync costs milliseconds on every container start.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use serde_json::{Map, Value, json};

/// Hook basenames that mean "an NVIDIA prestart hook is already here".
const NVIDIA_HOOKS: &[&str] = &["nvidia-container-runtime-hook", "nvidia-container-toolkit"];

pub struct SpecFile {
    pub path: PathBuf,
    pub value: Value,
}

impl SpecFile {
    pub fn read(bundle: &Path) -> Result<SpecFile> {
        let path = bundle.join("config.json");
        let bytes = std::fs::read(&path)
            .map_err(|e| anyhow!("error reading OCI specification: {}: {e}", path.display()))?;
        let value: Value = serde_json::from_slice(&bytes)
            .map_err(|e| anyhow!("error reading OCI specification: {}: {e}", path.display()))?;
        if !value.is_object() {
            return Err(anyhow!(
                "error reading OCI specification: {}: not a JSON object",
                path.display()
            ));
        }
        Ok(SpecFile { path, value })
    }

    /// Replace the file: a sibling temp file with the same mode, renamed over it.
    pub fn write(&self) -> Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let mode = std::fs::metadata(&self.path)
            .map(|m| m.permissions().mode() & 0o7777)
            .unwrap_or(0o644);
        let tmp = dir.join(format!(".config.json.nvbox-{}", std::process::id()));
        // Serialised in memory and written with one write: straight into the file, serde_json
        // makes a write call per token (2314 for a jit-cdi spec).
        let mut bytes = serde_json::to_vec(&self.value).map_err(std::io::Error::from)?;
        bytes.push(b'\n');
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&tmp)?;
            f.write_all(&bytes)?;
            std::fs::rename(&tmp, &self.path)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            anyhow!(
                "error writing OCI specification: {}: {e}",
                self.path.display()
            )
        })
    }
}

/// Whether a hook entry runs one of NVIDIA's prestart hooks.
pub fn is_nvidia_hook(hook: &Value) -> bool {
    hook.get("path")
        .and_then(Value::as_str)
        .and_then(|p| p.rsplit('/').next())
        .is_some_and(|name| NVIDIA_HOOKS.contains(&name))
}

/// The object at `key`, created when missing or null.
pub fn object_at<'a>(v: &'a mut Value, key: &str) -> Result<&'a mut Map<String, Value>> {
    let obj = v
        .as_object_mut()
        .ok_or_else(|| anyhow!("OCI specification: not an object where {key} should be"))?;
    let slot = obj.entry(key).or_insert_with(|| json!({}));
    if slot.is_null() {
        *slot = json!({});
    }
    slot.as_object_mut()
        .ok_or_else(|| anyhow!("OCI specification: {key} is not an object"))
}

/// The array at `key`, created when missing or null.
pub fn array_at<'a>(v: &'a mut Value, key: &str) -> Result<&'a mut Vec<Value>> {
    let obj = v
        .as_object_mut()
        .ok_or_else(|| anyhow!("OCI specification: not an object where {key} should be"))?;
    let slot = obj.entry(key).or_insert_with(|| json!([]));
    if slot.is_null() {
        *slot = json!([]);
    }
    slot.as_array_mut()
        .ok_or_else(|| anyhow!("OCI specification: {key} is not an array"))
}

/// The array at `path` (`["linux", "resources", "devices"]`), creating the objects on the
/// way and the array itself when missing.
pub fn array_at_path<'a>(mut v: &'a mut Value, path: &[&str]) -> Result<&'a mut Vec<Value>> {
    let Some((last, parents)) = path.split_last() else {
        return Err(anyhow!("empty path"));
    };
    for key in parents {
        object_at(v, key)?;
        v = v.get_mut(*key).expect("created by object_at");
    }
    array_at(v, last)
}

/// Legacy mode: append our prestart hook unless an NVIDIA hook is already there (docker
/// `--gpus` puts one). Returns whether the spec changed.
pub fn add_prestart_hook(spec: &mut Value, path: &str, config: Option<&Path>) -> Result<bool> {
    let hooks = object_at(spec, "hooks")?;
    let list = hooks.entry("prestart").or_insert_with(|| json!([]));
    if list.is_null() {
        *list = json!([]);
    }
    let list = list
        .as_array_mut()
        .ok_or_else(|| anyhow!("OCI specification: hooks.prestart is not an array"))?;
    if let Some(h) = list.iter().find(|h| is_nvidia_hook(h)) {
        crate::info!(
            "Existing nvidia prestart hook ({}) found in OCI spec",
            h.get("path").and_then(Value::as_str).unwrap_or("")
        );
        return Ok(false);
    }
    let name = path.rsplit('/').next().unwrap_or(path);
    let mut args = vec![json!(name)];
    if let Some(cfg) = config {
        args.push(json!(format!("-config={}", cfg.display())));
    }
    args.push(json!("prestart"));
    list.push(json!({"path": path, "args": args}));
    Ok(true)
}

/// cdi/jit-cdi/csv modes: drop NVIDIA prestart hooks so `--gpus` plus the runtime does not
/// inject twice. Returns whether any was removed.
pub fn remove_nvidia_hooks(spec: &mut Value) -> bool {
    let Some(list) = spec
        .get_mut("hooks")
        .and_then(|h| h.get_mut("prestart"))
        .and_then(Value::as_array_mut)
    else {
        return false;
    };
    let before = list.len();
    list.retain(|h| !is_nvidia_hook(h));
    before != list.len()
}

/// The rootfs path of a bundle's spec (`root.path`, relative to the bundle).
pub fn rootfs_of(bundle: &Path, spec: &Value) -> Result<PathBuf> {
    let root = spec
        .pointer("/root/path")
        .and_then(Value::as_str)
        .context("root is empty in OCI spec")?;
    let p = Path::new(root);
    Ok(if p.is_absolute() {
        p.to_path_buf()
    } else {
        bundle.join(p)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_hook_added_once_and_after_others() {
        let mut spec = json!({"ociVersion": "1.0.2", "x-unknown": {"keep": [1, 2]},
            "hooks": {"prestart": [{"path": "/usr/bin/other"}]}});
        assert!(
            add_prestart_hook(&mut spec, "/usr/bin/nvidia-container-runtime-hook", None).unwrap()
        );
        assert_eq!(
            spec["hooks"]["prestart"],
            json!([{"path": "/usr/bin/other"}, {"path": "/usr/bin/nvidia-container-runtime-hook",
                "args": ["nvidia-container-runtime-hook", "prestart"]}])
        );
        assert!(!add_prestart_hook(&mut spec, "/x/nvidia-container-runtime-hook", None).unwrap());
        assert_eq!(spec["x-unknown"], json!({"keep": [1, 2]}));
    }

    #[test]
    fn legacy_hook_on_an_empty_spec_carries_the_config() {
        let mut spec = json!({"ociVersion": "1.0.2", "hooks": null});
        add_prestart_hook(
            &mut spec,
            "/b/nvidia-container-runtime-hook",
            Some(Path::new("/c.toml")),
        )
        .unwrap();
        assert_eq!(
            spec["hooks"]["prestart"][0]["args"],
            json!([
                "nvidia-container-runtime-hook",
                "-config=/c.toml",
                "prestart"
            ])
        );
    }

    #[test]
    fn nvidia_hooks_are_removed_by_basename() {
        let mut spec = json!({"hooks": {"prestart": [
            {"path": "/usr/bin/nvidia-container-toolkit"},
            {"path": "/opt/keep-me"},
            {"path": "/usr/local/bin/nvidia-container-runtime-hook", "args": []}]}});
        assert!(remove_nvidia_hooks(&mut spec));
        assert_eq!(spec["hooks"]["prestart"], json!([{"path": "/opt/keep-me"}]));
        assert!(!remove_nvidia_hooks(&mut spec));
        assert!(!remove_nvidia_hooks(&mut json!({})));
    }

    #[test]
    fn write_is_atomic_and_keeps_the_mode() {
        let dir = std::env::temp_dir().join(format!("nvbox-oci-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.json");
        std::fs::write(&path, r#"{"ociVersion":"1.0.2","zz":{"a":1}}"#).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut f = SpecFile::read(&dir).unwrap();
        f.value["added"] = json!(true);
        f.write().unwrap();
        let back: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(
            back,
            json!({"ociVersion": "1.0.2", "zz": {"a": 1}, "added": true})
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            1,
            "temp file left behind"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
