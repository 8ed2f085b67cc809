//! Jetson end to end on `nvbox mock --tegra` (AGX Orin, L4T R36.4): a container started by real
//! runc through the runtime shim (auto resolves to csv there) gets the CSV's device nodes and
//! libraries, its loader finds `libcuda.so.1`, and the CUDA forward-compat hook is in the spec;
//! `nvidia-ctk cdi generate --mode csv` gives a spec real Podman applies; hostile CSV files stop
//! the container with one line.

mod common;

use std::path::Path;

use common::container::{
    BUSYBOX, Host, RUNC, assert_libcuda_cached, have_prerequisites, shared_host,
};
use common::engines::{ShimConfig, ctk, generate_json, probed_env, run_script, spec_hook_args};
use common::podman_cdi::{CdiPodman, PODMAN};
use common::{TempDir, doctor_ok_line, printed as line, require_root};
use serde_json::Value;

const LIBS: &str = "/usr/lib/aarch64-linux-gnu/nvidia";
const CSV_DIR: &str = "etc/nvidia-container-runtime/host-files-for-container.d";

const PROBE: &str = "for n in /dev/nvmap /dev/nvhost-gpu /dev/nvgpu/igpu0/ctrl /dev/host1x-fence; do \
    stat -c 'NODE %n %t:%T' $n; done; \
    L=/usr/lib/aarch64-linux-gnu/nvidia; stat -c 'CUDA %s' $L/libcuda.so.1.1; \
    echo LINK1 $(readlink $L/libcuda.so.1); echo LINK0 $(readlink $L/libcuda.so); \
    echo PTX $(readlink $L/libnvidia-ptxjitcompiler.so.1); \
    echo RELEASE $(head -c 5 /etc/nv_tegra_release); echo FW $(ls /usr/lib/firmware/tegra23x); \
    echo CUDNN $(test -d /usr/include/cudnn && echo yes || echo no); \
    echo NVENV=$NVIDIA_VISIBLE_DEVICES";

fn orin() -> &'static Host {
    shared_host(&["--tegra"])
}

fn rooted() -> bool {
    require_root("the mock's device nodes need root")
}

/// The container's view as PROBE printed it.
fn assert_orin_view(out: &str, host: &Host, cudnn: bool) {
    let nodes: Vec<&str> = out.lines().filter(|l| l.starts_with("NODE ")).collect();
    assert_eq!(
        nodes,
        [
            "NODE /dev/nvmap a:78",
            "NODE /dev/nvhost-gpu 1f1:1",
            "NODE /dev/nvgpu/igpu0/ctrl 1f1:a",
            "NODE /dev/host1x-fence 1f0:0"
        ],
        "{out}"
    );
    let size = std::fs::metadata(host.root.join(&LIBS[1..]).join("libcuda.so.1.1"))
        .unwrap()
        .len();
    assert_eq!(line(out, "CUDA"), size.to_string());
    assert_eq!(line(out, "LINK1"), "libcuda.so.1.1");
    assert_eq!(line(out, "LINK0"), "libcuda.so.1");
    assert_eq!(line(out, "PTX"), "libnvidia-ptxjitcompiler.so.540.4.0");
    assert_eq!(line(out, "RELEASE"), "# R36");
    assert_eq!(line(out, "FW"), "nvhost_nvdec050.fw");
    assert_eq!(line(out, "CUDNN"), if cudnn { "yes" } else { "no" });
}

fn hook_args(config: &[u8]) -> Vec<String> {
    let spec: Value = serde_json::from_slice(config).unwrap();
    spec["hooks"]["createContainer"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|h| h["args"].as_array().unwrap().clone())
        .map(|a| a.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn runc_container_gets_the_csv_files() {
    if !rooted() || !have_prerequisites(&[RUNC, BUSYBOX]) {
        return;
    }
    let host = orin();
    for (env, cudnn) in [
        (&["NVIDIA_VISIBLE_DEVICES=all"][..], false),
        (&["NVIDIA_VISIBLE_DEVICES=0"][..], false),
        (
            &[
                "NVIDIA_VISIBLE_DEVICES=all",
                "NVIDIA_REQUIRE_JETPACK=csv-mounts=all",
            ][..],
            true,
        ),
    ] {
        // auto: a Tegra host with only an integrated GPU is csv, as upstream.
        let config = ShimConfig::new(host, "");
        let (run, bundle) = run_script(&config.path, PROBE, env);
        assert!(run.created, "{env:?}: create: {}", run.create_stderr);
        assert_orin_view(&run.stdout, host, cudnn);
        assert_eq!(probed_env(&run.stdout, "NVENV"), "void");
        assert_libcuda_cached(&bundle.rootfs, LIBS);
        assert!(
            run.devices_list.lines().any(|l| l == "c 497:1 rwm"),
            "device cgroup: {}",
            run.devices_list
        );
        let args = hook_args(&run.config_after);
        assert!(
            args.contains(&"--host-cuda-version=12.6".to_owned())
                && args.contains(
                    &"--cuda-compat-container-root=/usr/local/cuda/compat_orin".to_owned()
                ),
            "{args:?}"
        );
    }
}

/// Pure CSV (no GPU listed by a driver) knows only device 0: anything else is refused in one
/// line and runc never runs.
#[test]
fn unknown_device_is_one_line() {
    if !rooted() || !have_prerequisites(&[RUNC, BUSYBOX]) {
        return;
    }
    let host = orin();
    let config = ShimConfig::new(host, "");
    let (run, _) = run_script(&config.path, "echo ran", &["NVIDIA_VISIBLE_DEVICES=1"]);
    assert!(!run.created);
    assert!(!run.state_dir_left);
    assert_eq!(
        run.create_stderr.lines().count(),
        1,
        "{}",
        run.create_stderr
    );
    assert!(
        run.create_stderr
            .starts_with("nvidia-container-runtime: csv mode: unsupported device id: 1"),
        "{}",
        run.create_stderr
    );
}

/// Hostile CSV files in the runtime's CSV directory: `..`, a link out of the driver root, a
/// huge file. Each stops the container with one line naming the file.
#[test]
fn hostile_csv_files_are_one_line_errors() {
    if !rooted() || !have_prerequisites(&[RUNC, BUSYBOX]) {
        return;
    }
    let dir = TempDir::new("tegra-hostile");
    let cfg = common::mock(dir.path(), &["--tegra"]);
    let csv = dir.path().join(CSV_DIR);
    std::os::unix::fs::symlink(
        "../../../../../../../etc/shadow",
        dir.path().join(&LIBS[1..]).join("libescape.so.1"),
    )
    .unwrap();
    type Writer<'a> = &'a dyn Fn(&Path);
    let cases: [(&str, Writer, &str); 3] = [
        (
            "dotdot",
            &|p: &Path| std::fs::write(p, "lib, /usr/lib/../../etc/shadow\n").unwrap(),
            "has a '..' component",
        ),
        (
            "escape",
            &|p: &Path| std::fs::write(p, format!("sym, {LIBS}/libescape.so.1\n")).unwrap(),
            "points out of the driver root",
        ),
        (
            "huge",
            &|p: &Path| std::fs::File::create(p).unwrap().set_len(64 << 20).unwrap(),
            "more than the 1048576 a CSV file may have",
        ),
    ];
    let host = Host {
        root: dir.path().to_path_buf(),
        config: dir.path().join("config.toml"),
    };
    std::fs::write(&host.config, cfg).unwrap();
    let l4t = csv.join("l4t.csv");
    for (what, write, want) in cases {
        write(&l4t);
        let config = ShimConfig::new(&host, "");
        let (run, _) = run_script(&config.path, "echo ran", &["NVIDIA_VISIBLE_DEVICES=all"]);
        assert!(!run.created, "{what}: created");
        assert_eq!(
            run.create_stderr.lines().count(),
            1,
            "{what}: {}",
            run.create_stderr
        );
        assert!(
            run.create_stderr.contains(want),
            "{what}: {}",
            run.create_stderr
        );
        if what != "escape" {
            assert!(
                run.create_stderr.contains("l4t.csv"),
                "{what}: {}",
                run.create_stderr
            );
        }
    }
}

fn generate(host: &Host, extra: &[&str]) -> Value {
    let csv = host.root.join(CSV_DIR);
    let devices = csv.join("devices.csv");
    let drivers = csv.join("drivers.csv");
    let mut args = vec![
        "--csv.file",
        devices.to_str().unwrap(),
        "--csv.file",
        drivers.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let (spec, stderr) = generate_json(host, &args);
    // Orin's CSV names nodes of other Jetsons: skipped with a warning each, as upstream.
    let absent = if host.root.join("dev/nvmap").exists() {
        2
    } else {
        0
    };
    assert_eq!(
        stderr.matches("could not locate device").count(),
        absent,
        "{stderr}"
    );
    spec
}

#[test]
fn generate_csv_spec() {
    if !rooted() {
        return;
    }
    let host = orin();
    let spec = generate(host, &["--mode", "csv"]);
    assert_eq!(spec, generate(host, &[]), "auto is csv on an Orin");
    let names: Vec<&str> = spec["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["0", "all"]);
    let nodes = spec["devices"][0]["containerEdits"]["deviceNodes"]
        .as_array()
        .unwrap();
    assert_eq!(nodes.len(), 17);
    let edits = &spec["containerEdits"];
    assert!(edits.get("deviceNodes").is_none());
    let hooks = spec_hook_args(edits);
    let cuda_link = format!("libcuda.so.1::{LIBS}/libcuda.so");
    assert_eq!(
        hooks[0],
        ["nvidia-cdi-hook", "create-symlinks", "--link", &cuda_link]
    );
    assert_eq!(hooks[1][1], "create-symlinks");
    assert!(hooks[1].contains(&&*format!("libcuda.so.1.1::{LIBS}/libcuda.so.1")));
    assert_eq!(
        hooks[2],
        [
            "nvidia-cdi-hook",
            "enable-cuda-compat",
            "--host-cuda-version=12.6",
            "--cuda-compat-container-root=/usr/local/cuda/compat_orin"
        ]
    );
    assert_eq!(
        hooks[3],
        ["nvidia-cdi-hook", "update-ldcache", "--folder", LIBS]
    );
    // --csv.compat-container-root, --csv.ignore-pattern, --device-id.
    let other = generate(
        host,
        &[
            "--mode",
            "csv",
            "--csv.compat-container-root",
            "/opt/compat",
            "--csv.ignore-pattern",
            "**/libcuda.so*",
            "--device-id",
            "0",
            "--no-all-device",
        ],
    );
    let text = other.to_string();
    assert!(
        text.contains("--cuda-compat-container-root=/opt/compat"),
        "{text}"
    );
    assert!(!text.contains("libcuda.so.1.1::"), "{text}");
    assert_eq!(other["devices"].as_array().unwrap().len(), 1);
    let devices = host.root.join(CSV_DIR).join("devices.csv");
    let out = ctk(
        &host.config,
        &[
            "cdi",
            "generate",
            "--mode",
            "csv",
            "--device-id",
            "1",
            "--csv.file",
            devices.to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    assert!(
        common::stderr(&out).contains("unsupported device id: 1"),
        "{}",
        common::stderr(&out)
    );
}

#[test]
fn podman_runs_the_csv_spec() {
    if !rooted() || !have_prerequisites(&[PODMAN, BUSYBOX, "/usr/bin/unshare", "/usr/bin/conmon"]) {
        return;
    }
    let host = orin();
    let spec = generate(host, &["--mode", "csv"]);
    CdiPodman::new().run_spec(
        &spec,
        "tegra",
        &["nvidia.com/gpu=0", "nvidia.com/gpu=all"],
        PROBE,
        |stdout| assert_orin_view(stdout, host, false),
    );
}

fn igx_thor() -> &'static Host {
    shared_host(&["--thor"])
}

const THOR_DGPU: &str = "GPU-3f6b9c2e-1a7d-4e58-b0c4-9d8e7f6a5b43";

/// IGX Thor (iGPU at 0000:01:00.0, a dGPU beside it) in csv mode: NVIDIA_VISIBLE_DEVICES picks
/// the iGPU (its node and its display node /dev/nvidia2) or the dGPU (its node and the control
/// nodes), as upstream's per-device CSV specs do.
#[test]
fn thor_csv_mode_picks_the_igpu_or_the_dgpu() {
    if !rooted() || !have_prerequisites(&[RUNC, BUSYBOX]) {
        return;
    }
    let host = igx_thor();
    let config = ShimConfig::mode(host, "csv");
    let all = "/dev/host1x-fence /dev/nvidia-modeset /dev/nvidia-uvm /dev/nvidia-uvm-tools";
    for (visible, want) in [
        (
            "0",
            format!("{all} /dev/nvidia0 /dev/nvidia2 /dev/nvidiactl"),
        ),
        ("1", format!("{all} /dev/nvidia1 /dev/nvidiactl")),
        (THOR_DGPU, format!("{all} /dev/nvidia1 /dev/nvidiactl")),
        (
            "all",
            format!("{all} /dev/nvidia0 /dev/nvidia1 /dev/nvidia2 /dev/nvidiactl"),
        ),
    ] {
        let env = format!("NVIDIA_VISIBLE_DEVICES={visible}");
        let script = "echo NODES $(ls /dev/nvidia* /dev/host1x-fence | sort)";
        let (run, _) = run_script(&config.path, script, &[&env]);
        assert!(run.created, "{visible}: create: {}", run.create_stderr);
        let mut got: Vec<&str> = line(&run.stdout, "NODES").split(' ').collect();
        got.sort();
        let mut want: Vec<&str> = want.split(' ').collect();
        want.sort();
        assert_eq!(got, want, "{visible}");
        let args = hook_args(&run.config_after);
        assert!(
            args.contains(&"--host-cuda-version=13.0".to_owned()),
            "{args:?}"
        );
        assert!(
            !args
                .iter()
                .any(|a| a.starts_with("--cuda-compat-container-root")),
            "compat_orin is Orin's only: {args:?}"
        );
    }
}

/// On IGX Thor `auto` is not csv (a discrete GPU is listed), and `--mode csv` names both GPUs by
/// index and UUID.
#[test]
fn thor_generate_names_both_gpus() {
    if !rooted() {
        return;
    }
    let host = igx_thor();
    let spec = generate(host, &["--mode", "csv"]);
    let mut names: Vec<&str> = spec["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "0",
            "1",
            THOR_DGPU,
            "GPU-8a1e0a4b-5d0c-4f3e-9b7a-6c2d1e0f3a41",
            "all"
        ]
    );
    // auto took the driver path (this mock has no ld.so.cache for it), not csv.
    let auto = ctk(&host.config, &["cdi", "generate"]);
    assert!(!auto.status.success());
    assert!(
        common::stderr(&auto).contains("/etc/ld.so.cache"),
        "{}",
        common::stderr(&auto)
    );
}

/// legacy mode (the prestart hook, and Docker's `--gpus`): the hook's `configure` reads the same
/// CSV files and gives the same nodes, files, links and cache as csv mode.
#[test]
fn legacy_hook_gives_the_csv_files() {
    if !rooted() || !have_prerequisites(&[RUNC, BUSYBOX]) {
        return;
    }
    let host = orin();
    let config = ShimConfig::mode(host, "legacy");
    let (run, bundle) = run_script(&config.path, PROBE, &["NVIDIA_VISIBLE_DEVICES=all"]);
    assert!(run.created, "create: {}", run.create_stderr);
    assert_orin_view(&run.stdout, host, false);
    assert_libcuda_cached(&bundle.rootfs, LIBS);
    assert!(
        run.devices_list
            .lines()
            .any(|l| l.starts_with("c 497:1 rw")),
        "device cgroup: {}",
        run.devices_list
    );
}

/// `nvbox doctor` on Orin checks the CSV files, not a kernel module it does not have.
#[test]
fn doctor_checks_the_csv_files() {
    if !rooted() {
        return;
    }
    let tegra = doctor_ok_line(&orin().config, "Tegra driver");
    assert!(
        tegra.contains("L4T R36.4, CUDA 12.6: 40 entries in 2 CSV file(s)"),
        "{tegra}"
    );
}
