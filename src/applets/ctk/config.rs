//! `nvidia-ctk config`: render, edit and write config.toml in upstream's layout (reference
//! nvidia-container-toolkit.md §5.3, §9): keys sorted, a `[table]` header for every level,
//! unset well-known keys written as commented examples (`#key = value`). `config default`
//! prints the whole default file; `config [--set k=v]… [--in-place | --output F]` re-renders a
//! file with its own keys, as the packages' postinst does.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use toml::{Table, Value};

use super::Global;
use crate::config::{Config, locate_config};

/// Keys written as `#key = example` when the tree does not set them (upstream's list).
const COMMENTED: &[(&str, &str)] = &[
    ("accept-nvidia-visible-devices-as-volume-mounts", "false"),
    (
        "accept-nvidia-visible-devices-envvar-when-unprivileged",
        "true",
    ),
    ("swarm-resource", "\"DOCKER_RESOURCE_GPU\""),
    (
        "nvidia-container-cli.debug",
        "\"/var/log/nvidia-container-toolkit.log\"",
    ),
    ("nvidia-container-cli.ldcache", "\"/etc/ld.so.cache\""),
    ("nvidia-container-cli.no-cgroups", "false"),
    (
        "nvidia-container-cli.path",
        "\"/usr/bin/nvidia-container-cli\"",
    ),
    ("nvidia-container-cli.root", "\"/run/nvidia/driver\""),
    ("nvidia-container-cli.user", "\"root:video\""),
    (
        "nvidia-container-runtime.debug",
        "\"/var/log/nvidia-container-runtime.log\"",
    ),
];

const HELP: &str = "NAME:
   nvidia-ctk config - Interact with the NVIDIA Container Toolkit configuration

USAGE:
   nvidia-ctk config [command options]
   nvidia-ctk config default [--output FILE]

OPTIONS:
   --config-file value, --config value, -c value  Specify the config file to modify.
   --set value [ --set value ]                     Set a config value using the pattern 'key[=value]'.
                                                   A 'key' alone sets a boolean to true; lists are
                                                   comma-separated; 'features.x=nil' removes a key.
   --in-place, -i                                  Modify the config file in-place (default: false)
   --output value, -o value                        Specify the output file to write to; stdout if unset
   --help, -h                                      show help
";

#[derive(Default)]
struct Args {
    config: Option<PathBuf>,
    sets: Vec<String>,
    in_place: bool,
    output: Option<PathBuf>,
}

pub fn run(g: &Global, args: Vec<OsString>) -> Result<ExitCode> {
    let args: Vec<String> = args
        .into_iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    if let Some(sub) = args.first().map(String::as_str)
        && matches!(sub, "default" | "create-default" | "generate-default")
    {
        let a = parse(&args[1..])?;
        let text = render(&default_tree()?);
        write_out(a.output.as_deref(), &text)?;
        return Ok(ExitCode::SUCCESS);
    }
    if args.iter().any(|a| a == "--help" || a == "-h") {
        print!("{HELP}");
        return Ok(ExitCode::SUCCESS);
    }
    let a = parse(&args)?;
    // `--config-file`, else the global `--config` (or NVIDIA_CTK_CONFIG_FILE_PATH), else the
    // usual lookup.
    let path = a
        .config
        .clone()
        .or_else(|| g.config.clone())
        .unwrap_or_else(locate_config);
    let mut tree = match std::fs::read_to_string(&path) {
        Ok(text) => {
            // Parsing through Config reports errors the way every other applet does.
            Config::parse(&text, &path)?;
            text.parse::<Table>()
                .map_err(|e| anyhow!("{}: {e}", path.display()))?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => default_tree()?,
        Err(e) => bail!("open {}: {e}", path.display()),
    };
    for set in &a.sets {
        apply_set(&mut tree, set)?;
    }
    let text = render(&tree);
    Config::parse(&text, &path).context("invalid config after --set")?;
    if a.in_place {
        write_file(&path, &text)?;
    } else {
        write_out(a.output.as_deref(), &text)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn parse(args: &[String]) -> Result<Args> {
    let mut a = Args::default();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with('-') => (f, Some(v.to_owned())),
            _ => (arg.as_str(), None),
        };
        let mut value = || -> Result<String> {
            match &inline {
                Some(v) => Ok(v.clone()),
                None => it
                    .next()
                    .cloned()
                    .ok_or_else(|| anyhow!("flag needs an argument: {flag}")),
            }
        };
        match flag.trim_start_matches('-') {
            "config-file" | "config" | "c" => a.config = Some(PathBuf::from(value()?)),
            "set" => a.sets.push(value()?),
            "in-place" | "i" => a.in_place = true,
            "output" | "o" => a.output = Some(PathBuf::from(value()?)),
            _ => bail!("flag provided but not defined: {arg}"),
        }
    }
    if a.in_place && a.output.is_some() {
        bail!("only one of --in-place and --output may be specified");
    }
    Ok(a)
}

/// The default config as a tree, with the keys upstream leaves out of a fresh file removed.
pub(crate) fn default_tree() -> Result<Table> {
    let mut tree = Table::try_from(Config::default()).context("render the default config")?;
    for key in [
        "nvbox",
        "features",
        "nvidia-container-cli.no-pivot",
        "nvidia-container-runtime.modes.jit-cdi",
    ] {
        remove(&mut tree, key);
    }
    for (key, _) in COMMENTED {
        remove(&mut tree, key);
    }
    // Upstream's file says `#debug = …` for the runtime log that defaults to /dev/null.
    Ok(tree)
}

fn remove(tree: &mut Table, dotted: &str) -> Option<Value> {
    let mut parts: Vec<&str> = dotted.split('.').collect();
    let last = parts.pop()?;
    let mut t = tree;
    for p in parts {
        t = t.get_mut(p)?.as_table_mut()?;
    }
    t.remove(last)
}

/// Every key the schema knows, dotted, with its default value (Options filled in).
fn schema() -> Result<Table> {
    let mut c = Config::default();
    let f = &mut c.features;
    for slot in [
        &mut f.allow_cuda_compat_libs_from_container,
        &mut f.allow_ldconfig_from_container,
        &mut f.allow_unknown_oci_spec_fields,
        &mut f.disable_cuda_compat_lib_hook,
        &mut f.disable_imex_channel_creation,
        &mut f.ignore_imex_channel_requests,
        &mut f.no_additional_gids_for_device_nodes,
    ] {
        *slot = Some(false);
    }
    c.runtime.modes.jit_cdi.nvcdi_feature_flags = Some(Vec::new());
    c.runtime.modes.jit_cdi.nvcdi_disable_hooks = Some(Vec::new());
    c.runtime.modes.csv.compat_container_root = Some(String::new());
    c.nvbox.dev_root = Some(PathBuf::new());
    c.nvbox.proc_root = Some(PathBuf::new());
    c.nvbox.sys_root = Some(PathBuf::new());
    c.nvbox.ldcache = Some(String::new());
    Table::try_from(c).context("render the config schema")
}

/// `key[=value]`, typed by the schema: a bare key is `true`; lists split on `,`; `nil` removes.
fn apply_set(tree: &mut Table, set: &str) -> Result<()> {
    let (key, raw) = match set.split_once('=') {
        Some((k, v)) => (k.trim(), Some(v)),
        None => (set.trim(), None),
    };
    let schema = schema()?;
    let mut kind = Some(&Value::Table(schema));
    for part in key.split('.') {
        kind = kind.and_then(|v| v.as_table()).and_then(|t| t.get(part));
    }
    let Some(kind) = kind.filter(|k| !k.is_table()) else {
        bail!("invalid config option {key:?}");
    };
    if raw == Some("nil") {
        remove(tree, key);
        return Ok(());
    }
    let value = match (kind, raw) {
        (Value::Boolean(_), None) => Value::Boolean(true),
        (Value::Boolean(_), Some(v)) => Value::Boolean(
            v.parse()
                .map_err(|_| anyhow!("invalid value {v:?} for {key}: not a boolean"))?,
        ),
        (Value::Array(_), Some(v)) => Value::Array(
            v.split(',')
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.to_owned()))
                .collect(),
        ),
        (_, Some(v)) => Value::String(v.to_owned()),
        (_, None) => bail!("a value is required for {key}"),
    };
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().expect("split yields one part");
    let mut t = tree;
    for p in parts {
        t = t
            .entry(p)
            .or_insert_with(|| Value::Table(Table::new()))
            .as_table_mut()
            .ok_or_else(|| anyhow!("{p} is not a table"))?;
    }
    t.insert(last.to_owned(), value);
    Ok(())
}

/// Upstream's layout: per table, sorted scalar keys (with commented examples for unset
/// well-known ones), then each sub-table under its own header, even when it only holds tables.
pub(crate) fn render(tree: &Table) -> String {
    let mut out = String::new();
    render_table(&mut out, tree, "");
    out
}

fn render_table(out: &mut String, t: &Table, prefix: &str) {
    let mut lines: Vec<(String, String)> = Vec::new();
    for (k, v) in t.iter().filter(|(_, v)| !v.is_table()) {
        lines.push((k.clone(), format!("{k} = {v}")));
    }
    for (dotted, example) in COMMENTED {
        let (table, key) = dotted.rsplit_once('.').unwrap_or(("", dotted));
        if table == prefix && !t.contains_key(key) {
            lines.push((key.to_string(), format!("#{key} = {example}")));
        }
    }
    lines.sort();
    for (_, line) in lines {
        let _ = writeln!(out, "{line}");
    }
    for (k, v) in t.iter() {
        if let Value::Table(sub) = v {
            let name = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            let _ = writeln!(out, "\n[{name}]");
            render_table(out, sub, &name);
        }
    }
}

fn write_out(output: Option<&Path>, text: &str) -> Result<()> {
    match output {
        Some(p) => write_file(p, text),
        None => {
            std::io::stdout().lock().write_all(text.as_bytes())?;
            Ok(())
        }
    }
}

/// Temp file + fsync + rename, creating the directory.
fn write_file(path: &Path, text: &str) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let tmp = dir.join(format!(".config.toml.nvbox-{}", std::process::id()));
    let done = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    done.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        anyhow!("write {}: {e}", path.display())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The default file as upstream renders it (reference §5.3), modulo the host-probed
    /// ldconfig value.
    #[test]
    fn default_file_matches_upstreams_layout() {
        let text = render(&default_tree().unwrap());
        let ldconfig = Config::default().cli.ldconfig;
        let want = format!(
            "#accept-nvidia-visible-devices-as-volume-mounts = false
#accept-nvidia-visible-devices-envvar-when-unprivileged = true
disable-require = false
supported-driver-capabilities = \"compat32,compute,display,graphics,ngx,utility,video\"
#swarm-resource = \"DOCKER_RESOURCE_GPU\"

[nvidia-container-cli]
#debug = \"/var/log/nvidia-container-toolkit.log\"
environment = []
#ldcache = \"/etc/ld.so.cache\"
ldconfig = \"{ldconfig}\"
load-kmods = true
#no-cgroups = false
#path = \"/usr/bin/nvidia-container-cli\"
#root = \"/run/nvidia/driver\"
#user = \"root:video\"

[nvidia-container-runtime]
#debug = \"/var/log/nvidia-container-runtime.log\"
log-level = \"info\"
mode = \"auto\"
runtimes = [\"runc\", \"crun\"]

[nvidia-container-runtime.modes]

[nvidia-container-runtime.modes.cdi]
annotation-prefixes = [\"cdi.k8s.io/\"]
default-kind = \"nvidia.com/gpu\"
spec-dirs = [\"/etc/cdi\", \"/var/run/cdi\"]

[nvidia-container-runtime.modes.csv]
mount-spec-path = \"/etc/nvidia-container-runtime/host-files-for-container.d\"

[nvidia-container-runtime.modes.legacy]
cuda-compat-mode = \"ldconfig\"

[nvidia-container-runtime-hook]
path = \"nvidia-container-runtime-hook\"
skip-mode-detection = false

[nvidia-ctk]
path = \"nvidia-ctk\"
"
        );
        assert_eq!(text, want);
    }

    #[test]
    fn set_types_values_by_the_schema() {
        let mut t = Table::new();
        apply_set(&mut t, "nvidia-container-cli.no-cgroups").unwrap();
        apply_set(&mut t, "nvidia-container-runtime.runtimes=crun,runc").unwrap();
        apply_set(&mut t, "nvidia-container-cli.root=/run/nvidia/driver").unwrap();
        apply_set(&mut t, "features.allow-ldconfig-from-container=true").unwrap();
        apply_set(&mut t, "features.allow-ldconfig-from-container=nil").unwrap();
        let text = render(&t);
        assert!(text.contains("no-cgroups = true\n"), "{text}");
        assert!(text.contains("runtimes = [\"crun\", \"runc\"]\n"), "{text}");
        assert!(text.contains("root = \"/run/nvidia/driver\"\n"), "{text}");
        assert!(!text.contains("allow-ldconfig"), "{text}");
        for bad in [
            "nope",
            "nvidia-container-cli",
            "nvidia-container-cli.load-kmods=maybe",
        ] {
            assert!(apply_set(&mut t, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn explicit_defaults_stay_uncommented() {
        let mut t: Table = "accept-nvidia-visible-devices-envvar-when-unprivileged = true\n"
            .parse()
            .unwrap();
        apply_set(&mut t, "swarm-resource=DOCKER_RESOURCE_GPU").unwrap();
        let text = render(&t);
        assert!(text.starts_with(
            "#accept-nvidia-visible-devices-as-volume-mounts = false\naccept-nvidia-visible-devices-envvar-when-unprivileged = true\n"
        ), "{text}");
        assert!(
            text.contains("\nswarm-resource = \"DOCKER_RESOURCE_GPU\"\n"),
            "{text}"
        );
    }
}
