//! `nvidia-ctk cdi transform root`: move a spec's paths from one root to another, on the host
//! side (hostPath of nodes and mounts, hook binaries) or the container side (node paths, mount
//! targets and the paths hooks are given).

use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};

use super::{Format, next_flag, write_spec};
use crate::applets::ctk::Global;
use crate::spec::cdi::{ContainerEdits, Spec, parse_spec};

pub fn run(_g: &Global, args: Vec<OsString>) -> Result<ExitCode> {
    let mut it = args.into_iter();
    match it.next().as_ref().and_then(|a| a.to_str()) {
        Some("root") => {}
        Some(other) => bail!("no such command: cdi transform {other}"),
        None => {
            println!(
                "usage: nvidia-ctk cdi transform root --from DIR --to DIR [--relative-to host|container] [--input FILE] [--output FILE]"
            );
            return Ok(ExitCode::SUCCESS);
        }
    }
    let (mut from, mut to, mut relative_to) = (String::new(), String::new(), "host".to_owned());
    let (mut input, mut output): (Option<String>, Option<PathBuf>) = (None, None);
    while let Some(flag) = next_flag(&mut it)? {
        match flag.name.as_str() {
            "from" => from = flag.value(&mut it)?,
            "to" => to = flag.value(&mut it)?,
            "relative-to" => relative_to = flag.value(&mut it)?,
            "input" => input = Some(flag.value(&mut it)?),
            "output" => output = Some(flag.value(&mut it)?.into()),
            other => bail!("flag provided but not defined: -{other}"),
        }
    }
    let container = match relative_to.as_str() {
        "host" => false,
        "container" => true,
        other => bail!("invalid --relative-to value: {other:?}"),
    };
    let (bytes, shown) = match input.as_deref() {
        None | Some("-") => {
            let mut b = Vec::new();
            std::io::stdin()
                .read_to_end(&mut b)
                .context("failed to read the spec from stdin")?;
            (b, PathBuf::from("stdin"))
        }
        Some(p) => (
            std::fs::read(p).with_context(|| format!("failed to read spec {p}"))?,
            PathBuf::from(p),
        ),
    };
    let mut spec = parse_spec(&bytes, &shown).context("failed to load CDI specification")?;
    transform_root(&mut spec, &from, &to, container);
    let in_format = if bytes.trim_ascii_start().starts_with(b"{") {
        Format::Json
    } else {
        Format::Yaml
    };
    let format = output
        .as_deref()
        .and_then(Format::from_path)
        .unwrap_or(in_format);
    write_spec(&spec, format, output.as_deref())?;
    Ok(ExitCode::SUCCESS)
}

/// Replace the `from` prefix (whole path components only) with `to`.
pub fn transform_root(spec: &mut Spec, from: &str, to: &str, container: bool) {
    let edits = std::iter::once(&mut spec.container_edits)
        .chain(spec.devices.iter_mut().map(|d| &mut d.container_edits));
    for e in edits {
        transform_edits(e, from, to, container);
    }
}

fn transform_edits(e: &mut ContainerEdits, from: &str, to: &str, container: bool) {
    let t = |p: &str| rebase(p, from, to);
    for n in &mut e.device_nodes {
        if container {
            n.path = t(&n.path);
        } else {
            let host = n.host_path.clone().unwrap_or_else(|| n.path.clone());
            let moved = t(&host);
            n.host_path = (moved != n.path).then_some(moved);
        }
    }
    for m in &mut e.mounts {
        if container {
            m.container_path = t(&m.container_path);
        } else {
            m.host_path = t(&m.host_path);
        }
    }
    for h in &mut e.hooks {
        if !container {
            h.path = t(&h.path);
            continue;
        }
        // Hook arguments name container paths: plain ones and both sides of `target::link`.
        for a in &mut h.args {
            *a = match a.split_once("::") {
                Some((target, link)) => format!("{}::{}", t(target), t(link)),
                None => t(a),
            };
        }
    }
}

fn rebase(path: &str, from: &str, to: &str) -> String {
    let from = from.trim_end_matches('/');
    if from.is_empty() {
        // Everything is under `/`.
        if !path.starts_with('/') {
            return path.to_owned();
        }
        return Path::new(to)
            .join(path.trim_start_matches('/'))
            .display()
            .to_string();
    }
    match path.strip_prefix(from) {
        Some("") => to.to_owned(),
        Some(rest) if rest.starts_with('/') => {
            format!("{}{rest}", to.trim_end_matches('/'))
        }
        _ => path.to_owned(),
    }
}
