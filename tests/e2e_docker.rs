//! End to end with a real dockerd: `docker run --gpus …` on a simulated 8-GPU host. dockerd
//! finds our `nvidia-container-runtime-hook` on its PATH, adds it as a prestart hook with its own
//! environment (which points the hook at the mock), and runc runs it. One private dockerd serves
//! every case, in one test, so the daemon starts once per run.

mod common;

use common::container::*;
use common::*;

const IMAGE: &str = "nvbox-busybox";

#[test]
fn docker_run_gpus() {
    if !have_prerequisites(&[DOCKERD, DOCKER, CONTAINERD, RUNC, BUSYBOX]) {
        return;
    }
    let host = shared_host(&[]);
    let daemon = Dockerd::start(host);
    let image = TempDir::new("image");
    let rootfs = image.path().join("rootfs");
    make_rootfs(&rootfs, true);
    daemon.import(&rootfs, IMAGE);

    let run = |gpus: Option<&str>| {
        let mut c = daemon.command();
        c.args(["run", "--rm", "--network", "none"]);
        if let Some(g) = gpus {
            c.args(["--gpus", g]);
        }
        let out = c.args([IMAGE, "sh", "-c", PROBE]).output().unwrap();
        assert!(
            out.status.success(),
            "docker run --gpus {gpus:?}: {}\ndockerd log:\n{}",
            text(&out.stderr),
            daemon.log()
        );
        parse_probe(&text(&out.stdout))
    };
    let check = |gpus: &str, devices: &str, caps: &[&str]| {
        let want = expected(host, devices, caps, &rootfs);
        let probe = run(Some(gpus));
        assert_injected(&probe, &want, host);
        // Docker mounts the container's own device cgroup at /sys/fs/cgroup/devices.
        assert_cgroup(&probe.cgroup, &want.cgroup, host);
    };

    // Without --gpus docker never adds the hook: the baseline.
    let plain = run(None);
    assert_nothing_injected(&plain);
    assert_cgroup(&plain.cgroup, &Default::default(), host);

    // dockerd sets NVIDIA_VISIBLE_DEVICES (and NVIDIA_DRIVER_CAPABILITIES only for NVIDIA
    // capabilities): `all`, the ids, or 0..count-1.
    check("all", "all", &["compute", "utility"]);
    check("\"device=1,3\"", "1,3", &["compute", "utility"]);
    check("2", "0,1", &["compute", "utility"]);
    check("all,capabilities=utility", "all", &["utility"]);
}
