//! Installing the toolkit into `<install dir>/toolkit` (upstream's toolkit/toolkit.go): the
//! binary, one link per applet, and `.config/nvidia-container-runtime/config.toml` whose paths
//! point into the directory and whose roots are the driver and dev roots given. nvbox finds that
//! config beside its own binary (src/config.rs), so no shell wrapper sits between an engine and
//! the runtime: upstream puts a `#!/bin/sh` script in front of every binary to set
//! `NVIDIA_CTK_CONFIG_FILE_PATH`.
//!
//! Unlike upstream, which deletes the old directory first, the new tree is built beside it and
//! swapped in with one `renameat2(RENAME_EXCHANGE)`: a container starting during an upgrade
//! finds either the old toolkit or the new one, never none.

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
use toml::{Table, Value};

use super::options::{Options, ToolkitOptions};
use super::{info, warn};
use crate::applets::ctk::{Global, cdi, config, system};

/// The names the toolkit directory holds, besides the binary itself: every applet, and the
/// runtimes with a fixed mode that the engine config names.
pub fn link_names() -> Vec<&'static str> {
    let mut names: Vec<&str> = crate::APPLETS
        .iter()
        .map(|(n, _)| *n)
        .filter(|n| *n != super::NAME && *n != "nvidia-docker")
        .collect();
    names.sort_unstable();
    names
}

pub const BINARY: &str = "nvbox";

/// Install the toolkit; `low_level` is the `nvidia-container-runtime.runtimes` list.
pub fn install(o: &Options, low_level: &[String]) -> Result<()> {
    let root = o.toolkit_root();
    info(&format!(
        "Installing NVIDIA container toolkit to '{}'",
        root.display()
    ));
    let t = &o.toolkit;
    let step = |what: &str, r: Result<()>| -> Result<()> {
        match r {
            Err(e) if t.ignore_errors => {
                warn(&format!("Ignoring error: {what}: {e:#}"));
                Ok(())
            }
            r => r.with_context(|| what.to_owned()),
        }
    };
    step(
        "unable to install toolkit",
        install_tree(&root, t, low_level),
    )?;
    if t.control_nodes {
        step("error creating device nodes", create_control_nodes(t))?;
    }
    if let Some((dir, vendor, class)) = &t.cdi {
        step(
            "error generating CDI specification",
            generate_cdi(t, &root, dir, vendor, class),
        )?;
    }
    Ok(())
}

fn install_tree(root: &Path, t: &ToolkitOptions, low_level: &[String]) -> Result<()> {
    let parent = root.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(parent)
        .with_context(|| format!("unable to create {}", parent.display()))?;
    let stage = parent.join(format!(".toolkit.nvbox-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&stage);
    let built = build_tree(&stage, root, t, low_level);
    if let Err(e) = built {
        let _ = std::fs::remove_dir_all(&stage);
        return Err(e);
    }
    let swapped = match std::fs::symlink_metadata(root) {
        Ok(_) => renameat2(
            AT_FDCWD,
            &stage,
            AT_FDCWD,
            root,
            RenameFlags::RENAME_EXCHANGE,
        )
        .map_err(|e| anyhow!("unable to replace {}: {e}", root.display())),
        Err(_) => std::fs::rename(&stage, root)
            .map_err(|e| anyhow!("unable to create {}: {e}", root.display())),
    };
    if let Err(e) = swapped {
        let _ = std::fs::remove_dir_all(&stage);
        return Err(e);
    }
    // After an exchange the stage holds the previous toolkit.
    let _ = std::fs::remove_dir_all(&stage);
    Ok(())
}

fn build_tree(stage: &Path, root: &Path, t: &ToolkitOptions, low_level: &[String]) -> Result<()> {
    std::fs::DirBuilder::new()
        .mode(0o755)
        .create(stage)
        .with_context(|| format!("unable to create {}", stage.display()))?;
    copy_self(&stage.join(BINARY))?;
    for name in link_names() {
        std::os::unix::fs::symlink(BINARY, stage.join(name))
            .with_context(|| format!("unable to link {name}"))?;
    }
    let text = render_config(root, t, low_level)?;
    let cfg = stage.join(".config/nvidia-container-runtime/config.toml");
    std::fs::create_dir_all(cfg.parent().expect("a config path has a parent"))
        .context("unable to create the config directory")?;
    std::fs::write(&cfg, &text).with_context(|| format!("unable to write {}", cfg.display()))?;
    println!("Using config:\n{text}");
    Ok(())
}

use std::os::unix::fs::DirBuilderExt;

/// Copy the running binary: it is the whole toolkit.
fn copy_self(dest: &Path) -> Result<()> {
    let exe = std::fs::read("/proc/self/exe").context("unable to read /proc/self/exe")?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o755)
        .open(dest)
        .with_context(|| format!("unable to create {}", dest.display()))?;
    std::io::Write::write_all(&mut f, &exe)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("unable to write {}", dest.display()))?;
    std::fs::set_permissions(dest, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("unable to chmod {}", dest.display()))
}

fn set(tree: &mut Table, dotted: &str, value: Value) {
    let mut parts: Vec<&str> = dotted.split('.').collect();
    let last = parts.pop().expect("split yields one part");
    let mut t = tree;
    for p in parts {
        let slot = t.entry(p).or_insert_with(|| Value::Table(Table::new()));
        if !slot.is_table() {
            *slot = Value::Table(Table::new());
        }
        t = slot.as_table_mut().expect("made a table above");
    }
    t.insert(last.to_owned(), value);
}

fn path_value(p: &Path) -> Value {
    Value::String(p.display().to_string())
}

/// Upstream's defaults with the install dir's paths and the host's roots (installToolkitConfig).
pub fn render_config(root: &Path, t: &ToolkitOptions, low_level: &[String]) -> Result<String> {
    let mut tree = config::default_tree()?;
    // ldconfig is the driver root's: `.real` where that root has one (Debian family).
    let real = t.driver_root_ctr.join("sbin/ldconfig.real").exists();
    let ldconfig = Path::new(&t.driver_root).join(if real {
        "sbin/ldconfig.real"
    } else {
        "sbin/ldconfig"
    });
    set(
        &mut tree,
        "nvidia-container-cli.root",
        Value::String(t.driver_root.clone()),
    );
    set(
        &mut tree,
        "nvidia-container-cli.path",
        path_value(&root.join("nvidia-container-cli")),
    );
    set(
        &mut tree,
        "nvidia-container-cli.ldconfig",
        Value::String(format!("@{}", ldconfig.display())),
    );
    set(
        &mut tree,
        "nvidia-ctk.path",
        path_value(&root.join("nvidia-ctk")),
    );
    set(
        &mut tree,
        "nvidia-container-runtime-hook.path",
        path_value(&root.join("nvidia-container-runtime-hook")),
    );
    if !low_level.is_empty() {
        let list = low_level.iter().cloned().map(Value::String).collect();
        set(
            &mut tree,
            "nvidia-container-runtime.runtimes",
            Value::Array(list),
        );
    }
    for (key, value) in &t.settings {
        set(&mut tree, key, value.clone());
    }
    if let Some(dev) = &t.dev_root {
        set(&mut tree, "nvbox.dev-root", Value::String(dev.clone()));
    }
    if let Some(p) = &t.proc_root {
        set(&mut tree, "nvbox.proc-root", path_value(p));
    }
    if let Some(p) = &t.sys_root {
        set(&mut tree, "nvbox.sys-root", path_value(p));
    }
    let text = config::render(&tree);
    // What nvbox writes, nvbox must read back.
    crate::config::Config::parse(&text, Path::new("config.toml"))?;
    Ok(text)
}

fn quiet() -> Global {
    Global {
        quiet: !super::debug_enabled(),
        ..Global::default()
    }
}

fn os(args: &[String]) -> Vec<std::ffi::OsString> {
    args.iter().map(Into::into).collect()
}

fn create_control_nodes(t: &ToolkitOptions) -> Result<()> {
    info(&format!(
        "Creating control device nodes at {}",
        t.dev_root_ctr.display()
    ));
    let mut args = vec![
        "create-device-nodes".to_owned(),
        "--control-devices".to_owned(),
        format!("--dev-root={}", t.dev_root_ctr.display()),
    ];
    if let Some(p) = &t.proc_root {
        args.push(format!("--proc-root={}", p.display()));
    }
    system::run(&quiet(), os(&args)).map(drop)
}

/// The management spec (all control nodes and driver files, for Operator components), made
/// from the roots as this process sees them, then moved to the host's roots.
fn generate_cdi(
    t: &ToolkitOptions,
    root: &Path,
    dir: &Path,
    vendor: &str,
    class: &str,
) -> Result<()> {
    info("Generating CDI spec for management containers");
    let out: PathBuf = dir.join(format!("{vendor}-{class}.yaml"));
    let mut args = vec![
        "--mode=management".to_owned(),
        format!("--driver-root={}", t.driver_root_ctr.display()),
        format!("--dev-root={}", t.dev_root_ctr.display()),
        format!(
            "--nvidia-cdi-hook-path={}",
            root.join("nvidia-cdi-hook").display()
        ),
        format!("--vendor={vendor}"),
        format!("--class={class}"),
        format!("--output={}", out.display()),
    ];
    if let Some(p) = &t.proc_root {
        args.push(format!("--proc-root={}", p.display()));
    }
    if let Some(p) = &t.sys_root {
        args.push(format!("--sys-root={}", p.display()));
    }
    cdi::generate::run(&quiet(), os(&args))?;
    let ctr_driver = t.driver_root_ctr.display().to_string();
    let ctr_dev = t.dev_root_ctr.display().to_string();
    let dev = t.dev_root.clone().unwrap_or_else(|| t.driver_root.clone());
    if ctr_driver == t.driver_root && ctr_dev == dev {
        return Ok(());
    }
    let bytes = std::fs::read(&out).with_context(|| format!("unable to read {}", out.display()))?;
    let mut spec = crate::spec::cdi::parse_spec(&bytes, &out)?;
    // The dev root first: it is usually the longer, more specific prefix.
    if ctr_dev != ctr_driver {
        cdi::transform::transform_root(&mut spec, &ctr_dev, &dev, false);
    } else if dev != t.driver_root {
        let under = |r: &str| format!("{}/dev", r.trim_end_matches('/'));
        cdi::transform::transform_root(&mut spec, &under(&ctr_dev), &under(&dev), false);
    }
    cdi::transform::transform_root(&mut spec, &ctr_driver, &t.driver_root, false);
    cdi::write_spec(&spec, cdi::Format::Yaml, Some(&out))
}
