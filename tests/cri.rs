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
use common::engines::*;
use common::*;
use node::*;
use std::collections::BTreeSet;
use std::path::Path;

const DONE: &str = "@@done";

fn ready() -> bool {
    have_prerequisites(&[CONTAINERD, CTR, RUNC, BUSYBOX])
}

fn eight_gpus() -> &'static Host {
    shared_host(&[])
}

/// The probe and the variables the shim may set, then sleep: the rootfs stays mounted for
/// ExecSync.
fn script() -> String {
    format!("{}\necho {DONE}; exec sleep 1000000", probe_with_env())
}

/// The shim's config: the mock host's lines, and the CDI spec directory of the cdi mode.
fn shim_config(host: &Host, spec_dir: &Path) -> ShimConfig {
    ShimConfig::new(
        host,
        &format!(
            "[nvidia-container-runtime.modes.cdi]\nspec-dirs = [\"{}\"]\n",
            spec_dir.display()
        ),
    )
}

/// The container's own device cgroup, read from inside: the driver's majors get exactly
/// `want`, `rwm` (runc writes the spec's rules). A list without rules would prove nothing.
fn assert_container_cgroup(probe: &Probe, want: &BTreeSet<String>, host: &Host) {
    assert!(
        probe.cgroup.lines().any(|l| l.starts_with("c ")),
        "no device cgroup rules read in the container:\n{}",
        probe.cgroup
    );
    assert_cgroup_rules(&probe.cgroup, want, host, "rwm");
}

/// The container's /etc/ld.so.cache, read through ExecSync into a scratch root for ldconfig.
fn assert_container_ldcache(node: &mut Node, id: &str, want: &Expected) {
    let cache = node.exec(id, &["cat", "/etc/ld.so.cache"]).stdout;
    let root = TempDir::new("cri-ldcache");
    std::fs::create_dir_all(root.path().join("etc")).unwrap();
    std::fs::write(root.path().join("etc/ld.so.cache"), cache).unwrap();
    assert_ldcache(root.path(), want);
}

/// One GPU container through the `nvidia` handler in jit-cdi mode (what `auto` picks for a
/// plain request): nodes with the host's numbers, libraries with soname links, the ld.so.cache,
/// the spec's cgroup rules, NVIDIA_VISIBLE_DEVICES=void for later hooks, none of the mock's
/// /proc/driver/nvidia.
fn assert_jit_container(node: &mut Node, c: &Started, devices: &str) {
    let host = eight_gpus();
    let want = expected_jit(host, devices, &node.rootfs);
    let out = node.wait_output(c, DONE);
    let probe = parse_probe(&out);
    assert_jit_injected(&probe, &want);
    assert_eq!(probed_env(&out, "NVENV"), "void");
    assert_container_cgroup(&probe, &want.cgroup, host);
    assert_container_ldcache(node, &c.id, &want);
}

/// Version, then one pod on the `nvidia` handler with three containers: all GPUs, GPUs 1 and 3,
/// and a CPU container the shim must leave alone. Then the pod is stopped and removed.
/// `runtime configure` reads `containerd config dump` here.
#[test]
fn nvidia_handler_pod_jit_cdi() {
    if !ready() {
        return;
    }
    let host = eight_gpus();
    let specs = TempDir::new("cri-no-cdi");
    let config = shim_config(host, specs.path());
    let mut node = Node::start(&config.path, Source::Command);
    let version: VersionResponse = node
        .cri
        .runtime("Version", VersionRequest::default())
        .unwrap();
    assert_eq!(version.runtime_name, "containerd");
    assert_eq!(version.runtime_api_version, "v1");

    let pod = node.run_pod("gpu-pod");
    let all = [("NVIDIA_VISIBLE_DEVICES", "all")];
    let all = node.start_container(&pod, "all", &all, &script());
    let two = [("NVIDIA_VISIBLE_DEVICES", "1,3")];
    let two = node.start_container(&pod, "two", &two, &script());
    let cpu = node.start_container(&pod, "cpu", &[], &script());
    assert_jit_container(&mut node, &all, "all");
    assert_jit_container(&mut node, &two, "1,3");

    let out = node.wait_output(&cpu, DONE);
    let probe = parse_probe(&out);
    assert_entries(&probe.entries, &own_gpu_dirs());
    assert_container_cgroup(&probe, &BTreeSet::new(), host);
    assert_eq!(probed_env(&out, "NVENV"), "");

    node.remove_pod(&pod.0)
        .unwrap_or_else(|e| panic!("stop/remove pod: {e}\n{}", node.log()));
}

/// CDI names from a device plugin reach the shim in NVIDIA_VISIBLE_DEVICES; `auto` resolves
/// them from a spec `nvidia-ctk cdi generate` wrote for the mock, whose hooks (symlinks,
/// ld.so.cache) run inside the pod's container. `runtime configure` reads the file itself here.
#[test]
fn nvidia_handler_pod_cdi_names() {
    if !ready() {
        return;
    }
    let host = eight_gpus();
    let specs = TempDir::new("cri-cdi");
    let out = command(nvbox())
        .env("NVIDIA_CTK_CONFIG_FILE_PATH", &host.config)
        .args(["nvidia-ctk", "cdi", "generate", "--nvidia-cdi-hook-path"])
        .arg(applet_dir().join("nvidia-cdi-hook"))
        .arg("--output")
        .arg(specs.path().join("nvidia.yaml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "cdi generate: {}", stderr(&out));
    let config = shim_config(host, specs.path());
    let mut node = Node::start(&config.path, Source::File);
    let pod = node.run_pod("cdi-pod");
    let env = [(
        "NVIDIA_VISIBLE_DEVICES",
        "nvidia.com/gpu=1,nvidia.com/gpu=3",
    )];
    let c = node.start_container(&pod, "cdi", &env, &script());

    let want = expected_jit(host, "1,3", &node.rootfs);
    let out = node.wait_output(&c, DONE);
    let probe = parse_probe(&out);
    assert_jit_injected(&probe, &want);
    assert_container_cgroup(&probe, &want.cgroup, host);
    assert_container_ldcache(&mut node, &c.id, &want);
    node.remove_pod(&pod.0)
        .unwrap_or_else(|e| panic!("stop/remove pod: {e}\n{}", node.log()));
}
