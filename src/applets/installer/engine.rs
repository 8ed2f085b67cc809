//! Configuring the engine for the installed toolkit (upstream's container/runtime/*): the
//! `nvidia`, `nvidia-cdi` and `nvidia-legacy` runtimes go into a containerd or CRI-O drop-in
//! (plus an import in containerd's top-level file) or into daemon.json, through the same edits
//! as `nvidia-ctk runtime configure` (src/engines). Every file is planned before the first one
//! is written, so a config that cannot be parsed changes nothing.
//!
//! Undo on shutdown, as upstream: containerd's drop-in is removed; Docker's runtimes are removed;
//! CRI-O keeps its runtimes and only loses the default (the hook file in hook mode). Better than
//! upstream, a file this installer wrote and nobody touched since is put back byte for byte as it
//! was (or removed when it did not exist), instead of being re-rendered with an `imports` entry
//! or a `default-runtime: runc` left behind.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, anyhow, bail};
use toml::{Table, Value};

use super::info;
use super::options::{Engine, RuntimeOptions};
use crate::engines::{containerd, crio, docker, file, ocihook, toml_doc};

/// A file this run wrote: what it held before (None: absent) and what was written.
#[derive(Debug, Clone)]
pub struct Written {
    pub path: PathBuf,
    pub before: Option<String>,
    pub after: Option<String>,
}

/// The runtimes upstream's operator package defines: the nvidia runtime (named as asked unless
/// that name is one of the mode runtimes) and one per fixed mode; the default is the one named.
pub fn runtimes(o: &RuntimeOptions, root: &Path) -> Vec<(String, String, bool)> {
    let main = match o.name.as_str() {
        "nvidia-cdi" | "nvidia-legacy" => "nvidia",
        n => n,
    };
    [
        (main.to_owned(), "nvidia-container-runtime"),
        ("nvidia-cdi".to_owned(), "nvidia-container-runtime.cdi"),
        (
            "nvidia-legacy".to_owned(),
            "nvidia-container-runtime.legacy",
        ),
    ]
    .into_iter()
    .map(|(name, bin)| {
        let default = o.set_as_default && name == o.name;
        (name, root.join(bin).display().to_string(), default)
    })
    .collect()
}

fn read_toml(path: &Path, what: &str) -> Result<(Option<String>, Table)> {
    let text = file::read_optional(path)?;
    let table = toml_doc::parse(text.as_deref().unwrap_or(""), what)
        .with_context(|| format!("unable to load config {}", path.display()))?;
    Ok((text, table))
}

/// `[chroot HOST_ROOT] containerd config dump` / `crio status config`.
fn dump_command(o: &RuntimeOptions) -> Result<Table> {
    let (default_exe, args): (&str, &[&str]) = match o.engine {
        Engine::Containerd => ("containerd", &["config", "dump"]),
        _ => ("crio", &["status", "config"]),
    };
    let exe = o.executable.as_deref().unwrap_or(default_exe);
    let mut cmd = match o.host_root.as_deref().filter(|r| *r != Path::new("/")) {
        Some(root) => {
            let mut c = Command::new("chroot");
            c.arg(root).arg(exe);
            c
        }
        None => Command::new(exe),
    };
    let out = cmd
        .args(args)
        .output()
        .map_err(|e| anyhow!("{exe} {}: {e}", args.join(" ")))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        bail!("{exe} {}: {}: {}", args.join(" "), out.status, err.trim());
    }
    toml_doc::parse(&String::from_utf8_lossy(&out.stdout), "config from command")
}

/// The engine's current config from the first source that yields one (upstream's LoadFirst).
fn load_source(o: &RuntimeOptions, top: &Table) -> Result<Table> {
    let mut last = None;
    for s in &o.sources {
        let (kind, arg) = match s.split_once('=') {
            Some((k, a)) => (k.trim(), Some(a.trim())),
            None => (s.trim(), None),
        };
        match (kind, arg) {
            ("file", None) => return Ok(top.clone()),
            ("file", Some(p)) => return read_toml(Path::new(p), "config source").map(|(_, t)| t),
            _ => match dump_command(o) {
                Ok(t) => return Ok(t),
                Err(e) => {
                    info(&format!("Config source command failed: {e:#}"));
                    last = Some(e);
                }
            },
        }
    }
    match last {
        Some(e) => Err(e.context("unable to load the engine's config from any source")),
        None => Ok(Table::new()),
    }
}

/// The binaries of the engine's default runtime, runc and crun (nvidia* defaults skipped), as
/// upstream's GetLowlevelRuntimePaths, for the toolkit's `nvidia-container-runtime.runtimes`.
pub fn low_level_paths(o: &RuntimeOptions) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    let mut push = |p: Option<&str>| {
        if let Some(p) = p.filter(|p| !p.is_empty())
            && !out.iter().any(|x| x == p)
        {
            out.push(p.to_owned());
        }
    };
    let candidates = |default: Option<&str>| {
        default
            .filter(|d| !d.is_empty() && !d.starts_with("nvidia"))
            .map(str::to_owned)
            .into_iter()
            .chain(["runc".to_owned(), "crun".to_owned()])
            .collect::<Vec<_>>()
    };
    match o.engine {
        Engine::Docker => {
            let text = file::read_optional(&o.config)?;
            let cfg = docker::parse(text.as_deref())
                .with_context(|| format!("unable to load config {}", o.config.display()))?;
            let default = cfg.get("default-runtime").and_then(|v| v.as_str());
            for name in candidates(default) {
                push(
                    cfg.get("runtimes")
                        .and_then(|r| r.get(&name))
                        .and_then(|r| r.get("path"))
                        .and_then(|p| p.as_str()),
                );
            }
        }
        Engine::Containerd => {
            let (_, top) = read_toml(&o.config, "containerd config")?;
            let src = load_source(o, &top)?;
            let version = containerd::version_of(&src)?;
            let mut base: Vec<&str> = containerd::cri_path(version).to_vec();
            base.push("containerd");
            let default =
                toml_doc::get(&src, &[base.clone(), vec!["default_runtime_name"]].concat());
            for name in candidates(default.and_then(Value::as_str)) {
                let path = [
                    base.clone(),
                    vec!["runtimes", &name, "options", "BinaryName"],
                ]
                .concat();
                push(toml_doc::get(&src, &path).and_then(Value::as_str));
            }
        }
        Engine::Crio => {
            let (_, top) = read_toml(&o.config, "crio config")?;
            let src = load_source(o, &top)?;
            let default = toml_doc::get(&src, &["crio", "runtime", "default_runtime"]);
            for name in candidates(default.and_then(Value::as_str)) {
                let path = ["crio", "runtime", "runtimes", &name, "runtime_path"];
                push(toml_doc::get(&src, &path).and_then(Value::as_str));
            }
        }
    }
    Ok(out)
}

/// Every file setup will write, with its new content: nothing is written yet.
pub fn plan(o: &RuntimeOptions, root: &Path) -> Result<Vec<Written>> {
    let plan = match (o.engine, &o.crio_hook) {
        (Engine::Crio, Some(hook)) => {
            let text = ocihook::render(&root.join("nvidia-container-runtime-hook"));
            vec![planned(hook, Some(text))?]
        }
        (Engine::Crio, None) => plan_crio(o, root)?,
        (Engine::Docker, _) => plan_docker(o, root)?,
        (Engine::Containerd, _) => plan_containerd(o, root)?,
    };
    for w in &plan {
        let dir = w.path.parent().unwrap_or(Path::new("/"));
        let probe = if dir.exists() {
            dir
        } else {
            dir.parent().unwrap_or(dir)
        };
        if probe.exists() && nix::unistd::access(probe, nix::unistd::AccessFlags::W_OK).is_err() {
            bail!(
                "unable to write config {}: directory {} is not writable",
                w.path.display(),
                probe.display()
            );
        }
    }
    Ok(plan)
}

/// Write what `plan` decided, under the engine config's lock.
pub fn setup(o: &RuntimeOptions, plan: &[Written]) -> Result<()> {
    info(&format!("Starting 'setup' for {}", o.engine.name()));
    commit(o, plan)
}

fn planned(path: &Path, after: Option<String>) -> Result<Written> {
    Ok(Written {
        path: path.to_path_buf(),
        before: file::read_optional(path)?,
        after,
    })
}

fn commit(o: &RuntimeOptions, plan: &[Written]) -> Result<()> {
    let _lock = file::lock(&o.config)?;
    for w in plan {
        match &w.after {
            Some(text) if w.before.as_deref() == Some(text.as_str()) => info(&format!(
                "Config {} is already up to date",
                w.path.display()
            )),
            Some(text) => {
                file::write_atomic(&w.path, text.as_bytes())?;
                info(&format!("Wrote updated config to {}", w.path.display()));
            }
            None => {
                if file::remove(&w.path)? {
                    info(&format!("Removed {}", w.path.display()));
                }
            }
        }
    }
    Ok(())
}

fn plan_docker(o: &RuntimeOptions, root: &Path) -> Result<Vec<Written>> {
    let w = planned(&o.config, None)?;
    let mut cfg = docker::parse(w.before.as_deref())
        .with_context(|| format!("unable to load config {}", o.config.display()))?;
    for (name, path, default) in runtimes(o, root) {
        docker::add_runtime(&mut cfg, &name, &path, default)?;
    }
    if o.enable_cdi {
        docker::enable_cdi(&mut cfg)?;
    }
    Ok(vec![Written {
        after: Some(docker::render(&cfg)),
        ..w
    }])
}

/// Add the runtimes to a containerd table: CDI annotations and a non-default runtime_type on
/// each, as upstream's containerd options do.
fn add_containerd_runtimes(
    cfg: &mut Table,
    version: i64,
    o: &RuntimeOptions,
    root: &Path,
) -> Result<()> {
    for (name, path, default) in runtimes(o, root) {
        containerd::add_runtime(cfg, version, &name, &path, default)?;
        let mut at: Vec<&str> = containerd::cri_path(version).to_vec();
        at.extend(["containerd", "runtimes", &name]);
        let rt = toml_doc::table_mut(cfg, &at)?;
        if o.runtime_type != containerd::RUNC_V2 {
            rt.insert("runtime_type".into(), Value::String(o.runtime_type.clone()));
        }
        if !o.annotation_prefixes.is_empty() {
            let list = o
                .annotation_prefixes
                .iter()
                .map(|p| Value::String(format!("{p}*")));
            rt.insert("container_annotations".into(), Value::Array(list.collect()));
        }
    }
    if o.enable_cdi {
        containerd::enable_cdi(cfg, version)?;
    }
    Ok(())
}

/// What the top-level file imports: the drop-in's glob, named by its host path.
fn import_entry(o: &RuntimeOptions, drop_in: &Path) -> String {
    let entry = containerd::import_entry(&o.config, drop_in);
    let (Some(host), Some(ctr_dir)) = (&o.drop_in_host, drop_in.parent()) else {
        return entry;
    };
    let host_dir = host.parent().unwrap_or(Path::new("/"));
    match Path::new(&entry).strip_prefix(ctr_dir) {
        Ok(rest) => host_dir.join(rest).display().to_string(),
        Err(_) => entry,
    }
}

fn plan_containerd(o: &RuntimeOptions, root: &Path) -> Result<Vec<Written>> {
    let (before, top) = read_toml(&o.config, "containerd config")?;
    let source = load_source(o, &top)?;
    let version = containerd::version_of(&source)?;
    let drop_in = o.drop_in.as_ref().filter(|_| version != 1);
    let Some(drop_in) = drop_in else {
        let mut cfg = top;
        add_containerd_runtimes(&mut cfg, version, o, root)?;
        return Ok(vec![Written {
            path: o.config.clone(),
            before,
            after: Some(toml_doc::render(&cfg)),
        }]);
    };
    let mut d = containerd::drop_in_base(&source, version);
    add_containerd_runtimes(&mut d, version, o, root)?;
    let entry = import_entry(o, drop_in);
    let (top_text, _) = containerd::add_import(before.as_deref().unwrap_or(""), &entry, version)?;
    Ok(vec![
        planned(drop_in, Some(toml_doc::render(&d)))?,
        Written {
            path: o.config.clone(),
            before,
            after: Some(top_text),
        },
    ])
}

fn plan_crio(o: &RuntimeOptions, root: &Path) -> Result<Vec<Written>> {
    let (_, top) = read_toml(&o.config, "crio config")?;
    let source = load_source(o, &top)?;
    let target = o.drop_in.clone().unwrap_or_else(|| o.config.clone());
    let (before, mut cfg) = read_toml(&target, "crio config")?;
    for (name, path, default) in runtimes(o, root) {
        crio::add_runtime(&mut cfg, &source, &name, &path, default)?;
    }
    Ok(vec![Written {
        path: target,
        before,
        after: Some(toml_doc::render(&cfg)),
    }])
}

/// Undo `setup` (see the module comment); `done` is what setup wrote.
pub fn cleanup(o: &RuntimeOptions, root: &Path, done: &[Written]) -> Result<bool> {
    info(&format!("Starting 'cleanup' for {}", o.engine.name()));
    let in_place = !done
        .iter()
        .any(|w| o.drop_in.as_deref() == Some(w.path.as_path()) && w.path != o.config);
    let mut plan = Vec::new();
    for w in done {
        let now = file::read_optional(&w.path)?;
        let untouched = now == w.after;
        let is_drop_in = o.drop_in.as_deref() == Some(w.path.as_path()) && w.path != o.config;
        let after = match o.engine {
            Engine::Crio if o.crio_hook.is_some() => None,
            Engine::Crio => match unset_crio_default(o, now.as_deref())? {
                Some(text) => Some(text),
                None => continue,
            },
            Engine::Containerd if is_drop_in => None,
            _ if untouched => w.before.clone(),
            Engine::Docker => {
                let mut cfg = docker::parse(now.as_deref())?;
                for (name, _, _) in runtimes(o, root) {
                    docker::remove_runtime(&mut cfg, &name);
                }
                Some(docker::render(&cfg))
            }
            Engine::Containerd => revert_containerd(o, root, now.as_deref(), in_place)?,
        };
        plan.push(Written {
            path: w.path.clone(),
            before: now,
            after,
        });
    }
    if plan.is_empty() {
        return Ok(false);
    }
    commit(o, &plan)?;
    Ok(true)
}

/// CRI-O keeps its runtimes; only a default naming ours goes (when we set it).
fn unset_crio_default(o: &RuntimeOptions, now: Option<&str>) -> Result<Option<String>> {
    if !o.set_as_default {
        return Ok(None);
    }
    let mut cfg = toml_doc::parse(now.unwrap_or(""), "crio config")?;
    let key = ["crio", "runtime", "default_runtime"];
    if toml_doc::get(&cfg, &key).and_then(Value::as_str) != Some(o.name.as_str()) {
        return Ok(None);
    }
    toml_doc::remove_pruning(&mut cfg, &key);
    Ok(Some(toml_doc::render(&cfg)))
}

/// The top-level containerd file after someone else edited it: our import (or, edited in
/// place, our runtimes) taken out of what is there now.
fn revert_containerd(
    o: &RuntimeOptions,
    root: &Path,
    now: Option<&str>,
    in_place: bool,
) -> Result<Option<String>> {
    let text = now.unwrap_or("");
    match &o.drop_in {
        Some(d) if !in_place => {
            let entry = import_entry(o, d);
            Ok(Some(containerd::remove_import(text, &entry)?.0))
        }
        _ => {
            let mut cfg = toml_doc::parse(text, "containerd config")?;
            let version = containerd::version_of(&cfg)?;
            for (name, _, _) in runtimes(o, root) {
                containerd::remove_runtime(&mut cfg, version, &name);
            }
            Ok(Some(toml_doc::render(&cfg)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::applets::installer::{flags, options};

    fn runtime_options(env: &[(&str, &str)]) -> RuntimeOptions {
        let v = flags::parse(Vec::new(), |k| {
            env.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        })
        .unwrap()
        .unwrap();
        options::build(&v).unwrap().runtime
    }

    #[test]
    fn a_mode_runtime_name_keeps_nvidia_and_is_the_default() {
        let o = runtime_options(&[("NVIDIA_RUNTIME_NAME", "nvidia-cdi")]);
        let got = runtimes(&o, Path::new("/t"));
        let names: Vec<(&str, bool)> = got.iter().map(|(n, _, d)| (n.as_str(), *d)).collect();
        assert_eq!(
            names,
            [
                ("nvidia", false),
                ("nvidia-cdi", true),
                ("nvidia-legacy", false)
            ]
        );
        assert_eq!(got[1].1, "/t/nvidia-container-runtime.cdi");
        let o = runtime_options(&[("CONTAINERD_SET_AS_DEFAULT", "false")]);
        assert!(runtimes(&o, Path::new("/t")).iter().all(|(_, _, d)| !d));
    }

    #[test]
    fn the_import_names_the_host_path_of_the_drop_in() {
        let o = runtime_options(&[
            ("RUNTIME", "containerd"),
            ("RUNTIME_CONFIG", "/runtime/config-dir/config.toml"),
            (
                "RUNTIME_DROP_IN_CONFIG",
                "/runtime/config-dir.d/99-nvidia.toml",
            ),
            (
                "RUNTIME_DROP_IN_CONFIG_HOST_PATH",
                "/etc/containerd/conf.d/99-nvidia.toml",
            ),
        ]);
        let drop_in = o.drop_in.clone().unwrap();
        assert_eq!(import_entry(&o, &drop_in), "/etc/containerd/conf.d/*.toml");
        let o = runtime_options(&[("RUNTIME", "containerd")]);
        let drop_in = o.drop_in.clone().unwrap();
        assert_eq!(import_entry(&o, &drop_in), "/etc/containerd/conf.d/*.toml");
    }

    #[test]
    fn per_runtime_defaults_and_refusals() {
        let o = runtime_options(&[("RUNTIME", "crio")]);
        assert_eq!(o.config, Path::new("/etc/crio/crio.conf"));
        assert_eq!(
            o.restart,
            crate::applets::installer::options::Restart::Systemd
        );
        let o = runtime_options(&[("RUNTIME", "docker"), ("RUNTIME_DROP_IN_CONFIG", "/x.json")]);
        assert_eq!(o.drop_in, None);
        assert_eq!(o.sources, ["file"]);
        let refuse = |env: &[(&str, &str)]| {
            let v = flags::parse(Vec::new(), |k| {
                env.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            })
            .unwrap()
            .unwrap();
            options::build(&v).is_err()
        };
        assert!(refuse(&[
            ("RUNTIME", "crio"),
            ("RUNTIME_RESTART_MODE", "signal")
        ]));
        assert!(refuse(&[("RUNTIME_CONFIG_OVERRIDE", "{\"a\":1}")]));
        assert!(refuse(&[("CDI_KIND", "nvidia.com")]));
        assert!(refuse(&[("CREATE_DEVICE_NODES", "all")]));
        assert!(!refuse(&[("RUNTIME_CONFIG_OVERRIDE", "{}")]));
    }
}
