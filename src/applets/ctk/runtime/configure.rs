//! `nvidia-ctk runtime configure`: read the engine's config, edit it (src/engines), then either
//! print the result (`--dry-run`) or write each file atomically under a lock beside the main
//! config. The daemon is never restarted; upstream's advice to restart it is printed instead.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, anyhow, bail};
use toml::Table;

use super::flags::{self, Engine, Options, Source};
use super::{Global, info, warn};
use crate::engines::{containerd, crio, docker, file, ocihook, toml_doc};

/// One file's new content (None: delete it), with the label upstream logs before a dry-run print.
struct Change {
    path: PathBuf,
    content: Option<String>,
    label: Option<&'static str>,
    /// What it held before, to skip rewriting an unchanged file.
    before: Option<String>,
}

pub fn run(g: &Global, args: Vec<OsString>) -> Result<ExitCode> {
    let Some(o) = flags::parse(g, args)? else {
        return Ok(ExitCode::SUCCESS);
    };
    if o.hook_mode {
        configure_hook(g, &o).map_err(|e| anyhow!("error creating OCI hook: {e:#}"))?;
        return Ok(ExitCode::SUCCESS);
    }
    let plan = |g: &Global| match o.engine {
        Engine::Docker => plan_docker(g, &o),
        Engine::Containerd => plan_containerd(g, &o),
        Engine::Crio => plan_crio(g, &o),
    };
    let _lock = match o.dry_run {
        true => None,
        false => {
            // A config that cannot be edited is refused before the lock file is created
            // beside it, so a refusal leaves the engine's directory as it was; the plan that
            // counts is made again under the lock.
            plan(&Global {
                quiet: true,
                ..g.clone()
            })?;
            Some(file::lock(&o.config)?)
        }
    };
    let changes = plan(g)?;
    commit(g, &o, changes).map_err(|e| anyhow!("unable to flush config: {e:#}"))?;
    Ok(ExitCode::SUCCESS)
}

fn load_error(o: &Options, e: anyhow::Error) -> anyhow::Error {
    anyhow!(
        "unable to load config for runtime {}: {e:#}",
        o.engine.name()
    )
}

fn update_error(e: anyhow::Error) -> anyhow::Error {
    anyhow!("unable to update config: {e:#}")
}

fn read(g: &Global, path: &Path) -> Result<Option<String>> {
    let text = file::read_optional(path)?;
    if text.is_none() {
        info(g, "Config file does not exist; using empty config");
    }
    Ok(text)
}

fn plan_docker(g: &Global, o: &Options) -> Result<Vec<Change>> {
    let before = read(g, &o.config).map_err(|e| load_error(o, e))?;
    let mut cfg = docker::parse(before.as_deref()).map_err(|e| load_error(o, e))?;
    if o.remove {
        docker::remove_runtime(&mut cfg, &o.name);
    } else {
        docker::add_runtime(&mut cfg, &o.name, &o.path, o.set_as_default).map_err(update_error)?;
        if o.cdi {
            docker::enable_cdi(&mut cfg).map_err(update_error)?;
        }
    }
    Ok(vec![Change {
        path: o.config.clone(),
        content: Some(docker::render(&cfg)),
        label: None,
        before,
    }])
}

/// `containerd config dump` / `crio status config` (fallback `crio-status config`).
fn source_from_command(o: &Options) -> Result<String> {
    let mut tries: Vec<(String, Vec<String>)> = Vec::new();
    match o.engine {
        Engine::Containerd => {
            let mut args = Vec::new();
            if o.config.exists() {
                args = vec!["--config".into(), o.config.display().to_string()];
            }
            args.extend(["config".into(), "dump".into()]);
            let exe = o.executable.clone().unwrap_or_else(|| "containerd".into());
            tries.push((exe, args));
        }
        _ => {
            let args = vec!["status".to_owned(), "config".to_owned()];
            match &o.executable {
                Some(exe) => tries.push((exe.clone(), args)),
                None => {
                    tries.push(("crio".into(), args));
                    tries.push(("crio-status".into(), vec!["config".into()]));
                }
            }
        }
    }
    let mut last = anyhow!("no command to run");
    for (exe, args) in tries {
        match Command::new(&exe).args(&args).output() {
            Ok(out) if out.status.success() => {
                return String::from_utf8(out.stdout)
                    .with_context(|| format!("output of {exe} is not UTF-8"));
            }
            Ok(out) => {
                let err = String::from_utf8_lossy(&out.stderr);
                last = anyhow!("{exe} {}: {}: {}", args.join(" "), out.status, err.trim());
            }
            Err(e) => last = anyhow!("{exe} {}: {e}", args.join(" ")),
        }
    }
    Err(last)
}

fn load_source(o: &Options, top: &Table) -> Result<Table> {
    match o.source {
        Source::File => Ok(top.clone()),
        Source::Command => toml_doc::parse(&source_from_command(o)?, "config from command"),
    }
}

fn warn_comments_lost(g: &Global, path: &Path, before: Option<&str>) {
    if before.is_some_and(|t| t.lines().any(|l| l.trim_start().starts_with('#'))) {
        warn(g, &format!("Comments in {} are not kept", path.display()));
    }
}

fn plan_containerd(g: &Global, o: &Options) -> Result<Vec<Change>> {
    let before = read(g, &o.config).map_err(|e| load_error(o, e))?;
    let text = before.clone().unwrap_or_default();
    let top = toml_doc::parse(&text, "containerd config").map_err(|e| load_error(o, e))?;
    let source = load_source(o, &top).map_err(|e| load_error(o, e))?;
    let version = containerd::version_of(&source).map_err(|e| load_error(o, e))?;
    let drop_in = match (&o.drop_in, version) {
        (Some(_), 1) => {
            let msg = "Config version 1 has no drop-in support; editing";
            info(g, &format!("{msg} {}", o.config.display()));
            None
        }
        (d, _) => d.clone(),
    };
    let Some(drop_in) = drop_in else {
        let mut cfg = top;
        if o.remove {
            containerd::remove_runtime(&mut cfg, version, &o.name);
        } else {
            containerd::add_runtime(&mut cfg, version, &o.name, &o.path, o.set_as_default)
                .map_err(update_error)?;
            if o.cdi {
                containerd::enable_cdi(&mut cfg, version).map_err(update_error)?;
            }
        }
        let content = toml_doc::render(&cfg);
        if before.as_deref() != Some(content.as_str()) {
            warn_comments_lost(g, &o.config, before.as_deref());
        }
        return Ok(vec![Change {
            path: o.config.clone(),
            content: Some(content),
            label: None,
            before,
        }]);
    };
    let entry = containerd::import_entry(&o.config, &drop_in);
    let mut changes = Vec::new();
    let (top_text, kept) = if o.remove {
        let drop_before = file::read_optional(&drop_in)?;
        changes.push(Change {
            path: drop_in.clone(),
            content: None,
            label: Some("Drop-in config:"),
            before: drop_before,
        });
        if entry.ends_with("/*.toml") && other_toml_beside(&drop_in) {
            (text.clone(), true)
        } else {
            containerd::remove_import(&text, &entry).map_err(update_error)?
        }
    } else {
        let mut d = containerd::drop_in_base(&source, version);
        containerd::add_runtime(&mut d, version, &o.name, &o.path, o.set_as_default)
            .map_err(update_error)?;
        if o.cdi {
            containerd::enable_cdi(&mut d, version).map_err(update_error)?;
        }
        changes.push(Change {
            path: drop_in.clone(),
            content: Some(toml_doc::render(&d)),
            label: Some("Drop-in config:"),
            before: file::read_optional(&drop_in)?,
        });
        containerd::add_import(&text, &entry, version).map_err(update_error)?
    };
    if !kept {
        warn_comments_lost(g, &o.config, before.as_deref());
    }
    changes.push(Change {
        path: o.config.clone(),
        content: Some(top_text),
        label: Some("Top-level config:"),
        before,
    });
    Ok(changes)
}

/// Whether the drop-in's directory holds other `*.toml` files (then the glob import stays).
fn other_toml_beside(drop_in: &Path) -> bool {
    let Some(dir) = drop_in.parent() else {
        return false;
    };
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            let p = e.path();
            p != drop_in && p.extension().is_some_and(|x| x == "toml")
        })
}

fn plan_crio(g: &Global, o: &Options) -> Result<Vec<Change>> {
    let top_before = read(g, &o.config).map_err(|e| load_error(o, e))?;
    let top = toml_doc::parse(top_before.as_deref().unwrap_or(""), "crio config")
        .map_err(|e| load_error(o, e))?;
    let source = load_source(o, &top).map_err(|e| load_error(o, e))?;
    let (path, before) = match &o.drop_in {
        Some(d) => (
            d.clone(),
            file::read_optional(d).map_err(|e| load_error(o, e))?,
        ),
        None => (o.config.clone(), top_before),
    };
    let mut target = toml_doc::parse(before.as_deref().unwrap_or(""), "crio config")
        .map_err(|e| load_error(o, e))?;
    if o.remove {
        crio::remove_runtime(&mut target, &o.name);
    } else {
        crio::add_runtime(&mut target, &source, &o.name, &o.path, o.set_as_default)
            .map_err(update_error)?;
    }
    let content = match (o.remove && o.drop_in.is_some(), target.is_empty()) {
        (true, true) => None,
        _ => Some(toml_doc::render(&target)),
    };
    if content.as_deref() != before.as_deref() && content.is_some() {
        warn_comments_lost(g, &path, before.as_deref());
    }
    Ok(vec![Change {
        path,
        content,
        label: None,
        before,
    }])
}

fn commit(g: &Global, o: &Options, changes: Vec<Change>) -> Result<()> {
    if o.dry_run {
        for c in changes {
            if let Some(label) = c.label {
                info(g, label);
            }
            match c.content {
                Some(text) => crate::report::write_stdout(&text)?,
                None if c.before.is_some() => {
                    info(g, &format!("Would remove {}", c.path.display()))
                }
                None => {}
            }
        }
        return Ok(());
    }
    let mut touched = false;
    for c in changes {
        match c.content {
            Some(text) if c.before.as_deref() == Some(text.as_str()) => {
                info(
                    g,
                    &format!("Config {} is already up to date", c.path.display()),
                );
            }
            Some(text) => {
                file::write_atomic(&c.path, text.as_bytes())?;
                info(g, &format!("Wrote updated config to {}", c.path.display()));
                touched = true;
            }
            None => {
                if file::remove(&c.path)? {
                    info(
                        g,
                        &format!("Removed empty config from {}", c.path.display()),
                    );
                    touched = true;
                }
            }
        }
    }
    if touched {
        info(
            g,
            &format!(
                "It is recommended that {} daemon be restarted.",
                o.engine.name()
            ),
        );
    }
    Ok(())
}

fn configure_hook(g: &Global, o: &Options) -> Result<()> {
    let text = ocihook::render(Path::new(&o.hook_path));
    let Some(path) = o.hook_file.as_ref() else {
        if o.remove {
            bail!("--remove needs --oci-hook-path");
        }
        crate::report::write_stdout(&text)?;
        return Ok(());
    };
    if o.dry_run {
        if !o.remove {
            crate::report::write_stdout(&text)?;
        }
        return Ok(());
    }
    let _lock = file::lock(path)?;
    if o.remove {
        if file::remove(path)? {
            info(g, &format!("Removed OCI hook {}", path.display()));
        }
    } else {
        file::write_atomic(path, text.as_bytes())?;
        info(g, &format!("Wrote OCI hook to {}", path.display()));
    }
    Ok(())
}
