//! The Kubernetes node path: containerd's CRI plugin, configured only by our `nvidia-ctk runtime
//! configure` (top-level file + drop-in), driven over its socket by a CRI client the way the
//! kubelet drives it. Pods run on the `nvidia` runtime handler, so every container, the sandbox
//! included, goes through our `nvidia-container-runtime` shim, which reads a simulated 8-GPU
//! host from the config.toml containerd passes down in its environment.
//!
//! containerd 1.6 (Debian 12) has no CDI support of its own (`enable_cdi`, the CRI `CDIDevices`
//! field and `cdi.k8s.io/` annotations arrive in 1.7), so CDI names reach the shim the way a
//! device plugin hands them over: in NVIDIA_VISIBLE_DEVICES.

#[path = "cri/api.rs"]
mod api;
mod common;
#[path = "cri/node.rs"]
mod node;

use api::*;
use common::container::*;
use common::*;
use node::*;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// jit-cdi offers every driver library but the 32-bit ones, whatever the capabilities say.
const JIT_CAPS: &[&str] = &["compute", "display", "graphics", "ngx", "utility", "video"];
const DONE: &str = "@@done";

fn ready() -> bool {
    have_prerequisites(&[CONTAINERD, CTR, RUNC, BUSYBOX])
}

fn eight_gpus() -> &'static Host {
    shared_host(&[])
}

/// The container's script: the probe, the variables the shim may set, then sleep so that the
/// rootfs stays mounted for ExecSync.
fn script() -> String {
    format!(
        "{PROBE}\necho NVENV=$NVIDIA_VISIBLE_DEVICES; echo CDIENV=$NVBOX_CDI_TEST\n\
         echo {DONE}; exec sleep 1000000"
    )
}

fn printed(out: &str, key: &str) -> String {
    let prefix = format!("{key}=");
    out.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("{key} not printed:\n{out}"))
        .to_string()
}

/// The shim's config: the mock host's lines, and a CDI spec directory for the cdi mode.
fn shim_config(dir: &Path, host: &Host, spec_dir: &Path) -> PathBuf {
    let path = dir.join("nvbox-config.toml");
    let base = std::fs::read_to_string(&host.config).unwrap();
    std::fs::write(
        &path,
        format!(
            "{base}\n[nvidia-container-runtime.modes.cdi]\nspec-dirs = [\"{}\"]\n",
            spec_dir.display()
        ),
    )
    .unwrap();
    path
}

/// This machine's /proc/driver/nvidia/gpus entries: all a container may see there, since runc
/// mounts nothing of the mock's procfs.
fn own_gpu_dirs() -> BTreeMap<String, String> {
    std::fs::read_dir("/proc/driver/nvidia/gpus")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| (e.path().display().to_string(), "directory".to_string()))
        .collect()
}

fn assert_entries(got: &BTreeMap<String, String>, want: &BTreeMap<String, String>) {
    let missing: Vec<_> = want.iter().filter(|(k, _)| !got.contains_key(*k)).collect();
    let extra: Vec<_> = got.iter().filter(|(k, _)| !want.contains_key(*k)).collect();
    let wrong: Vec<_> = want
        .iter()
        .filter_map(|(k, v)| {
            got.get(k)
                .filter(|g| *g != v)
                .map(|g| format!("{k}: want {v}, got {g}"))
        })
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty() && wrong.is_empty(),
        "container contents differ\nmissing: {missing:#?}\nunexpected: {extra:#?}\nwrong: {wrong:#?}"
    );
}

/// The container's own devices.list rules on the driver's majors are exactly `want`, `rwm`
/// (runc writes the spec's rules).
fn assert_cgroup_rules(devices_list: &str, want: &BTreeSet<String>, host: &Host) {
    let majors: BTreeSet<String> = host
        .read("/proc/devices")
        .lines()
        .take_while(|l| !l.starts_with("Block"))
        .filter_map(|l| l.trim().split_once(' '))
        .filter(|(_, name)| name.starts_with("nvidia"))
        .map(|(m, _)| m.to_string())
        .collect();
    assert!(
        devices_list.lines().any(|l| l.starts_with("c ")),
        "no device cgroup rules read in the container:\n{devices_list}"
    );
    let ours: BTreeSet<String> = devices_list
        .lines()
        .filter(|l| {
            let node = l.split(' ').nth(1).unwrap_or("");
            majors.contains(node.split(':').next().unwrap_or(""))
        })
        .map(str::to_string)
        .collect();
    let want: BTreeSet<String> = want.iter().map(|c| format!("{c} rwm")).collect();
    assert_eq!(ours, want, "device cgroup rules:\n{devices_list}");
}

/// The container's /etc/ld.so.cache, read through ExecSync into a scratch root for ldconfig.
fn assert_container_ldcache(node: &mut Node, id: &str, want: &Expected) {
    let cache = node.exec(id, &["cat", "/etc/ld.so.cache"]).stdout;
    let root = TempDir::new("cri-ldcache");
    std::fs::create_dir_all(root.path().join("etc")).unwrap();
    std::fs::write(root.path().join("etc/ld.so.cache"), cache).unwrap();
    assert_ldcache(root.path(), want);
}

/// One GPU container through the `nvidia` handler in jit-cdi mode (the default `auto` for a
/// plain request): nodes with the host's numbers, libraries with soname links, the ld.so.cache,
/// the spec's cgroup rules, NVIDIA_VISIBLE_DEVICES=void for later hooks, none of the mock's
/// /proc/driver/nvidia.
fn assert_jit_container(node: &mut Node, c: &Started, devices: &str) {
    let host = eight_gpus();
    let mut want = expected(host, devices, JIT_CAPS, &node.rootfs);
    want.entries.retain(|path, _| !path.starts_with("/proc/"));
    want.entries.extend(own_gpu_dirs());
    let out = node.wait_output(c, DONE);
    let probe = parse_probe(&out);
    assert_entries(&probe.entries, &want.entries);
    let own = |f: &str| std::fs::read_to_string(f).unwrap_or_default();
    assert_eq!(probe.version, own("/proc/driver/nvidia/version"));
    assert_eq!(probe.params, own("/proc/driver/nvidia/params"));
    assert_eq!(printed(&out, "NVENV"), "void");
    assert_cgroup_rules(&probe.cgroup, &want.cgroup, host);
    assert_container_ldcache(node, &c.id, &want);
}

/// Version, then one pod on the `nvidia` handler with three containers: all GPUs, GPUs 1 and 3,
/// and a CPU container the shim must leave alone. Then the pod is stopped and removed.
#[test]
fn nvidia_handler_pod_jit_cdi() {
    if !ready() {
        return;
    }
    let host = eight_gpus();
    let dir = TempDir::new("cri-jit");
    let config = shim_config(dir.path(), host, &dir.path().join("cdi"));
    let mut node = Node::start(&config, Source::Command);
    let version: VersionResponse = node
        .cri
        .runtime("Version", VersionRequest::default())
        .unwrap();
    assert_eq!(version.runtime_name, "containerd");
    assert_eq!(version.runtime_api_version, "v1");

    let pod = node.run_pod("gpu-pod");
    let all = node.start_container(&pod, "all", &[("NVIDIA_VISIBLE_DEVICES", "all")], &script());
    let two = node.start_container(&pod, "two", &[("NVIDIA_VISIBLE_DEVICES", "1,3")], &script());
    let cpu = node.start_container(&pod, "cpu", &[], &script());
    assert_jit_container(&mut node, &all, "all");
    assert_jit_container(&mut node, &two, "1,3");

    let out = node.wait_output(&cpu, DONE);
    let probe = parse_probe(&out);
    assert_entries(&probe.entries, &own_gpu_dirs());
    assert_cgroup_rules(&probe.cgroup, &BTreeSet::new(), host);
    assert_eq!(printed(&out, "NVENV"), "");

    node.remove_pod(&pod.0)
        .unwrap_or_else(|e| panic!("stop/remove pod: {e}\n{}", node.log()));
}

/// A CDI spec for the mock: one device per GPU index, the control node, a library and a
/// variable in the common edits.
fn write_cdi_spec(dir: &Path, host: &Host) -> String {
    let node = |p: &str| json!({"path": p, "hostPath": host.file(p)});
    let devices: Vec<_> = host
        .gpus()
        .iter()
        .enumerate()
        .map(|(i, g)| {
            json!({"name": i.to_string(),
                   "containerEdits": {"deviceNodes": [node(&format!("/dev/nvidia{}", g.minor))]}})
        })
        .collect();
    let libcuda = host
        .list(&["--libraries"])
        .into_iter()
        .find(|l| l.rsplit('/').next().unwrap().starts_with("libcuda.so."))
        .expect("the mock has a libcuda");
    let name = libcuda.rsplit('/').next().unwrap().to_string();
    let spec = json!({
        "cdiVersion": "0.6.0",
        "kind": "nvidia.com/gpu",
        "devices": devices,
        "containerEdits": {
            "env": ["NVBOX_CDI_TEST=from-spec"],
            "deviceNodes": [node("/dev/nvidiactl")],
            "mounts": [{
                "hostPath": host.file(&libcuda),
                "containerPath": format!("/usr/lib/x86_64-linux-gnu/{name}"),
                "options": ["ro", "nosuid", "nodev", "bind"],
            }],
        },
    });
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("nvbox-test.json"), spec.to_string()).unwrap();
    name
}

/// CDI names from a device plugin reach the shim in NVIDIA_VISIBLE_DEVICES: `auto` resolves
/// them from the spec directory, and the container holds exactly those devices and edits.
#[test]
fn nvidia_handler_pod_cdi_names() {
    if !ready() {
        return;
    }
    let host = eight_gpus();
    let dir = TempDir::new("cri-cdi");
    let specs = dir.path().join("cdi");
    let lib = write_cdi_spec(&specs, host);
    let config = shim_config(dir.path(), host, &specs);
    let mut node = Node::start(&config, Source::File);
    let pod = node.run_pod("cdi-pod");
    let env = [(
        "NVIDIA_VISIBLE_DEVICES",
        "nvidia.com/gpu=1,nvidia.com/gpu=3",
    )];
    let c = node.start_container(&pod, "cdi", &env, &script());
    let out = node.wait_output(&c, DONE);

    let gpus = host.gpus();
    let mut want = own_gpu_dirs();
    let mut rules = BTreeSet::new();
    for path in [
        "/dev/nvidiactl".to_string(),
        format!("/dev/nvidia{}", gpus[1].minor),
        format!("/dev/nvidia{}", gpus[3].minor),
    ] {
        let (ma, mi) = host.rdev(&path);
        want.insert(path, format!("character special file {ma}:{mi}"));
        rules.insert(format!("c {ma}:{mi}"));
    }
    want.insert(
        format!("/usr/lib/x86_64-linux-gnu/{lib}"),
        "regular file".into(),
    );
    let probe = parse_probe(&out);
    assert_entries(&probe.entries, &want);
    assert_cgroup_rules(&probe.cgroup, &rules, host);
    assert_eq!(printed(&out, "CDIENV"), "from-spec");
    node.remove_pod(&pod.0)
        .unwrap_or_else(|e| panic!("stop/remove pod: {e}\n{}", node.log()));
}
