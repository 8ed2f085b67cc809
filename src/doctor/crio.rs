//! CRI-O: the effective config (crio.conf, then every file of the `crio.conf.d` next to it in
//! lexical order, later files overriding earlier ones, as CRI-O merges them) defines the
//! `nvidia` runtime with an executable `runtime_path` — or the NVIDIA prestart hook sits in one
//! of CRI-O's `hooks_dir`s, the other way CRI-O pods get GPUs (reference
//! nvidia-container-toolkit.md §6.4 and ecosystem.md §4).

use std::path::{Path, PathBuf};

use toml::{Table, Value};

use super::{Context, Finding, is_executable, runtime_path_flag, which};
use crate::engines::toml_doc::{self, get};

/// CRI-O's built-in `hooks_dir` when crio.conf does not set one.
const DEFAULT_HOOKS_DIRS: [&str; 1] = ["/usr/share/containers/oci/hooks.d"];
/// What `nvidia-ctk runtime configure --runtime=crio --config-mode=oci-hook` writes.
const HOOK_FILE: &str = "oci-nvidia-hook.json";

pub fn check(ctx: &Context, out: &mut Vec<Finding>) {
    let top = &ctx.crio_config;
    let dir = drop_in_dir(top);
    let configure = format!(
        "nvidia-ctk runtime configure --runtime=crio --config={} --drop-in-config={}{} && systemctl restart crio",
        top.display(),
        dir.join("99-nvidia.toml").display(),
        runtime_path_flag()
    );
    let files = match effective_files(top, &dir) {
        Ok(f) => f,
        Err((file, msg)) => {
            out.push(Finding::fail(
                "crio runtime",
                format!("{msg}: CRI-O refuses to start"),
                format!("correct the TOML in {}", file.display()),
            ));
            return;
        }
    };
    if files.is_empty() {
        let path = std::env::var("PATH").unwrap_or_default();
        if ctx.crio_explicit || which("crio", &path).is_some() {
            out.push(Finding::fail(
                "crio runtime",
                format!(
                    "neither {} nor {} exists: CRI-O has no nvidia runtime",
                    top.display(),
                    dir.display()
                ),
                configure,
            ));
        } else {
            out.push(Finding::ok("crio", "not installed: nothing to check"));
        }
        return;
    }
    let mut defined_in = None;
    let mut binary = None;
    let mut hooks_dirs: Option<Vec<String>> = None;
    for (path, table) in &files {
        if let Some(t) =
            get(table, &["crio", "runtime", "runtimes", "nvidia"]).and_then(Value::as_table)
        {
            defined_in = Some(path.clone());
            binary = t
                .get("runtime_path")
                .and_then(Value::as_str)
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .or(binary);
        }
        if let Some(dirs) = get(table, &["crio", "runtime", "hooks_dir"]).and_then(Value::as_array)
        {
            hooks_dirs = Some(
                dirs.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect(),
            );
        }
    }
    let hooks_dirs =
        hooks_dirs.unwrap_or_else(|| DEFAULT_HOOKS_DIRS.iter().map(|d| d.to_string()).collect());
    let hook = hooks_dirs
        .iter()
        .map(|d| Path::new(d).join(HOOK_FILE))
        .find(|p| p.is_file());
    let shown: Vec<String> = files.iter().map(|(p, _)| p.display().to_string()).collect();
    let Some(where_) = defined_in else {
        out.push(match hook {
            Some(h) => Finding::ok(
                "crio runtime",
                format!("no nvidia runtime, but the NVIDIA prestart hook is in {}", h.display()),
            ),
            None => Finding::fail(
                "crio runtime",
                format!(
                    "no nvidia runtime in {} and no {HOOK_FILE} in hooks_dir [{}]: pods with runtimeClassName nvidia fail (`no runtime for \"nvidia\" is configured`)",
                    shown.join(" + "),
                    hooks_dirs.join(", ")
                ),
                configure,
            ),
        });
        return;
    };
    // CRI-O looks a runtime without runtime_path up on its PATH by the runtime's name.
    let binary = binary.unwrap_or_else(|| "nvidia".into());
    let path = std::env::var("PATH").unwrap_or_default();
    let found = if binary.contains('/') {
        is_executable(Path::new(&binary))
    } else {
        which(&binary, &path).is_some()
    };
    out.push(if found {
        Finding::ok(
            "crio runtime",
            format!("nvidia runtime ({binary}) defined in {}", where_.display()),
        )
    } else {
        Finding::fail(
            "crio runtime",
            format!(
                "the nvidia runtime in {} runs {binary}, which is not an executable: CRI-O refuses to start (`invalid runtime_path`)",
                where_.display()
            ),
            configure,
        )
    });
}

/// CRI-O's default `--config-dir` is `crio.conf.d` beside `--config`.
fn drop_in_dir(top: &Path) -> PathBuf {
    top.parent().unwrap_or(Path::new("/")).join("crio.conf.d")
}

/// crio.conf when present, then the drop-ins in lexical order; an error names the file.
fn effective_files(top: &Path, dir: &Path) -> Result<Vec<(PathBuf, Table)>, (PathBuf, String)> {
    let mut paths = Vec::new();
    if top.exists() {
        paths.push(top.to_path_buf());
    }
    let mut drop_ins: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    drop_ins.sort();
    paths.extend(drop_ins);
    paths
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p)
                .map_err(|e| (p.clone(), format!("read {}: {e}", p.display())))?;
            let table = toml_doc::parse(&text, &p.display().to_string())
                .map_err(|e| (p.clone(), format!("{e:#}")))?;
            Ok((p, table))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(dir: &Path) -> Context {
        let mut c = super::super::tests::context_for(dir);
        c.crio_config = dir.join("crio.conf");
        c.crio_explicit = true;
        c
    }

    fn run(dir: &Path) -> Finding {
        let mut out = Vec::new();
        check(&ctx(dir), &mut out);
        assert_eq!(out.len(), 1, "{out:?}");
        out.pop().unwrap()
    }

    #[test]
    fn drop_ins_override_in_lexical_order() {
        let d = std::env::temp_dir().join(format!("nvbox-doctor-crio-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("crio.conf.d")).unwrap();
        std::fs::write(d.join("crio.conf"), "[crio.runtime]\nhooks_dir = []\n").unwrap();
        let f = run(&d);
        assert_eq!(f.status, super::super::Status::Fail, "{f:?}");
        assert!(f.fix.contains("--runtime=crio"), "{}", f.fix);

        std::fs::write(
            d.join("crio.conf.d/10-a.conf"),
            "[crio.runtime.runtimes.nvidia]\nruntime_path = \"/nonexistent\"\n",
        )
        .unwrap();
        assert_eq!(run(&d).status, super::super::Status::Fail);
        std::fs::write(
            d.join("crio.conf.d/99-nvidia.toml"),
            "[crio.runtime.runtimes.nvidia]\nruntime_path = \"/bin/sh\"\n",
        )
        .unwrap();
        let f = run(&d);
        assert_eq!(f.status, super::super::Status::Ok, "{f:?}");
        assert!(f.message.contains("99-nvidia.toml"), "{}", f.message);

        std::fs::write(d.join("crio.conf.d/50-broken.conf"), "[crio\n").unwrap();
        let f = run(&d);
        assert_eq!(f.status, super::super::Status::Fail);
        assert!(f.message.contains("50-broken.conf"), "{}", f.message);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
