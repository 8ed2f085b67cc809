//! WSL2 end to end on `nvbox mock --wsl`: a container started by real runc through the runtime
//! shim gets `/dev/dxg`, the NVIDIA driver store (the newest of two, never the Intel one) and a
//! loader cache naming `libcuda.so.1`; `nvidia-ctk cdi generate --mode wsl` gives a spec that
//! real Podman applies with the same result; `list`, `info` and `doctor` tell the truth.

mod common;

use std::path::Path;
use std::process::Output;

use common::container::{
    BUSYBOX, Host, RUNC, assert_libcuda_cached, have_prerequisites, shared_host, text,
};
use common::engines::{ShimConfig, generate_json, probed_env, run_script, spec_hook_args};
use common::podman_cdi::{CdiPodman, PODMAN};
use common::{TempDir, command, doctor_ok_line, nvbox, printed as line, require_root};

const STORE: &str = "/usr/lib/wsl/drivers/nv_dispi.inf_amd64_7e5fd280efaa5445";
const OLD_STORE: &str = "/usr/lib/wsl/drivers/nv_dispi.inf_amd64_0f2c31b9d6a4e8c1";

/// What a container prints about its GPU view (busybox only).
const PROBE: &str = "stat -c 'DXG %t:%T %a' /dev/dxg; \
    S=/usr/lib/wsl/drivers/nv_dispi.inf_amd64_7e5fd280efaa5445; \
    stat -c 'CUDA %s' $S/libcuda.so.1.1; echo SONAME $(readlink $S/libcuda.so.1); \
    echo SMI $(readlink /usr/bin/nvidia-smi); /usr/bin/nvidia-smi; \
    echo STORES $(ls /usr/lib/wsl/drivers); echo LXSS $(ls /usr/lib/wsl/lib); \
    ls /dev/nvidia* 2>/dev/null | sed 's/^/NVNODE /'; \
    echo NVENV=$NVIDIA_VISIBLE_DEVICES";

fn wsl_host() -> &'static Host {
    shared_host(&["--wsl"])
}

fn rooted() -> bool {
    require_root("/dev/dxg of the mock needs root")
}

/// The container's view, as PROBE printed it, checked against the host.
fn assert_wsl_view(out: &str, host: &Host) {
    // /dev/dxg: misc major 10, the mock's minor 62 (0x3e), world read-write as WSL makes it.
    assert_eq!(line(out, "DXG"), "a:3e 666", "{out}");
    let libcuda = host.root.join(&STORE[1..]).join("libcuda.so.1.1");
    let size = std::fs::metadata(libcuda).unwrap().len();
    assert_eq!(line(out, "CUDA"), size.to_string(), "the store's libcuda");
    assert_eq!(line(out, "SONAME"), "libcuda.so.1.1", "{out}");
    assert_eq!(line(out, "SMI"), format!("{STORE}/nvidia-smi"));
    assert!(
        out.contains("nvbox mock nvidia-smi (WSL2): driver 560.94"),
        "{out}"
    );
    // Only the store in use: not the older NVIDIA one, not the Intel adapter's.
    assert_eq!(line(out, "STORES"), STORE.rsplit('/').next().unwrap());
    assert_eq!(line(out, "LXSS"), "libdxcore.so");
    assert!(!out.contains("NVNODE"), "no /dev/nvidia* on WSL2: {out}");
}

/// `ldconfig -p` of the container's cache: libcuda.so.1 found in the store.
fn assert_cache(rootfs: &Path) {
    let listing = assert_libcuda_cached(rootfs, STORE);
    assert!(!listing.contains(OLD_STORE), "{listing}");
}

/// The runtime shim in its default mode sees `/dev/dxg` and injects the WSL2 driver (jit-cdi).
#[test]
fn runc_container_gets_dxg_and_the_driver_store() {
    if !rooted() || !have_prerequisites(&[RUNC, BUSYBOX]) {
        return;
    }
    let host = wsl_host();
    // auto is jit-cdi (runc makes the node and mounts); legacy is the prestart hook's live
    // backend, through nvidia-container-cli configure.
    for mode in ["auto", "legacy"] {
        for env in ["NVIDIA_VISIBLE_DEVICES=all", "NVIDIA_VISIBLE_DEVICES=0"] {
            let config = ShimConfig::mode(host, mode);
            let (run, bundle) = run_script(&config.path, PROBE, &[env]);
            assert!(run.created, "{mode}: create: {}", run.create_stderr);
            assert_wsl_view(&run.stdout, host);
            if mode == "auto" {
                assert_eq!(probed_env(&run.stdout, "NVENV"), "void");
            }
            assert_cache(&bundle.rootfs);
            assert!(
                run.devices_list
                    .lines()
                    .any(|l| l.starts_with("c 10:62 rw")),
                "{mode}: device cgroup: {}",
                run.devices_list
            );
        }
    }
    // A CPU container on the same host is left alone.
    let config = ShimConfig::new(host, "");
    let (run, _) = run_script(&config.path, "ls /dev/dxg 2>&1; echo done", &[]);
    assert!(run.created, "create: {}", run.create_stderr);
    assert_eq!(run.config_after, run.config_before);
    assert!(run.stdout.contains("No such file"), "{}", run.stdout);
}

fn generate(host: &Host, extra: &[&str]) -> serde_json::Value {
    let (spec, stderr) = generate_json(host, extra);
    assert!(
        stderr.contains(&format!("Ignoring older NVIDIA driver store {OLD_STORE}")),
        "{stderr}"
    );
    spec
}

/// `--mode wsl` and `auto` (which resolves to wsl where `/dev/dxg` is) give one `all` device and
/// upstream's edits: every `.so*`, `.bin`, `.dll` of the store, libdxcore, the two hooks.
#[test]
fn generate_wsl_spec() {
    if !rooted() {
        return;
    }
    let host = wsl_host();
    let spec = generate(host, &["--mode", "wsl"]);
    assert_eq!(spec, generate(host, &[]), "auto is wsl on a WSL2 host");
    let devices = spec["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0]["name"], "all");
    let node = &devices[0]["containerEdits"]["deviceNodes"][0];
    assert_eq!(node["path"], "/dev/dxg");
    assert_eq!(
        (node["major"].as_u64(), node["minor"].as_u64()),
        (Some(10), Some(62))
    );
    let edits = &spec["containerEdits"];
    let mounts: Vec<&str> = edits["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["containerPath"].as_str().unwrap())
        .collect();
    let names = |dir: &str| -> Vec<String> {
        let mut n: Vec<String> = mounts
            .iter()
            .filter_map(|m| m.strip_prefix(&format!("{dir}/")))
            .map(str::to_owned)
            .collect();
        n.sort();
        n
    };
    assert_eq!(names("/usr/lib/wsl/lib"), ["libdxcore.so"]);
    assert_eq!(
        names(STORE),
        [
            "libcuda.so.1.1",
            "libcuda_loader.so",
            "libnvdxgdmal.so.1",
            "libnvidia-gpucomp.so",
            "libnvidia-ml.so.1",
            "libnvidia-ml_loader.so",
            "libnvidia-ptxjitcompiler.so.1",
            "libnvoptix_loader.so.1",
            "libnvwgf2umx.so",
            "nvcubins.bin",
            "nvcuda64.dll",
            "nvidia-smi",
            "nvml.dll",
            "nvwgf2umx.dll",
        ]
    );
    assert_eq!(mounts.len(), 15, "{mounts:?}");
    let hooks = spec_hook_args(edits);
    let link = format!("{STORE}/nvidia-smi::/usr/bin/nvidia-smi");
    assert_eq!(
        hooks,
        [
            vec!["nvidia-cdi-hook", "create-symlinks", "--link", &link],
            vec![
                "nvidia-cdi-hook",
                "update-ldcache",
                "--folder",
                STORE,
                "--folder",
                "/usr/lib/wsl/lib"
            ],
        ]
    );
    assert_eq!(
        edits["env"],
        serde_json::json!(["NVIDIA_VISIBLE_DEVICES=void"])
    );
    let none = generate(host, &["--mode", "wsl", "--disable-hook", "all"]);
    assert!(none["containerEdits"].get("hooks").is_none(), "{none}");
}

/// The generated spec with real Podman: the same container view as through the shim.
#[test]
fn podman_runs_the_wsl_spec() {
    if !rooted() || !have_prerequisites(&[PODMAN, BUSYBOX, "/usr/bin/unshare", "/usr/bin/conmon"]) {
        return;
    }
    let host = wsl_host();
    let spec = generate(host, &["--mode", "wsl"]);
    CdiPodman::new().run_spec(&spec, "wsl", &["nvidia.com/gpu=all"], PROBE, |stdout| {
        assert_wsl_view(stdout, host)
    });
}

/// Without an NVIDIA store, `/dev/dxg` alone is an error naming what is missing.
#[test]
fn dxg_without_a_driver_store_is_one_line() {
    if !rooted() {
        return;
    }
    let dir = TempDir::new("wsl-nostore");
    let cfg = common::mock(dir.path(), &["--wsl"]);
    std::fs::remove_dir_all(dir.path().join("usr/lib/wsl/drivers")).unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, cfg).unwrap();
    let out = command(nvbox())
        .env("NVIDIA_CTK_CONFIG_FILE_PATH", &config)
        .args(["nvidia-ctk", "cdi", "generate", "--mode", "wsl"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("no NVIDIA driver store: no /usr/lib/wsl/drivers/*/libcuda.so.1.1"),
        "{err}"
    );
}

fn cli(host: &Host, args: &[&str]) -> Output {
    command(nvbox())
        .env("NVIDIA_CTK_CONFIG_FILE_PATH", &host.config)
        .arg("nvidia-container-cli")
        .args(args)
        .output()
        .unwrap()
}

/// `info` names the store's driver version (from its `.inf`) and says why no GPU is listed;
/// `list` gives what a container gets; `doctor` checks the store, not a kernel module.
#[test]
fn info_list_and_doctor_on_wsl() {
    if !rooted() {
        return;
    }
    let host = wsl_host();
    let info = cli(host, &["info"]);
    assert!(info.status.success(), "{}", text(&info.stderr));
    assert_eq!(
        text(&info.stdout),
        "NVRM version:   560.94\nCUDA version:   12.6\n"
    );
    assert!(text(&info.stderr).contains("GPUs behind /dev/dxg are not listed"));
    let list = cli(host, &["list"]);
    assert!(list.status.success(), "{}", text(&list.stderr));
    let list = text(&list.stdout);
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(
        lines[..3],
        [
            "/dev/dxg",
            "/usr/lib/wsl/lib/libdxcore.so",
            &format!("{STORE}/libcuda.so.1.1")
        ]
    );
    assert_eq!(lines.len(), 16, "{list}");
    assert!(!list.contains(OLD_STORE));
    let libs = cli(host, &["list", "--libraries"]);
    assert!(text(&libs.stdout).lines().all(|l| l.contains(".so")));
    let wsl = doctor_ok_line(&host.config, "WSL2 driver");
    assert!(wsl.contains(STORE) && wsl.contains("560.94"), "{wsl}");
}
