//! End to end with the real runc: a busybox container whose prestart hook is our
//! `nvidia-container-runtime-hook`, on a simulated GPU host. The container prints what it sees
//! (devices, libraries, binaries, sockets, firmware, /proc/driver/nvidia); the device cgroup is
//! read between `runc create` and `runc start`; the ld.so.cache is read from the host after the
//! run. Expectations come from the mock's own `nvidia-container-cli list` and upstream's rules.

mod common;

use common::container::*;
use std::collections::BTreeSet;

/// The default mock: 8 × H100, driver 535.104.05.
const EIGHT_GPUS: &[&str] = &[];
const MIG_HOST: &[&str] = &["--gpus", "2", "--mig", "2"];
const DEFAULT_CAPS: &[&str] = &["compute", "utility"];

fn ready() -> bool {
    have_prerequisites(&[RUNC, BUSYBOX])
}

/// A hooked container that must get `devices` (the oracle's `--device` value) and `caps`.
fn assert_gpu_container(host: &Host, debian: bool, env: &[&str], devices: &str, caps: &[&str]) {
    let mut bundle = Bundle::new(debian);
    bundle.script(PROBE);
    bundle.env(env);
    bundle.hook(host);
    let want = expected(host, devices, caps, &bundle.rootfs);
    let run = run_runc(&mut bundle);
    assert!(run.created, "runc create failed:\n{}", run.create_stderr);
    let probe = parse_probe(&run.stdout);
    assert_injected(&probe, &want, host);
    assert_cgroup(&run.devices_list, &want.cgroup, host);
    assert_ldcache(&bundle.rootfs, &want);
}

/// A container that must look exactly as plain runc leaves it: nothing in it, nothing allowed
/// in its device cgroup, its rootfs untouched.
fn assert_plain_container(hooked: bool, env: &[&str]) {
    let host = shared_host(EIGHT_GPUS);
    let mut bundle = Bundle::new(true);
    bundle.script(PROBE);
    bundle.env(env);
    if hooked {
        bundle.hook(host);
    }
    let before = snapshot(&bundle.rootfs);
    let run = run_runc(&mut bundle);
    assert!(run.created, "runc create failed:\n{}", run.create_stderr);
    assert_nothing_injected(&parse_probe(&run.stdout));
    assert_cgroup(&run.devices_list, &BTreeSet::new(), host);
    assert_eq!(snapshot(&bundle.rootfs), before, "the rootfs changed");
}

#[test]
fn plain_runc_without_hook() {
    if ready() {
        assert_plain_container(false, &["NVIDIA_VISIBLE_DEVICES=all"]);
    }
}

#[test]
fn void_injects_nothing() {
    if ready() {
        assert_plain_container(true, &["NVIDIA_VISIBLE_DEVICES=void"]);
    }
}

#[test]
fn unset_on_modern_image_injects_nothing() {
    if ready() {
        assert_plain_container(true, &["NVIDIA_DRIVER_CAPABILITIES=compute,utility"]);
    }
}

#[test]
fn all_gpus_debian_rootfs() {
    if ready() {
        let env = ["NVIDIA_VISIBLE_DEVICES=all"];
        assert_gpu_container(shared_host(EIGHT_GPUS), true, &env, "all", DEFAULT_CAPS);
    }
}

#[test]
fn all_gpus_non_debian_rootfs() {
    if ready() {
        let env = ["NVIDIA_VISIBLE_DEVICES=all"];
        assert_gpu_container(shared_host(EIGHT_GPUS), false, &env, "all", DEFAULT_CAPS);
    }
}

#[test]
fn none_gives_driver_without_gpus() {
    if ready() {
        let env = ["NVIDIA_VISIBLE_DEVICES=none"];
        assert_gpu_container(shared_host(EIGHT_GPUS), true, &env, "", DEFAULT_CAPS);
    }
}

#[test]
fn indices_one_and_three() {
    if ready() {
        let env = ["NVIDIA_VISIBLE_DEVICES=1,3"];
        assert_gpu_container(shared_host(EIGHT_GPUS), true, &env, "1,3", DEFAULT_CAPS);
    }
}

#[test]
fn gpu_by_uuid() {
    if ready() {
        let host = shared_host(EIGHT_GPUS);
        let uuid = host.gpus()[2].uuid.clone();
        assert!(uuid.starts_with("GPU-"), "{uuid}");
        let env = format!("NVIDIA_VISIBLE_DEVICES={uuid}");
        assert_gpu_container(host, true, &[&env], &uuid, DEFAULT_CAPS);
    }
}

#[test]
fn gpu_by_bus_id() {
    if ready() {
        let host = shared_host(EIGHT_GPUS);
        let bus = host.gpus()[4].bus.clone();
        let env = format!("NVIDIA_VISIBLE_DEVICES={bus}");
        assert_gpu_container(host, true, &[&env], &bus, DEFAULT_CAPS);
    }
}

#[test]
fn mig_device() {
    if ready() {
        let env = ["NVIDIA_VISIBLE_DEVICES=0:1"];
        assert_gpu_container(shared_host(MIG_HOST), true, &env, "0:1", DEFAULT_CAPS);
    }
}

#[test]
fn utility_only() {
    if ready() {
        let env = [
            "NVIDIA_VISIBLE_DEVICES=all",
            "NVIDIA_DRIVER_CAPABILITIES=utility",
        ];
        assert_gpu_container(shared_host(EIGHT_GPUS), true, &env, "all", &["utility"]);
    }
}

#[test]
fn all_capabilities() {
    if ready() {
        let env = [
            "NVIDIA_VISIBLE_DEVICES=all",
            "NVIDIA_DRIVER_CAPABILITIES=all",
        ];
        assert_gpu_container(shared_host(EIGHT_GPUS), true, &env, "all", &["all"]);
    }
}

#[test]
fn compat32_debian() {
    if ready() {
        let env = [
            "NVIDIA_VISIBLE_DEVICES=0",
            "NVIDIA_DRIVER_CAPABILITIES=compute,utility,compat32",
        ];
        let caps = ["compute", "utility", "compat32"];
        assert_gpu_container(shared_host(EIGHT_GPUS), true, &env, "0", &caps);
    }
}

#[test]
fn legacy_cuda_image_gets_everything_non_debian() {
    if ready() {
        // CUDA_VERSION without NVIDIA_REQUIRE_CUDA: all GPUs, all capabilities, cuda>=9.0.
        let env = ["CUDA_VERSION=9.0"];
        assert_gpu_container(shared_host(EIGHT_GPUS), false, &env, "all", &["all"]);
    }
}

#[test]
fn unsatisfied_requirement_fails_create() {
    if !ready() {
        return;
    }
    let mut bundle = Bundle::new(true);
    bundle.script("echo started");
    bundle.env(&[
        "NVIDIA_VISIBLE_DEVICES=all",
        "NVIDIA_REQUIRE_CUDA=cuda>=99.0",
    ]);
    bundle.hook(shared_host(EIGHT_GPUS));
    let run = run_runc(&mut bundle);
    assert!(!run.created, "runc create must fail");
    let want = "requirement error: unsatisfied condition: cuda>=99.0, please update your driver \
                to a newer version, or use an earlier cuda container";
    assert!(
        run.create_stderr.contains(want),
        "runc said:\n{}",
        run.create_stderr
    );
}
