//! `nvidia-cdi-hook`: the OCI `createContainer` hooks a CDI spec names (reference
//! nvidia-container-toolkit.md §8). They run in the container's mount namespace before
//! pivot_root, with the OCI state on stdin; every container-side path goes through the
//! rootfs's fd with `openat2(RESOLVE_IN_ROOT)`, and nothing from the image is ever executed.
//! A hook this binary does not know is a warning and exit 0, so specs written by newer
//! generators keep working.

mod compat;
mod devices;
mod ldconf;
mod links;

use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;

use crate::live::owner::{self, Owner};
use crate::live::rootfs::Rootfs;
use crate::privilege::Phase;
use crate::request::read_state;
use crate::{report, version};

/// One flag of a hook: Go-style, `-name`/`--name`, `=value` or a separate word.
struct Flag {
    name: &'static str,
    value: bool,
    help: &'static str,
}

const fn flag(name: &'static str, value: bool, help: &'static str) -> Flag {
    Flag { name, value, help }
}

type HookFn = fn(&Args) -> Result<()>;

struct Hook {
    name: &'static str,
    usage: &'static str,
    flags: &'static [Flag],
    run: HookFn,
    hidden: bool,
}

/// Every hook also takes the hidden `--container-spec` (the state from a file, for tests).
const HOOKS: &[Hook] = &[
    Hook {
        name: "create-symlinks",
        usage: "A hook to create symlinks in the container.",
        flags: &[flag(
            "link",
            true,
            "Specify a link to create as TARGET::LINK (repeatable)",
        )],
        run: links::run_create_symlinks,
        hidden: false,
    },
    Hook {
        name: "update-ldcache",
        usage: "Update ldcache for a container",
        flags: &[
            flag(
                "folder",
                true,
                "Specify a folder to add to /etc/ld.so.conf before updating the ld cache (repeatable)",
            ),
            flag(
                "ldconfig-path",
                true,
                "Run this host ldconfig instead of writing the cache directly",
            ),
        ],
        run: ldconf::run_update_ldcache,
        hidden: false,
    },
    Hook {
        name: "enable-cuda-compat",
        usage: "This hook ensures that the folder containing the CUDA compat libraries is added to the ldconfig search path if required.",
        flags: &[
            flag(
                "host-driver-version",
                true,
                "Specify the host driver version",
            ),
            flag(
                "host-cuda-version",
                true,
                "Specify the CUDA version supported by the host driver",
            ),
            flag(
                "cuda-compat-container-root",
                true,
                "The compat folder in the container (default: /usr/local/cuda/compat)",
            ),
        ],
        run: compat::run_enable_cuda_compat,
        hidden: false,
    },
    Hook {
        name: "disable-device-node-modification",
        usage: "Ensure that the /proc/driver/nvidia/params file present in the container does not allow device node modifications.",
        flags: &[],
        run: devices::run_disable_device_node_modification,
        hidden: false,
    },
    Hook {
        name: "chmod",
        usage: "Set the permissions of folders in the container by running chmod.",
        flags: &[
            flag("mode", true, "Specify the file mode (octal)"),
            flag(
                "path",
                true,
                "Specify a path to apply the mode to (repeatable)",
            ),
        ],
        run: links::run_chmod,
        hidden: false,
    },
    Hook {
        name: "update-application-profile",
        usage: "Restrict EGL/Vulkan GPU visibility to the container's devices through an application profile.",
        flags: &[],
        run: devices::run_update_application_profile,
        hidden: false,
    },
    Hook {
        name: JIT_HOOK,
        usage: "nvbox's runtime shim (jit-cdi): create-symlinks, enable-cuda-compat, disable-device-node-modification, update-ldcache and update-application-profile in one process.",
        flags: &[
            flag("link", true, ""),
            flag("host-driver-version", true, ""),
            flag("host-cuda-version", true, ""),
            flag("cuda-compat-container-root", true, ""),
            flag("disable-device-node-modification", false, ""),
            flag("folder", true, ""),
            flag("update-application-profile", false, ""),
        ],
        run: run_jit,
        hidden: true,
    },
    Hook {
        name: "noop",
        usage: "A no-op hook.",
        flags: &[],
        run: |_| Ok(()),
        hidden: true,
    },
];

const HIDDEN_SPEC: Flag = flag("container-spec", true, "");

/// The hook the runtime shim's jit-cdi specs use: one process instead of five per container.
pub const JIT_HOOK: &str = "nvbox-jit";

/// The jit-cdi steps, in the order upstream's separate hooks run.
fn run_jit(a: &Args) -> Result<()> {
    links::run_create_symlinks(a).context("create-symlinks")?;
    compat::run_enable_cuda_compat(a).context("enable-cuda-compat")?;
    if a.last("disable-device-node-modification").is_some() {
        devices::run_disable_device_node_modification(a)
            .context("disable-device-node-modification")?;
    }
    if !a.all("folder").is_empty() {
        ldconf::run_update_ldcache(a).context("update-ldcache")?;
    }
    if a.last("update-application-profile").is_some() {
        devices::run_update_application_profile(a).context("update-application-profile")?;
    }
    Ok(())
}

pub fn main(name: &str, args: Vec<OsString>) -> ExitCode {
    report::finish(name, run(name, args))
}

/// Shared with `nvidia-ctk hook …`: `args` are the words after the program (or `hook`).
pub fn run(name: &str, args: Vec<OsString>) -> Result<ExitCode> {
    let args: Vec<String> = args
        .into_iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let mut rest = args.as_slice();
    while let Some(word) = rest.first() {
        let Some(flag) = strip_dashes(word) else {
            break;
        };
        let (flag, value) = split_value(flag);
        match flag {
            "h" | "help" => {
                print!("{}", usage(name));
                return Ok(ExitCode::SUCCESS);
            }
            "v" | "version" => {
                println!("NVIDIA CDI Hook version {}", version::VERSION);
                println!("commit: {}", version::COMMIT);
                return Ok(ExitCode::SUCCESS);
            }
            "d" | "debug" => set_debug(value.is_none_or(parse_bool)),
            "quiet" => {}
            _ => {
                // A flag newer generators pass must not break the container.
                eprintln!("{name}: warning: Unsupported CDI hook flag: {word}");
                return Ok(ExitCode::SUCCESS);
            }
        }
        rest = &rest[1..];
    }
    if std::env::var("NVIDIA_CTK_DEBUG")
        .or_else(|_| std::env::var("NVIDIA_CDI_DEBUG"))
        .is_ok_and(|v| parse_bool(&v))
    {
        set_debug(true);
    }
    let Some((hook_name, hook_args)) = rest.split_first() else {
        eprintln!("{name}: warning: No CDI hook specified");
        return Ok(ExitCode::SUCCESS);
    };
    let Some(hook) = HOOKS.iter().find(|h| h.name == hook_name) else {
        eprintln!("{name}: warning: Unsupported CDI hook: {hook_name}");
        return Ok(ExitCode::SUCCESS);
    };
    let Some(parsed) = parse_hook_args(name, hook, hook_args)? else {
        return Ok(ExitCode::SUCCESS);
    };
    crate::info!("running hook {}", hook.name);
    // Before the state, config.json or the rootfs is read.
    crate::privilege::restrict(crate::privilege::Role::Hook)?;
    (hook.run)(&parsed).with_context(|| hook.name.to_owned())?;
    Ok(ExitCode::SUCCESS)
}

fn set_debug(on: bool) {
    if on && !crate::log::enabled() {
        let _ = crate::log::open("/dev/stderr");
    }
}

fn parse_bool(v: &str) -> bool {
    matches!(v, "1" | "t" | "T" | "TRUE" | "true" | "True")
}

fn strip_dashes(word: &str) -> Option<&str> {
    if word == "-" || word == "--" || !word.starts_with('-') {
        return None;
    }
    Some(word.strip_prefix("--").unwrap_or(&word[1..]))
}

fn split_value(flag: &str) -> (&str, Option<&str>) {
    match flag.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (flag, None),
    }
}

/// The flags a hook was given, in order.
pub struct Args {
    values: Vec<(&'static str, String)>,
}

impl Args {
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.values
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The last value given, as urfave/cli keeps for a single-valued flag.
    pub fn last(&self, name: &str) -> Option<&str> {
        self.values
            .iter()
            .rev()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The container's rootfs, opened: from the state on stdin (or `--container-spec`).
    /// From here on files are created as the container's root (see `live::owner`).
    pub fn open_root(&self) -> Result<(PathBuf, Rootfs)> {
        let (path, _) = container_root(self.last("container-spec"))?;
        crate::privilege::enter(Phase::Hook);
        let root = Rootfs::open(&path).map_err(|e| {
            anyhow!(
                "failed to open container root {}: {}",
                path.display(),
                crate::discover::files::lower_io(&e)
            )
        })?;
        if let Some(o) = self.owner()? {
            owner::become_owner(o)?;
            crate::privilege::enter(Phase::Hook);
        }
        Ok((path, root))
    }

    /// The container's root as a host user, when its init is in another user namespace.
    pub fn owner(&self) -> Result<Option<Owner>> {
        let (_, pid) = container_root(self.last("container-spec"))?;
        owner::container_owner(pid)
    }
}

/// `None` when help was printed.
fn parse_hook_args(name: &str, hook: &Hook, words: &[String]) -> Result<Option<Args>> {
    let mut values = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let word = &words[i];
        i += 1;
        let Some(flag) = strip_dashes(word) else {
            if word == "--" {
                break;
            }
            bail!("unexpected argument: {word}");
        };
        let (flag, value) = split_value(flag);
        if matches!(flag, "h" | "help") {
            print!("{}", hook_usage(name, hook));
            return Ok(None);
        }
        let Some(spec) = hook
            .flags
            .iter()
            .chain(std::iter::once(&HIDDEN_SPEC))
            .find(|f| f.name == flag)
        else {
            bail!("flag provided but not defined: -{flag}");
        };
        let value = match (spec.value, value) {
            (true, Some(v)) => v.to_owned(),
            (true, None) => {
                let v = words
                    .get(i)
                    .ok_or_else(|| anyhow!("flag needs an argument: -{flag}"))?;
                i += 1;
                v.clone()
            }
            (false, v) => v.unwrap_or("true").to_owned(),
        };
        values.push((spec.name, value));
    }
    Ok(Some(Args { values }))
}

/// The container root: the state's `root` (a crun extension) if present, else `root.path` of the
/// bundle's config.json, relative paths joined with the bundle. Never relative to the cwd,
/// which is the (hostile) rootfs itself.
fn container_root(spec_file: Option<&str>) -> Result<(PathBuf, i32)> {
    // The state on stdin can be read once; a combined hook asks for the root several times.
    static ROOT: std::sync::OnceLock<(PathBuf, i32)> = std::sync::OnceLock::new();
    if let Some(root) = ROOT.get() {
        return Ok(root.clone());
    }
    let root = read_container_root(spec_file)?;
    Ok(ROOT.get_or_init(|| root).clone())
}

/// The root and the pid of the container's init (0 when the state has none).
fn read_container_root(spec_file: Option<&str>) -> Result<(PathBuf, i32)> {
    let mut bytes = Vec::new();
    match spec_file {
        None | Some("" | "-") => std::io::stdin().lock().read_to_end(&mut bytes).map(|_| ()),
        Some(path) => std::fs::read(path).map(|b| bytes = b),
    }
    .map_err(|e| anyhow!("failed to load container state: {}", e.kind()))?;
    let state: Value = serde_json::Deserializer::from_slice(&bytes)
        .into_iter::<Value>()
        .next()
        .and_then(|v| v.ok())
        .unwrap_or(Value::Null);
    let from_state = state
        .get("root")
        .and_then(Value::as_str)
        .filter(|r| !r.is_empty());
    let pid = state
        .get("pid")
        .and_then(Value::as_i64)
        .and_then(|p| i32::try_from(p).ok())
        .unwrap_or(0);
    if let Some(root) = from_state
        && Path::new(root).is_absolute()
    {
        return Ok((PathBuf::from(root), pid));
    }
    let st = read_state(&bytes).context("failed to load container state")?;
    let bundle = PathBuf::from(&st.bundle);
    let root = match from_state {
        Some(r) => r.to_owned(),
        None => {
            let config = bundle.join("config.json");
            let spec = std::fs::read(&config)
                .map_err(|e| anyhow!("failed to read {}: {}", config.display(), e.kind()))?;
            let spec: Value = serde_json::from_slice(&spec)
                .map_err(|e| anyhow!("failed to decode {}: {e}", config.display()))?;
            spec.pointer("/root/path")
                .and_then(Value::as_str)
                .filter(|p| !p.is_empty())
                .ok_or_else(|| {
                    anyhow!("failed to determine container root: no root.path in the OCI spec")
                })?
                .to_owned()
        }
    };
    let root = PathBuf::from(root);
    if root.is_absolute() {
        return Ok((root, pid));
    }
    if !bundle.is_absolute() {
        bail!(
            "failed to determine container root: relative bundle path {}",
            bundle.display()
        );
    }
    Ok((bundle.join(root), pid))
}

/// A random hex suffix for file names (upstream uses a UUID).
pub fn random_suffix() -> String {
    let mut buf = [0u8; 8];
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .is_ok();
    if !ok {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let mix = t.as_nanos() as u64 ^ (u64::from(std::process::id()) << 32);
        buf = mix.to_le_bytes();
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

fn usage(name: &str) -> String {
    let mut s = format!(
        "NAME:\n   {name} - a collection of OCI createContainer hooks for CDI specs\n\nUSAGE:\n   {name} [global options] HOOK [hook options]\n\nHOOKS:\n"
    );
    for h in HOOKS.iter().filter(|h| !h.hidden) {
        s.push_str(&format!("   {:<34} {}\n", h.name, h.usage));
    }
    s.push_str(
        "\nGLOBAL OPTIONS:\n   --debug, -d    enable debug-level logging (env: NVIDIA_CTK_DEBUG)\n   --quiet        disable all logging\n   --help, -h     show help\n   --version, -v  print the version\n\nThe OCI container state is read from stdin. Unknown hooks are ignored (exit 0).\n",
    );
    s
}

fn hook_usage(name: &str, hook: &Hook) -> String {
    let mut s = format!(
        "NAME:\n   {name} {} - {}\n\nUSAGE:\n   {name} {} [options]\n\nOPTIONS:\n",
        hook.name, hook.usage, hook.name
    );
    for f in hook.flags {
        let arg = if f.value {
            format!("--{} value", f.name)
        } else {
            format!("--{}", f.name)
        };
        s.push_str(&format!("   {arg:<36} {}\n", f.help));
    }
    s.push_str(&format!("   {:<36} show help\n", "--help, -h"));
    s
}
