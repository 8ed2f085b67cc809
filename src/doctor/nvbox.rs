//! nvbox itself: config.toml where the engines look for it, parsed, with roots that exist; and
//! every applet name resolvable on PATH (an engine execs them by name).

use std::path::Path;

use super::{Context, Finding, which};
use crate::config::Config;

pub fn check(ctx: &Context, out: &mut Vec<Finding>) {
    check_config(ctx, out);
    let path = std::env::var("PATH").unwrap_or_default();
    out.push(check_applets(&path));
}

fn check_config(ctx: &Context, out: &mut Vec<Finding>) {
    let file = &ctx.config_path;
    let shown = file.display();
    if !file.exists() {
        out.push(Finding::ok(
            "config.toml",
            format!(
                "{shown} absent: built-in defaults in effect (set NVIDIA_CTK_CONFIG_FILE_PATH in the engine's environment to use another file)"
            ),
        ));
        return;
    }
    let cfg = match Config::load_from(file, true) {
        Ok(c) => c,
        Err(e) => {
            // The error already names FILE:LINE.
            out.push(Finding::fail(
                "config.toml",
                format!("{e:#}: every nvbox applet refuses to start"),
                format!(
                    "correct that line in {shown}, or start over with: nvidia-ctk config default --output={shown}"
                ),
            ));
            return;
        }
    };
    out.push(Finding::ok(
        "config.toml",
        format!("{shown} parses; mode {}", cfg.runtime.mode),
    ));
    let mut roots = vec![("nvidia-container-cli.root", cfg.cli.root.clone())];
    for (key, dir) in [
        ("nvbox.dev-root", &cfg.nvbox.dev_root),
        ("nvbox.proc-root", &cfg.nvbox.proc_root),
        ("nvbox.sys-root", &cfg.nvbox.sys_root),
    ] {
        if let Some(d) = dir {
            roots.push((key, d.display().to_string()));
        }
    }
    for (key, dir) in roots {
        if !dir.is_empty() && !Path::new(&dir).is_dir() {
            out.push(Finding::fail(
                format!("config.toml {key}"),
                format!("{dir:?} is not a directory: every GPU lookup fails"),
                format!(
                    "nvidia-ctk config --config-file={shown} --in-place --set {key}=<existing directory>"
                ),
            ));
        }
    }
}

/// One line for all applets: missing names are listed with the links that add them.
/// The installer is left out: no engine or hook runs it, only the toolkit image does.
pub fn check_applets(path_env: &str) -> Finding {
    let wanted: Vec<&str> = crate::APPLETS
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| *name != crate::applets::installer::NAME)
        .collect();
    let missing: Vec<&str> = wanted
        .iter()
        .copied()
        .filter(|name| which(name, path_env).is_none())
        .collect();
    if missing.is_empty() {
        return Finding::ok(
            "applets on PATH",
            format!("all {} resolvable", wanted.len()),
        );
    }
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "/usr/bin/nvbox".into());
    Finding::fail(
        "applets on PATH",
        format!(
            "{} not found on PATH: engines and hooks exec them by name",
            missing.join(", ")
        ),
        format!(
            "for a in {}; do ln -s {exe} /usr/local/bin/$a; done",
            missing.join(" ")
        ),
    )
}
