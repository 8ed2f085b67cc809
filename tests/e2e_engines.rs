//! End to end with real engines whose OCI runtime is the shim: a private dockerd with
//! `runtimes.nvidia` (and `default-runtime`) in daemon.json, a private containerd driven by
//! `ctr run --runc-binary`, and podman `--runtime`. Each reads the shim's config.toml (a mock
//! 8-GPU host) through NVIDIA_CTK_CONFIG_FILE_PATH in the engine's environment; one daemon of
//! each kind serves every case of its test.

mod common;

use common::container::*;
use common::engines::*;
use common::*;

const IMAGE: &str = "nvbox-busybox";
const DEFAULT_CAPS: &[&str] = &["compute", "utility"];

fn check_jit(what: &str, stdout: &str, want: &Expected, host: &Host) {
    let probe = parse_probe(stdout);
    assert_jit_injected(&probe, want);
    assert_cgroup_rules(&probe.cgroup, &want.cgroup, host, "rwm");
    assert_eq!(probed_env(stdout, "NVENV"), "void", "{what}");
}

fn check_legacy(stdout: &str, want: &Expected, host: &Host) {
    let probe = parse_probe(stdout);
    assert_injected(&probe, want, host);
    assert_cgroup(&probe.cgroup, &want.cgroup, host);
}

#[test]
fn docker_runtime_nvidia() {
    if !have_prerequisites(&[DOCKERD, DOCKER, CONTAINERD, RUNC, BUSYBOX]) {
        return;
    }
    let host = shared_host(&[]);
    let config = ShimConfig::new(host, "");
    let daemon = shim_dockerd(&config.path, &daemon_json(Some("nvidia")));
    let image = TempDir::new("image");
    let rootfs = image.path().join("rootfs");
    make_rootfs(&rootfs, true);
    daemon.import(&rootfs, IMAGE);

    let info = ok_stdout("docker info", &daemon.docker(&["info"]));
    assert!(info.contains("Default Runtime: nvidia"), "{info}");
    ok_stdout("docker version", &daemon.docker(&["version"]));

    let run = |args: &[&str]| {
        let mut c = daemon.command();
        c.args(["run", "--rm", "--network", "none"]).args(args);
        let out = c
            .args([IMAGE, "sh", "-c", &probe_with_env()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "docker run {args:?}: {}\ndockerd log:\n{}",
            text(&out.stderr),
            daemon.log()
        );
        text(&out.stdout)
    };

    // The default runtime is the shim: a CPU container still runs, and gets nothing.
    let plain = parse_probe(&run(&[]));
    assert_nothing_injected(&plain);
    assert_cgroup_rules(&plain.cgroup, &Default::default(), host, "rwm");

    // auto = jit-cdi.
    for (visible, devices) in [("all", "all"), ("1,3", "1,3"), ("none", "")] {
        let env = format!("NVIDIA_VISIBLE_DEVICES={visible}");
        let out = run(&["--runtime=nvidia", "-e", &env]);
        check_jit(&env, &out, &expected_jit(host, devices, &rootfs), host);
    }
    // --gpus adds the prestart hook; the shim removes it and injects once (the hook's /proc
    // files would show).
    let out = run(&["--gpus", "all", "--runtime=nvidia"]);
    check_jit(
        "--gpus all",
        &out,
        &expected_jit(host, "all", &rootfs),
        host,
    );

    // legacy, read by the next create: the hook does it, and with --gpus there is one hook.
    config.write(&mode_toml("legacy"));
    let out = run(&["--runtime=nvidia", "-e", "NVIDIA_VISIBLE_DEVICES=1,3"]);
    check_legacy(&out, &expected(host, "1,3", DEFAULT_CAPS, &rootfs), host);
    let out = run(&["--gpus", "all", "--runtime=nvidia"]);
    check_legacy(&out, &expected(host, "all", DEFAULT_CAPS, &rootfs), host);
    assert_nothing_injected(&parse_probe(&run(&[])));
}

#[test]
fn containerd_ctr_runc_binary() {
    if !have_prerequisites(&[CONTAINERD, CTR, RUNC, BUSYBOX]) {
        return;
    }
    let host = shared_host(&[]);
    let config = ShimConfig::new(host, "");
    let daemon = Containerd::start(&config.path);
    let run = |visible: &str| {
        let dir = TempDir::new("ctr-rootfs");
        let rootfs = dir.path().join("rootfs");
        make_rootfs(&rootfs, true);
        let env = format!("NVIDIA_VISIBLE_DEVICES={visible}");
        let out = daemon.run_shim(&rootfs, &unique_id("ctr"), &[&env], &probe_with_env());
        assert!(
            out.status.success(),
            "ctr run {env}: {}\ncontainerd log:\n{}",
            text(&out.stderr),
            daemon.log()
        );
        (dir, rootfs, text(&out.stdout))
    };
    for (visible, devices) in [("all", "all"), ("1,3", "1,3")] {
        let dir = TempDir::new("ctr-want");
        make_rootfs(&dir.path().join("rootfs"), true);
        let want = expected_jit(host, devices, &dir.path().join("rootfs"));
        let (_keep, rootfs, out) = run(visible);
        check_jit(visible, &out, &want, host);
        assert_ldcache(&rootfs, &want);
    }
    config.write(&mode_toml("legacy"));
    let dir = TempDir::new("ctr-want");
    make_rootfs(&dir.path().join("rootfs"), true);
    let want = expected(host, "all", DEFAULT_CAPS, &dir.path().join("rootfs"));
    let (_keep, rootfs, out) = run("all");
    check_legacy(&out, &want, host);
    assert_ldcache(&rootfs, &want);
}

#[test]
fn podman_runtime_shim() {
    if !have_prerequisites(&[PODMAN, CONMON, RUNC, BUSYBOX]) {
        return;
    }
    let host = shared_host(&[]);
    let config = ShimConfig::new(host, "");
    let podman = Podman::new(&config.path);
    let image = TempDir::new("image");
    let rootfs = image.path().join("rootfs");
    make_rootfs(&rootfs, true);
    podman.import(&rootfs, IMAGE);
    let run = |env: &[&str]| {
        let out = podman.run_shim(IMAGE, env, &probe_with_env());
        assert!(
            out.status.success(),
            "podman run {env:?}: {}",
            text(&out.stderr)
        );
        text(&out.stdout)
    };
    let plain = parse_probe(&run(&[]));
    assert_nothing_injected(&plain);
    assert_cgroup_rules(&plain.cgroup, &Default::default(), host, "rwm");
    let out = run(&["NVIDIA_VISIBLE_DEVICES=all"]);
    check_jit("all", &out, &expected_jit(host, "all", &rootfs), host);
    let out = run(&["NVIDIA_VISIBLE_DEVICES=2"]);
    check_jit("2", &out, &expected_jit(host, "2", &rootfs), host);
}
