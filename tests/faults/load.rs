//! 64 GPU containers created at once, each asking for its own subset of the mock's 8 GPUs:
//! through runc + the shim (jit-cdi, and legacy where the hook configures each one) and through
//! a private dockerd (`docker run --runtime=nvidia`). Every create must succeed and every
//! container must see exactly its GPUs' nodes (and, where the hook owns it, its procfs entries
//! and device cgroup rules): a mix-up between concurrent containers shows as a wrong set.

use crate::common::TempDir;
use crate::common::container::*;
use crate::common::engines::*;
use crate::{hold_host_mounts, hold_load};
use std::collections::BTreeSet;
use std::time::Instant;

const CONTAINERS: usize = 64;

const IMAGE: &str = "nvbox-load:latest";

/// The i-th distinct non-empty subset of 8 GPUs (97 is a unit mod 255: the masks differ).
fn subset(i: usize) -> Vec<usize> {
    let mask = (i * 97) % 255 + 1;
    (0..8).filter(|b| mask & (1 << b) != 0).collect()
}

fn visible(indices: &[usize]) -> String {
    let s: Vec<String> = indices.iter().map(usize::to_string).collect();
    s.join(",")
}

/// What a container asking for `indices` must show: its /dev/nvidiaN nodes (`path maj:min`)
/// and its /proc/driver/nvidia/gpus directories.
struct Want {
    nodes: BTreeSet<String>,
    procfs: BTreeSet<String>,
    rules: BTreeSet<String>,
}

fn want(host: &Host, gpus: &[Gpu], indices: &[usize]) -> Want {
    let mut w = Want {
        nodes: BTreeSet::new(),
        procfs: BTreeSet::new(),
        rules: BTreeSet::new(),
    };
    for &i in indices {
        let path = format!("/dev/nvidia{}", gpus[i].minor);
        let (ma, mi) = host.rdev(&path);
        w.nodes
            .insert(format!("{path} character special file {ma}:{mi}"));
        w.procfs
            .insert(format!("/proc/driver/nvidia/gpus/{}", gpus[i].bus));
        w.rules.insert(format!("c {ma}:{mi}"));
    }
    w
}

/// GPU nodes, GPU procfs directories and GPU-node cgroup rules found in one container.
fn seen(probe: &Probe, devices_list: &str, want: &Want) -> (Want, Vec<String>) {
    let is_gpu_node = |p: &str| {
        p.strip_prefix("/dev/nvidia")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    let mut s = Want {
        nodes: BTreeSet::new(),
        procfs: BTreeSet::new(),
        rules: BTreeSet::new(),
    };
    for (path, kind) in &probe.entries {
        if is_gpu_node(path) {
            s.nodes.insert(format!("{path} {kind}"));
        } else if path.starts_with("/proc/driver/nvidia/gpus/") {
            s.procfs.insert(path.clone());
        }
    }
    // Rules for the GPUs' major but the control node (255) and nvidia-modeset (254).
    let major = want
        .rules
        .iter()
        .next()
        .and_then(|r| r.split([' ', ':']).nth(1))
        .unwrap_or("195")
        .to_string();
    for l in devices_list.lines() {
        let rule: Vec<&str> = l.split(' ').collect();
        if let [ty, node, _] = rule[..]
            && let Some((ma, mi)) = node.split_once(':')
            && ma == major
            && mi.parse::<u32>().is_ok_and(|m| m < 254)
        {
            s.rules.insert(format!("{ty} {node}"));
        }
    }
    let mut diff = Vec::new();
    if s.nodes != want.nodes {
        diff.push(format!("nodes {:?} want {:?}", s.nodes, want.nodes));
    }
    (s, diff)
}

/// 64 threads, each running `one(i)`; the failures, with the wall time.
fn run_all(what: &str, one: impl Fn(usize) -> Result<(), String> + Sync) -> Vec<String> {
    let t0 = Instant::now();
    let failures: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..CONTAINERS)
            .map(|i| {
                let one = &one;
                s.spawn(move || one(i).map_err(|e| format!("#{i} {}: {e}", visible(&subset(i)))))
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|h| h.join().unwrap_or_else(|_| Err("panicked".into())).err())
            .collect()
    });
    eprintln!(
        "{what}: {CONTAINERS} concurrent creates in {:?}, {} failed",
        t0.elapsed(),
        failures.len()
    );
    failures
}

fn shim_load(mode: &str) {
    if !have_prerequisites(&[RUNC, BUSYBOX]) {
        return;
    }
    let _load = hold_load();
    let host = shared_host(&[]);
    let gpus = host.gpus();
    assert_eq!(gpus.len(), 8, "the default mock has 8 GPUs");
    let config = ShimConfig::mode(host, mode);
    let legacy = mode == "legacy";
    let failures = run_all(&format!("runc + shim ({mode})"), |i| {
        let indices = subset(i);
        let w = want(host, &gpus, &indices);
        let mut bundle = Bundle::new(true);
        bundle.script(PROBE);
        bundle.env(&[&format!("NVIDIA_VISIBLE_DEVICES={}", visible(&indices))]);
        let run = run_shim(&mut bundle, &config.path, &[]);
        if !run.created {
            return Err(format!("create failed: {}", run.create_stderr.trim()));
        }
        let probe = parse_probe(&run.stdout);
        let (s, mut diff) = seen(&probe, &run.devices_list, &w);
        // jit-cdi: runc's rules come from the spec (rwm); legacy: the hook's own (rw).
        let rules: BTreeSet<String> = s.rules.iter().map(|r| r.to_string()).collect();
        if rules != w.rules {
            diff.push(format!("cgroup {rules:?} want {:?}", w.rules));
        }
        // The legacy hook mounts the mock's procfs entries; jit-cdi leaves the machine's own.
        let procfs = if legacy {
            w.procfs.clone()
        } else {
            own_gpu_dirs().into_keys().collect()
        };
        if s.procfs != procfs {
            diff.push(format!("procfs {:?} want {procfs:?}", s.procfs));
        }
        if diff.is_empty() {
            Ok(())
        } else {
            Err(diff.join("; "))
        }
    });
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn sixty_four_concurrent_creates_through_the_shim_jit_cdi() {
    shim_load("jit-cdi");
}

#[test]
fn sixty_four_concurrent_creates_through_the_shim_legacy() {
    shim_load("legacy");
}

#[test]
fn sixty_four_concurrent_docker_runs() {
    if !have_prerequisites(&[DOCKERD, DOCKER, CONTAINERD, RUNC, BUSYBOX]) {
        return;
    }
    let _load = hold_load();
    // dockerd mounts on the host (its netns and container files).
    let _mounts = hold_host_mounts();
    let host = shared_host(&[]);
    let gpus = host.gpus();
    let config = ShimConfig::new(host, "");
    let daemon = shim_dockerd(&config.path, &daemon_json(None));
    let image = TempDir::new("load-image");
    let rootfs = image.path().join("rootfs");
    make_rootfs(&rootfs, true);
    daemon.import(&rootfs, IMAGE);
    let failures = run_all("docker run --runtime=nvidia", |i| {
        let indices = subset(i);
        let w = want(host, &gpus, &indices);
        let env = format!("NVIDIA_VISIBLE_DEVICES={}", visible(&indices));
        let out = daemon
            .command()
            .args(["run", "--rm", "--network", "none", "--runtime=nvidia", "-e"])
            .args([env.as_str(), IMAGE, "sh", "-c", PROBE])
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!("docker run: {}", text(&out.stderr).trim()));
        }
        let probe = parse_probe(&text(&out.stdout));
        let (s, mut diff) = seen(&probe, &probe.cgroup, &w);
        if s.rules != w.rules {
            diff.push(format!("cgroup {:?} want {:?}", s.rules, w.rules));
        }
        if diff.is_empty() {
            Ok(())
        } else {
            Err(diff.join("; "))
        }
    });
    assert!(
        failures.is_empty(),
        "{failures:#?}\ndockerd log:\n{}",
        daemon.log()
    );
}
