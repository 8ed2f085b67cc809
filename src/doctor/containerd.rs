//! containerd: the effective config (the top-level file and the drop-ins it imports, later
//! files overriding earlier ones, as containerd merges them) defines the `nvidia` runtime with
//! an executable binary, and says whether CDI is enabled.

use std::path::{Path, PathBuf};

use toml::{Table, Value};

use super::{Context, Finding, is_executable, runtime_path_flag, which};
use crate::engines::containerd::{cri_path, version_of};
use crate::engines::toml_doc::{self, get};

pub fn check(ctx: &Context, out: &mut Vec<Finding>) {
    let file = &ctx.containerd_config;
    let shown = file.display();
    let configure = format!(
        "nvidia-ctk runtime configure --runtime=containerd --config={shown}{} && systemctl restart containerd",
        runtime_path_flag()
    );
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let path = std::env::var("PATH").unwrap_or_default();
            if !ctx.containerd_explicit && which("containerd", &path).is_none() {
                out.push(Finding::ok("containerd", "not installed: nothing to check"));
            } else {
                out.push(Finding::fail(
                    "containerd runtime",
                    format!("{shown} absent: containerd has no nvidia runtime"),
                    configure,
                ));
            }
            return;
        }
        Err(e) => {
            out.push(Finding::fail(
                "containerd runtime",
                format!("read {shown}: {e}"),
                format!("ls -l {shown}"),
            ));
            return;
        }
    };
    let files = match effective_files(file, &text) {
        Ok(f) => f,
        Err(msg) => {
            out.push(Finding::fail(
                "containerd runtime",
                format!("{msg}: containerd refuses to start"),
                format!("correct the TOML in {shown}"),
            ));
            return;
        }
    };
    let version = version_of(&files[0].1).unwrap_or(2);
    let [plugins, cri] = cri_path(version);
    let runtime_path = [plugins, cri, "containerd", "runtimes", "nvidia"];
    let mut defined_in = None;
    let mut binary = None;
    let mut cdi = None;
    for (path, table) in &files {
        if let Some(t) = get(table, &runtime_path).and_then(Value::as_table) {
            defined_in = Some(path.clone());
            binary = get_binary(t).or(binary);
        }
        if let Some(v) = get(table, &[plugins, cri, "enable_cdi"]).and_then(Value::as_bool) {
            cdi = Some(v);
        }
    }
    let Some(where_) = defined_in else {
        let names: Vec<String> = files.iter().map(|(p, _)| p.display().to_string()).collect();
        out.push(Finding::fail(
            "containerd runtime",
            format!(
                "no nvidia runtime in {} (version {version}): `unknown runtime handler nvidia` / `runtime \"nvidia\" binary not installed`",
                names.join(" + ")
            ),
            configure,
        ));
        return;
    };
    let binary = binary.unwrap_or_else(|| "nvidia-container-runtime".into());
    let path = std::env::var("PATH").unwrap_or_default();
    let found = if binary.contains('/') {
        is_executable(Path::new(&binary))
    } else {
        which(&binary, &path).is_some()
    };
    if found {
        out.push(Finding::ok(
            "containerd runtime",
            format!("nvidia runtime ({binary}) defined in {}", where_.display()),
        ));
    } else {
        out.push(Finding::fail(
            "containerd runtime",
            format!("the nvidia runtime in {} runs {binary}, which is not an executable: GPU pods fail to start", where_.display()),
            configure,
        ));
    }
    out.push(Finding::ok(
        "containerd enable_cdi",
        match cdi {
            Some(true) => "true: CDI device requests are honoured".to_string(),
            Some(false) => "false: only the nvidia runtime injects GPUs".to_string(),
            None => "unset (containerd ≥ 2.0 enables CDI by default)".to_string(),
        },
    ));
}

fn get_binary(runtime: &Table) -> Option<String> {
    runtime
        .get("options")
        .and_then(Value::as_table)
        .and_then(|o| o.get("BinaryName"))
        .and_then(Value::as_str)
        .filter(|b| !b.is_empty())
        .map(str::to_string)
}

/// The top-level table, then each imported file in import order (a glob's matches sorted).
pub fn effective_files(top: &Path, text: &str) -> Result<Vec<(PathBuf, Table)>, String> {
    let parse = |path: &Path, text: &str| {
        toml_doc::parse(text, &path.display().to_string()).map_err(|e| format!("{e:#}"))
    };
    let table = parse(top, text)?;
    let imports: Vec<String> = table
        .get("imports")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let mut files = vec![(top.to_path_buf(), table)];
    let base = top.parent().unwrap_or(Path::new("/"));
    for entry in imports {
        for path in expand_import(&base.join(&entry)) {
            if path == top {
                continue;
            }
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("read {}: {e}", path.display()))?;
            files.push((path.clone(), parse(&path, &text)?));
        }
    }
    Ok(files)
}

/// A path whose file name may hold `*`: the files it matches, sorted.
fn expand_import(pattern: &Path) -> Vec<PathBuf> {
    let name = pattern
        .file_name()
        .map(|n| n.to_string_lossy().into_owned());
    let Some(name) = name.filter(|n| n.contains('*')) else {
        return vec![pattern.to_path_buf()];
    };
    let dir = pattern.parent().unwrap_or(Path::new("/"));
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| wildcard_match(&name, &e.file_name().to_string_lossy()))
        .map(|e| e.path())
        .collect();
    found.sort();
    found
}

/// `*` matches any run of characters; everything else matches itself.
fn wildcard_match(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if parts.len() == 1 {
        return pattern == name;
    }
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(wildcard_match("*.toml", "99-nvidia.toml"));
        assert!(!wildcard_match("*.toml", "99-nvidia.toml.bak"));
        assert!(wildcard_match("a*b*c", "aXXbYYc"));
        assert!(!wildcard_match("a*b*c", "ac"));
        assert!(wildcard_match("x.toml", "x.toml"));
    }
}
