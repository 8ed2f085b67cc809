//! CDI edits from what discovery found: the conversion of a [`Plan`] into container edits that
//! the runtime shim's jit-cdi mode applies, and whole CDI specs for `nvidia-ctk cdi generate`
//! (reference nvidia-container-toolkit.md §7.3). A generated spec is image-independent, so
//! driver files keep their host paths (minus the driver root) and the loader cache is rebuilt
//! by an `update-ldcache` hook for their directories.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::Result;

use crate::discover::host::Host;
use crate::discover::{Roots, under};
use crate::plan::{self, Bind, CompatMode, Kind, Layout, Options, Plan, Root};
use crate::request::Caps;
use crate::select::Selection;
use crate::spec::cdi::{ContainerEdits, Device, DeviceNode, Hook, Mount, Spec, minimum_version};
use crate::spec::features::Features;

pub mod csv;
mod devices;
mod gated;
mod hooks;
pub mod wsl;

use devices::{gpu_devices, management_nodes};
pub use gated::{generate_gated_spec, generate_imex_spec};
pub use hooks::driver_links;
use hooks::{add_driver_hooks, chmod_args};

const FILE_OPTS: &[&str] = &["ro", "nosuid", "nodev", "rbind", "rprivate"];
const IPC_OPTS: &[&str] = &["nosuid", "nodev", "noexec", "rbind", "rprivate"];
const DIR_OPTS: &[&str] = &["nosuid", "noexec", "rbind", "rprivate"];

/// How injected hooks call the hook binary: `nvidia-cdi-hook NAME …`, or `nvidia-ctk hook NAME …`
/// when the binary is `nvidia-ctk`, with an explicit environment (hooks get exactly this one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookCommand {
    pub path: String,
    pub env: Vec<String>,
}

impl HookCommand {
    pub fn new(path: String, env: Vec<String>) -> HookCommand {
        HookCommand { path, env }
    }

    pub fn make(&self, name: &str, args: &[String]) -> Hook {
        let ctk = Path::new(&self.path)
            .file_name()
            .is_some_and(|n| n == "nvidia-ctk");
        let mut all: Vec<String> = if ctk {
            vec!["nvidia-ctk".to_owned(), "hook".to_owned()]
        } else {
            vec!["nvidia-cdi-hook".to_owned()]
        };
        all.push(name.to_owned());
        all.extend_from_slice(args);
        Hook {
            hook_name: "createContainer".to_owned(),
            path: self.path.clone(),
            args: all,
            env: self.env.clone(),
            timeout: None,
        }
    }
}

/// The plan as CDI edits (jit-cdi). procfs entries cannot be mounted into `/proc` by runc, so
/// they are left to the `disable-device-node-modification` hook, as upstream's CDI specs do;
/// symlinks and the loader cache become hooks; with `compat` (the driver version) the image's
/// CUDA compat libraries are enabled before the cache is built.
pub fn edits_from_plan(
    plan: &Plan,
    roots: &Roots,
    hook: &HookCommand,
    compat: Option<&str>,
) -> ContainerEdits {
    let mut e = edits_from_binds(&plan.binds, roots);
    push_link_hook(&mut e, plan, hook);
    e.hooks
        .push(hook.make("disable-device-node-modification", &[]));
    if let Some(version) = compat {
        e.hooks.push(hook.make(
            "enable-cuda-compat",
            &[format!("--host-driver-version={version}")],
        ));
    }
    push_ldcache_hook(&mut e, plan, hook);
    e
}

/// A graphics-only plan as edits (legacy mode, beside the prestart hook that owns the rest):
/// mounts, nodes, links, and the loader cache over the directory its libraries went to.
pub fn graphics_edits_from_plan(plan: &Plan, roots: &Roots, hook: &HookCommand) -> ContainerEdits {
    let mut e = edits_from_binds(&plan.binds, roots);
    push_link_hook(&mut e, plan, hook);
    push_ldcache_hook(&mut e, plan, hook);
    e
}

fn push_link_hook(e: &mut ContainerEdits, plan: &Plan, hook: &HookCommand) {
    if !plan.symlinks.is_empty() {
        let links: Vec<String> = plan
            .symlinks
            .iter()
            .map(|(link, target)| format!("--link={target}::{link}"))
            .collect();
        e.hooks.push(hook.make("create-symlinks", &links));
    }
}

fn push_ldcache_hook(e: &mut ContainerEdits, plan: &Plan, hook: &HookCommand) {
    let mut folders: Vec<String> = Vec::new();
    for c in &plan.cache {
        if !folders.contains(&c.dir) {
            folders.push(c.dir.clone());
        }
    }
    if !folders.is_empty() {
        let args: Vec<String> = folders.iter().map(|f| format!("--folder={f}")).collect();
        e.hooks.push(hook.make("update-ldcache", &args));
    }
}

/// Device nodes and mounts of the binds; procfs and rootfs binds have no CDI form.
pub fn edits_from_binds(binds: &[Bind], roots: &Roots) -> ContainerEdits {
    let mut e = ContainerEdits::default();
    for b in binds {
        match (b.root, b.kind) {
            (Root::Dev, Kind::Device { major, minor }) => {
                e.device_nodes.push(device_node(b, roots, major, minor))
            }
            (Root::Driver, Kind::File) => e.mounts.push(mount(b, &roots.driver, FILE_OPTS)),
            (Root::Driver, Kind::Ipc) => e.mounts.push(mount(b, &roots.driver, IPC_OPTS)),
            (Root::Driver, Kind::Dir) => e.mounts.push(mount(b, &roots.driver, FILE_OPTS)),
            (Root::Dev, Kind::DeviceDir) => e.mounts.push(mount(b, &roots.dev, DIR_OPTS)),
            _ => {}
        }
    }
    e
}

fn device_node(b: &Bind, roots: &Roots, major: u32, minor: u32) -> DeviceNode {
    let host = under(&roots.dev, &b.source);
    DeviceNode {
        path: b.target.clone(),
        host_path: Some(host.display().to_string()).filter(|h| *h != b.target),
        r#type: Some("c".to_owned()),
        major: Some(i64::from(major)),
        minor: Some(i64::from(minor)),
        ..DeviceNode::default()
    }
}

fn mount(b: &Bind, root: &Path, opts: &[&str]) -> Mount {
    Mount {
        host_path: under(root, &b.source).display().to_string(),
        container_path: b.target.clone(),
        r#type: Some("bind".to_owned()),
        options: opts.iter().map(|o| (*o).to_owned()).collect(),
    }
}

/// How devices are named in a generated spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameStrategy {
    /// `0`, `1:0`
    Index,
    /// `GPU-<uuid>`; MIG UUIDs come only from NVML, so MIG devices get no uuid name.
    Uuid,
    /// `gpu0`, `mig1:0`
    TypeIndex,
}

impl NameStrategy {
    pub fn parse(s: &str) -> Option<NameStrategy> {
        match s {
            "index" => Some(NameStrategy::Index),
            "uuid" => Some(NameStrategy::Uuid),
            "type-index" => Some(NameStrategy::TypeIndex),
            _ => None,
        }
    }
}

/// What `cdi generate` was asked for.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub vendor: String,
    pub class: String,
    pub strategies: Vec<NameStrategy>,
    /// `all`, `none`, or device ids as `--device` takes them.
    pub device_ids: Vec<String>,
    pub no_all_device: bool,
    /// `--mode management`: one `all` device with every driver device node.
    pub management: bool,
    pub disabled_hooks: Vec<String>,
    pub enabled_hooks: Vec<String>,
    pub hook: HookCommand,
    pub ldconfig_path: Option<String>,
    pub features: Features,
}

impl GenerateOptions {
    /// Enabling beats disabling; `chmod` is off unless enabled.
    pub fn hook_enabled(&self, name: &str) -> bool {
        if self.enabled_hooks.iter().any(|h| h == name) {
            return true;
        }
        let disabled = self.disabled_hooks.iter().any(|h| h == "all" || h == name);
        !disabled && name != "chmod"
    }

    fn push_hook(&self, e: &mut ContainerEdits, name: &str, args: &[String]) {
        if self.hook_enabled(name) {
            e.hooks.push(self.hook.make(name, args));
        }
    }
}

/// A spec for this host. Device nodes are stat'ed under the dev root for their mode and group.
pub fn generate_spec(host: &Host, o: &GenerateOptions) -> Result<Spec> {
    let common_plan = build(host, &Selection::default(), all_driver_caps())?;
    let mut common = edits_from_binds(&common_plan.binds, &host.roots);
    let lib_dirs = library_dirs(host);
    add_driver_hooks(&mut common, host, o, &lib_dirs);
    common.env = vec![
        format!("NVIDIA_CTK_LIBCUDA_DIR={}", lib_dirs.join(":")),
        "NVIDIA_VISIBLE_DEVICES=void".to_owned(),
    ];
    let mut devices = Vec::new();
    if o.management {
        let mut e = ContainerEdits {
            device_nodes: management_nodes(&host.roots),
            ..ContainerEdits::default()
        };
        if e.device_nodes
            .iter()
            .any(|n| n.path.starts_with("/dev/nvidia-caps/"))
        {
            o.push_hook(&mut e, "chmod", &chmod_args("/dev/nvidia-caps"));
        }
        devices.push(Device {
            name: "all".to_owned(),
            container_edits: e,
            ..Device::default()
        });
        common.device_nodes.clear();
    } else if o.device_ids.iter().any(|d| d == "none") {
        // Upstream's driver-only device. A CDI device needs an edit, so it carries a marker.
        devices.push(Device {
            name: "none".to_owned(),
            container_edits: ContainerEdits {
                env: vec!["NVCT_EMPTY_DEVICE=".to_owned()],
                ..ContainerEdits::default()
            },
            ..Device::default()
        });
    } else {
        devices = gpu_devices(host, o)?;
        push_all_device(o, &mut devices);
    }
    for e in std::iter::once(&mut common).chain(devices.iter_mut().map(|d| &mut d.container_edits))
    {
        // Upstream leaves the mount type out: `rbind` makes it a bind mount.
        for m in &mut e.mounts {
            m.r#type = None;
        }
    }
    Ok(assemble_spec(o, common, devices))
}

/// Upstream's `all` device: every device's edits together, unless `--no-all-device`, there is
/// no device, or one is already called `all`.
fn push_all_device(o: &GenerateOptions, devices: &mut Vec<Device>) {
    if o.no_all_device || devices.is_empty() || devices.iter().any(|d| d.name == "all") {
        return;
    }
    let mut all = ContainerEdits::default();
    for d in devices.iter() {
        all.append(&d.container_edits);
    }
    devices.push(Device {
        name: "all".to_owned(),
        container_edits: all,
        ..Device::default()
    });
}

/// The spec around `common` and `devices`, the same for every mode: node modes and groups from
/// the host, duplicates dropped, upstream's order, and the lowest CDI version that holds it.
fn assemble_spec(
    o: &GenerateOptions,
    mut common: ContainerEdits,
    mut devices: Vec<Device>,
) -> Spec {
    for e in std::iter::once(&mut common).chain(devices.iter_mut().map(|d| &mut d.container_edits))
    {
        finish_nodes(e, o.features.no_additional_gids);
    }
    tidy(&mut common, &mut devices);
    let mut spec = Spec {
        kind: format!("{}/{}", o.vendor, o.class),
        devices,
        container_edits: common,
        ..Spec::default()
    };
    let (a, b, c) = minimum_version(&spec);
    spec.cdi_version = format!("{a}.{b}.{c}");
    spec
}

/// Every driver file: all library groups but 32-bit, binaries, firmware, IPC sockets.
fn all_driver_caps() -> Caps {
    Caps::COMPUTE
        .union(Caps::DISPLAY)
        .union(Caps::GRAPHICS)
        .union(Caps::NGX)
        .union(Caps::UTILITY)
        .union(Caps::VIDEO)
}

/// A plan whose driver files stay at their host paths: bins and libraries are placed by the
/// layout, so the placement is undone afterwards (the layout only names the directories).
fn build(host: &Host, sel: &Selection, caps: Caps) -> Result<Plan> {
    let layout = Layout {
        libs: "/".to_owned(),
        libs32: "/".to_owned(),
        bins: "/".to_owned(),
        compat_libs: Vec::new(),
    };
    let opts = Options {
        caps,
        compat_mode: CompatMode::Disabled,
        graphics: true,
        ..Options::default()
    };
    let mut p = plan::build_plan(host, sel, &opts, &layout)?;
    let placed = |path: &str| {
        let lib = |l: &crate::discover::files::Library| l.path == path;
        host.libs.iter().any(lib)
            || host.libs32.iter().any(lib)
            || host.graphics.libs.iter().any(lib)
            || host.bins.iter().any(|b| b.path == path)
    };
    for b in &mut p.binds {
        if b.root == Root::Driver && placed(&b.source) {
            b.target.clone_from(&b.source);
        }
    }
    Ok(p)
}

/// Directories of the native driver libraries, in discovery order.
fn library_dirs(host: &Host) -> Vec<String> {
    let mut dirs: Vec<String> = Vec::new();
    for lib in &host.libs {
        let dir = parent(&lib.path).to_owned();
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    dirs
}

fn parent(path: &str) -> &str {
    match path.rsplit_once('/') {
        Some(("", _)) => "/",
        Some((d, _)) => d,
        None => "/",
    }
}

/// Upstream's node fields: the type is left to the engine, mode and a non-root group come from
/// the host node, nodes that do not exist are dropped; a group that the node's mode does not
/// already open to everyone becomes an additional GID, unless `no_gids`
/// (`no-additional-gids-for-device-nodes`).
pub fn finish_nodes(e: &mut ContainerEdits, no_gids: bool) {
    let mut gids = Vec::new();
    e.device_nodes.retain_mut(|n| {
        let host = n.host_path.clone().unwrap_or_else(|| n.path.clone());
        let Ok(m) = std::fs::metadata(&host) else {
            return false;
        };
        n.r#type = None;
        n.file_mode = Some(m.mode() & 0o777);
        n.permissions = Some("rwm".to_owned());
        n.gid = (m.gid() != 0).then_some(m.gid());
        if !no_gids && m.gid() != 0 && m.mode() & 0o006 != 0o006 {
            gids.push(m.gid());
        }
        true
    });
    e.additional_gids.extend(gids);
}

/// Post-processing: duplicates dropped, anything a device repeats from the common edits removed
/// (unless that empties it), devices by name, nodes and mounts by (depth, path).
fn tidy(common: &mut ContainerEdits, devices: &mut [Device]) {
    dedup_edits(common);
    for d in devices.iter_mut() {
        dedup_edits(&mut d.container_edits);
        let mut left = d.container_edits.clone();
        left.env.retain(|x| !common.env.contains(x));
        left.device_nodes
            .retain(|x| !common.device_nodes.contains(x));
        left.hooks.retain(|x| !common.hooks.contains(x));
        left.mounts.retain(|x| !common.mounts.contains(x));
        left.additional_gids
            .retain(|x| !common.additional_gids.contains(x));
        if !left.is_empty() {
            d.container_edits = left;
        }
    }
    devices.sort_by(|a, b| a.name.cmp(&b.name));
    for e in std::iter::once(common).chain(devices.iter_mut().map(|d| &mut d.container_edits)) {
        e.device_nodes
            .sort_by(|a, b| depth_key(&a.path).cmp(&depth_key(&b.path)));
        e.mounts
            .sort_by(|a, b| depth_key(&a.container_path).cmp(&depth_key(&b.container_path)));
        e.additional_gids.sort_unstable();
    }
}

fn depth_key(path: &str) -> (usize, &str) {
    (path.matches('/').count(), path)
}

fn dedup_edits(e: &mut ContainerEdits) {
    fn dedup<T: PartialEq + Clone>(v: &mut Vec<T>) {
        let mut out: Vec<T> = Vec::with_capacity(v.len());
        for x in v.drain(..) {
            if !out.contains(&x) {
                out.push(x);
            }
        }
        *v = out;
    }
    dedup(&mut e.env);
    dedup(&mut e.device_nodes);
    dedup(&mut e.hooks);
    dedup(&mut e.mounts);
    dedup(&mut e.additional_gids);
}

#[cfg(test)]
#[path = "generate_tests.rs"]
mod generate_tests;
