//! `nvidia-container-cli info|list` on simulated hosts, compared with upstream's exact text.

mod common;

use common::*;
use std::os::unix::fs::symlink;

const INFO_1GPU: &str = "NVRM version:   535.104.05
CUDA version:   12.2

Device Index:   0
Device Minor:   0
Model:          NVIDIA H100 80GB HBM3
Brand:          Nvidia
GPU UUID:       GPU-0504cf0f-e619-f138-e1d5-740504e74846
Bus Location:   00000000:18:00.0
Architecture:   9.0
";

const CSV_1GPU: &str = "NVRM version,CUDA version
535.104.05,12.2

Device Index,Device Minor,Model,Brand,GPU UUID,Bus Location,Architecture
0,0,NVIDIA H100 80GB HBM3,Nvidia,GPU-0504cf0f-e619-f138-e1d5-740504e74846,00000000:18:00.0,9.0
";

fn ok(o: &std::process::Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}: {}",
        o.status.code(),
        stderr(o)
    );
    assert_eq!(stderr(o), "", "stderr must stay empty on success");
    stdout(o)
}

#[test]
fn info_one_gpu_exact_text_and_csv() {
    let host = TempDir::new("info1");
    mock(host.path(), &["--gpus", "1"]);
    assert_eq!(ok(&cli(host.path(), &["info"])), INFO_1GPU);
    assert_eq!(ok(&cli(host.path(), &["info", "--csv"])), CSV_1GPU);
}

#[test]
fn list_one_gpu_defaults_exact_text() {
    let host = TempDir::new("list1");
    mock(host.path(), &["--gpus", "1"]);
    let golden = include_str!("golden/list-h100-1gpu.txt");
    assert_eq!(ok(&cli(host.path(), &["list"])), golden);
    // A single attached --imex-channel keeps the defaults and adds the channel after the GPUs.
    let with_imex = ok(&cli(host.path(), &["list", "--imex-channel=3"]));
    let expected = golden.replacen(
        "/dev/nvidia0\n",
        "/dev/nvidia0\n/dev/nvidia-caps-imex-channels/channel3\n",
        1,
    );
    assert_eq!(with_imex, expected);
}

#[test]
fn list_prints_only_what_was_asked() {
    let host = TempDir::new("listsel");
    mock(host.path(), &["--gpus", "1"]);
    let golden = include_str!("golden/list-h100-1gpu.txt");
    let only = |prefix: &str| -> String {
        golden
            .lines()
            .filter(|l| l.starts_with(prefix))
            .map(|l| format!("{l}\n"))
            .collect()
    };
    let libs64 = only("/usr/lib/x86_64-linux-gnu/");
    assert_eq!(ok(&cli(host.path(), &["list", "--libraries"])), libs64);
    let libs = format!("{libs64}{}", only("/usr/lib/i386-linux-gnu/"));
    assert_eq!(ok(&cli(host.path(), &["list", "-l", "--compat32"])), libs);
    assert_eq!(
        ok(&cli(host.path(), &["list", "--binaries"])),
        only("/usr/bin/")
    );
    assert_eq!(
        ok(&cli(host.path(), &["list", "--ipcs"])),
        "/run/nvidia-persistenced/socket\n"
    );
    assert_eq!(
        ok(&cli(host.path(), &["list", "--ipcs", "--no-persistenced"])),
        ""
    );
    assert_eq!(
        ok(&cli(host.path(), &["list", "--firmwares"])),
        only("/lib/firmware/")
    );
    assert_eq!(
        ok(&cli(host.path(), &["list", "-f", "--no-gsp-firmware"])),
        ""
    );
    assert_eq!(
        ok(&cli(host.path(), &["list", "--device=0"])),
        only("/dev/")
    );
    // The two-word form does not count as "no options": only the channel is listed.
    assert_eq!(
        ok(&cli(host.path(), &["list", "--imex-channel", "7,8"])),
        "/dev/nvidia-caps-imex-channels/channel7\n/dev/nvidia-caps-imex-channels/channel8\n"
    );
}

#[test]
fn eight_gpus_in_bus_order() {
    let host = TempDir::new("info8");
    mock(host.path(), &["--gpus", "8"]);
    let info = ok(&cli(host.path(), &["info", "--csv"]));
    let rows: Vec<&str> = info.lines().skip(4).collect();
    assert_eq!(rows.len(), 8);
    let buses = ["18", "2a", "3a", "5d", "9a", "ab", "ba", "db"];
    for (i, row) in rows.iter().enumerate() {
        let f: Vec<&str> = row.split(',').collect();
        assert_eq!(f[0], i.to_string());
        assert_eq!(f[5], format!("00000000:{}:00.0", buses[i]));
        assert_eq!(f[6], "9.0");
    }
    // Select by UUID, bus id and index, in that order; the output keeps the selection order.
    let uuid5 = rows[5].split(',').nth(4).unwrap();
    let out = ok(&cli(
        host.path(),
        &["list", "-d", &format!("{uuid5},0000:18:00.0"), "-d", "7"],
    ));
    assert_eq!(
        out,
        "/dev/nvidiactl\n/dev/nvidia-uvm\n/dev/nvidia-uvm-tools\n/dev/nvidia-modeset\n/dev/nvidia5\n/dev/nvidia0\n/dev/nvidia7\n"
    );
}

#[test]
fn sixty_four_gpus() {
    let host = TempDir::new("info64");
    mock(host.path(), &["--gpus", "64", "--model", "l4"]);
    let info = ok(&cli(host.path(), &["info"]));
    assert_eq!(info.matches("Device Index:").count(), 64);
    assert!(info.contains("Device Index:   63\n"));
    assert!(info.contains("Bus Location:   00000001:da:00.0\n"));
    assert!(info.contains("Model:          NVIDIA L4\n"));
    assert!(info.contains("Architecture:   8.9\n"));
    let list = ok(&cli(host.path(), &["list", "--device", "all"]));
    assert_eq!(list.lines().count(), 4 + 64);
    assert!(list.ends_with("/dev/nvidia63\n"));
}

#[test]
fn mig_devices_and_capabilities() {
    let host = TempDir::new("mig");
    mock(
        host.path(),
        &["--gpus", "2", "--model", "a100", "--mig", "2"],
    );
    let out = ok(&cli(host.path(), &["list", "-d", "1:1,0:0"]));
    assert_eq!(
        out,
        "/dev/nvidiactl\n/dev/nvidia-uvm\n/dev/nvidia-uvm-tools\n/dev/nvidia-modeset\n/dev/nvidia1\n/dev/nvidia0\n\
/proc/driver/nvidia/capabilities/gpu1/mig/gi2/access\n/proc/driver/nvidia/capabilities/gpu1/mig/gi2/ci0/access\n\
/dev/nvidia-caps/nvidia-cap156\n/dev/nvidia-caps/nvidia-cap157\n\
/proc/driver/nvidia/capabilities/gpu0/mig/gi1/access\n/proc/driver/nvidia/capabilities/gpu0/mig/gi1/ci0/access\n\
/dev/nvidia-caps/nvidia-cap12\n/dev/nvidia-caps/nvidia-cap13\n"
    );
    let cfg = ok(&cli(
        host.path(),
        &["list", "-d", "all", "--mig-monitor", "all"],
    ));
    let lines: Vec<&str> = cfg.lines().collect();
    // Per-instance access files are replaced by the whole capabilities tree.
    assert!(!cfg.contains("/access"));
    assert_eq!(lines[6], "/proc/driver/nvidia/capabilities/mig/monitor");
    assert_eq!(lines[7], "/dev/nvidia-caps/nvidia-cap2");
    assert_eq!(lines[8], "/proc/driver/nvidia/capabilities/gpu0");
    assert_eq!(lines[9], "/dev/nvidia-caps");
    // Every minor of GPU 0 (15 GIs × 9) and none of GPU 1's, nor GPU 10's.
    let gpu0: Vec<&&str> = lines
        .iter()
        .skip(10)
        .take_while(|l| !l.ends_with("gpu1"))
        .collect();
    assert_eq!(gpu0.len(), 135);
    assert_eq!(*gpu0[0], "/dev/nvidia-caps/nvidia-cap3");
    let info = ok(&cli(host.path(), &["info", "--json"]));
    let doc: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(doc["devices"][1]["mig"]["devices"][1]["gpu_instance"], 2);
    assert_eq!(doc["devices"][0]["mig"]["enabled"], true);
}

#[test]
fn mig_option_errors() {
    let host = TempDir::new("migerr");
    mock(
        host.path(),
        &["--gpus", "1", "--model", "a100", "--mig", "1"],
    );
    let o = cli(host.path(), &["list", "-d", "all", "--mig-config", "0"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o),
        "nvidia-container-cli: mig-config error: only 'all' devices are currently supported\n"
    );
    let o = cli(host.path(), &["list", "-d", "0:0", "--mig-config", "all"]);
    assert_eq!(
        stderr(&o),
        "nvidia-container-cli: mig-config error: cannot enable mig-config with specific MIG devices selected\n"
    );
    let o = cli(host.path(), &["list", "-d", "1"]);
    assert_eq!(
        stderr(&o),
        "nvidia-container-cli: device error: 1: unknown device\n"
    );
    assert_eq!(o.status.code(), Some(1));
    let o = cli(host.path(), &["list", "--imex-channel", "1048576"]);
    assert_eq!(
        stderr(&o),
        "nvidia-container-cli: error parsing IMEX info: unsupported IMEX channel value: 1048576\n"
    );
}

#[test]
fn missing_version_file_means_driver_not_loaded() {
    let host = TempDir::new("nodriver");
    mock(host.path(), &["--gpus", "1"]);
    std::fs::remove_file(host.path().join("proc/driver/nvidia/version")).unwrap();
    for cmd in ["info", "list"] {
        let o = cli(host.path(), &[cmd]);
        assert_eq!(o.status.code(), Some(1));
        assert_eq!(stdout(&o), "");
        assert_eq!(
            stderr(&o),
            format!(
                "nvidia-container-cli: initialization error: driver not loaded: {}/proc/driver/nvidia/version: no such file\n",
                host.path().display()
            )
        );
    }
}

#[test]
fn corrupted_ldcache() {
    let host = TempDir::new("badcache");
    mock(host.path(), &["--gpus", "1"]);
    std::fs::write(
        host.path().join("etc/ld.so.cache"),
        b"glibc-ld.so.cache1.1\xff\xff\xff\x7f",
    )
    .unwrap();
    let o = cli(host.path(), &["list"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stdout(&o), "", "nothing half-printed");
    assert_eq!(
        stderr(&o),
        "nvidia-container-cli: detection error: unsupported file format: /etc/ld.so.cache\n"
    );
    // Better than upstream: `info` prints versions and GPUs, which do not depend on the cache.
    assert_eq!(ok(&cli(host.path(), &["info"])), INFO_1GPU);
    // --ldcache names another file inside the root.
    std::fs::remove_file(host.path().join("etc/ld.so.cache")).unwrap();
    let o = cli(
        host.path(),
        &["--ldcache", "/etc/other.cache", "list", "-l"],
    );
    assert_eq!(
        stderr(&o),
        "nvidia-container-cli: detection error: open failed: /etc/other.cache: no such file or directory\n"
    );
}

#[test]
fn library_of_another_driver_is_not_selected() {
    if std::process::Command::new("ldconfig")
        .arg("--version")
        .output()
        .is_err()
    {
        return skip_or_fail("glibc ldconfig not found");
    }
    let host = TempDir::new("decoy");
    mock(host.path(), &["--gpus", "1"]);
    let before = ok(&cli(host.path(), &["list", "-l", "--compat32"]));
    // A leftover of driver 470 and a CUDA forward-compat libcuda, both in the cache under the
    // same soname as the real one (glibc's ldconfig writes the cache this time).
    let h = host.path();
    let decoy = h.join("opt/old");
    std::fs::create_dir_all(&decoy).unwrap();
    let lib = std::fs::read(h.join("usr/lib/x86_64-linux-gnu/libcuda.so.535.104.05")).unwrap();
    std::fs::write(decoy.join("libcuda.so.470.57.02"), &lib).unwrap();
    std::fs::write(decoy.join("libnvidia-ml.so.535.104.05.bak"), &lib).unwrap();
    std::fs::write(h.join("etc/ld.so.conf.d/zz-old.conf"), "/opt/old\n").unwrap();
    let o = std::process::Command::new("ldconfig")
        .arg("-r")
        .arg(h)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let cache = std::process::Command::new("ldconfig")
        .args(["-p", "-C"])
        .arg(h.join("etc/ld.so.cache"))
        .output()
        .unwrap();
    assert!(
        stdout(&cache).contains("/opt/old/libcuda.so.1"),
        "{}",
        stdout(&cache)
    );
    let after = ok(&cli(h, &["list", "-l", "--compat32"]));
    assert_eq!(after, before);
    assert!(!after.contains("470"));
}

#[test]
fn glibc_cache_of_the_mock_lists_the_same() {
    if std::process::Command::new("ldconfig")
        .arg("--version")
        .output()
        .is_err()
    {
        return skip_or_fail("glibc ldconfig not found");
    }
    let host = TempDir::new("glibccache");
    mock(host.path(), &["--gpus", "2"]);
    let ours = ok(&cli(host.path(), &["list"]));
    for format in ["new", "compat"] {
        let o = std::process::Command::new("ldconfig")
            .args(["-c", format, "-r"])
            .arg(host.path())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(
            ok(&cli(host.path(), &["list"])),
            ours,
            "ldconfig -c {format}"
        );
    }
}

#[test]
fn roots_from_the_config_mock_prints() {
    let host = TempDir::new("cfgroots");
    let snippet = mock(host.path(), &["--gpus", "1"]);
    let cfg = host.path().join("config.toml");
    std::fs::write(&cfg, &snippet).unwrap();
    let o = command(nvbox())
        .env("NVIDIA_CTK_CONFIG_FILE_PATH", &cfg)
        .args(["nvidia-container-cli", "info"])
        .output()
        .unwrap();
    assert_eq!(ok(&o), INFO_1GPU);
    // A flag beats the config: an empty proc root has no driver.
    let empty = TempDir::new("cfgroots-empty");
    let o = command(nvbox())
        .env("NVIDIA_CTK_CONFIG_FILE_PATH", &cfg)
        .args(["nvidia-container-cli", "--proc-root"])
        .arg(empty.path())
        .arg("info")
        .output()
        .unwrap();
    assert!(stderr(&o).contains("driver not loaded"));
    // A broken config is one line naming the file and line.
    std::fs::write(&cfg, "[nvidia-container-cli]\nroot = \n").unwrap();
    let o = command(nvbox())
        .env("NVIDIA_CTK_CONFIG_FILE_PATH", &cfg)
        .args(["nvidia-container-cli", "info"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!(
            "nvidia-container-cli: initialization error: {}:2: ",
            cfg.display()
        )),
        "{err}"
    );
}

#[test]
fn debug_log_in_upstream_format() {
    let host = TempDir::new("debuglog");
    mock(host.path(), &["--gpus", "1"]);
    let log = host.path().join("debug.log");
    let o = cli(
        host.path(),
        &["--debug", log.to_str().unwrap(), "list", "-l"],
    );
    ok(&o);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.starts_with("\n-- WARNING, the following logs are for debugging purposes only --\n\n")
    );
    let line = text
        .lines()
        .find(|l| l.ends_with("] selecting /usr/lib/x86_64-linux-gnu/libcuda.so.535.104.05"))
        .expect(&text);
    // I1128 09:52:20.123456 4242 files.rs:123] …
    let b = line.as_bytes();
    assert_eq!(b[0], b'I');
    assert!(b[1..5].iter().all(u8::is_ascii_digit));
    assert_eq!(&line[5..6], " ");
    assert_eq!(&line[8..9], ":");
    assert_eq!(&line[14..15], ".");
    assert!(line[15..21].bytes().all(|c| c.is_ascii_digit()));
    assert!(
        text.contains("missing library libnvidia-nscq.so") || !text.contains("missing library")
    );
}

#[test]
fn driver_root_symlinks_resolve_inside_the_root() {
    let host = TempDir::new("rootlinks");
    mock(host.path(), &["--gpus", "1"]);
    // An absolute symlink in the driver root means the root's path, never the host's.
    let bin = host.path().join("usr/bin/nvidia-smi");
    let real = host.path().join("usr/lib/nvidia/current");
    std::fs::create_dir_all(&real).unwrap();
    std::fs::rename(&bin, real.join("nvidia-smi")).unwrap();
    symlink("/usr/lib/nvidia/current/nvidia-smi", &bin).unwrap();
    let out = ok(&cli(host.path(), &["list", "--binaries"]));
    assert!(
        out.starts_with("/usr/lib/nvidia/current/nvidia-smi\n"),
        "{out}"
    );
    // A link that escapes the root is clamped to it and finds nothing.
    std::fs::remove_file(&bin).unwrap();
    std::fs::remove_file(real.join("nvidia-smi")).unwrap();
    symlink("../../../../../../../usr/bin/env", &bin).unwrap();
    let out = ok(&cli(host.path(), &["list", "--binaries"]));
    assert!(
        !out.contains("nvidia-smi") && !out.contains("/env"),
        "{out}"
    );
}

#[test]
fn zero_gpus() {
    let host = TempDir::new("zero");
    mock(host.path(), &["--gpus", "0"]);
    assert_eq!(
        ok(&cli(host.path(), &["info"])),
        "NVRM version:   535.104.05\nCUDA version:   12.2\n"
    );
    assert_eq!(
        ok(&cli(host.path(), &["info", "--csv"])),
        "NVRM version,CUDA version\n535.104.05,12.2\n\nDevice Index,Device Minor,Model,Brand,GPU UUID,Bus Location,Architecture\n"
    );
    // Any --device with zero GPUs selects nothing and is no error.
    let o = ok(&cli(host.path(), &["list", "-d", "0"]));
    assert_eq!(
        o,
        "/dev/nvidiactl\n/dev/nvidia-uvm\n/dev/nvidia-uvm-tools\n/dev/nvidia-modeset\n"
    );
}

#[test]
fn load_kmods_recreates_missing_and_wrong_nodes() {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    if !is_root() {
        return skip_or_fail("--load-kmods creates device nodes: needs root");
    }
    let host = TempDir::new("kmods");
    mock(host.path(), &["--gpus", "2"]);
    let dev = host.path().join("dev");
    std::fs::remove_file(dev.join("nvidia1")).unwrap();
    std::fs::remove_file(dev.join("nvidia-uvm")).unwrap();
    // A regular file where a node belongs is replaced, not trusted.
    std::fs::remove_file(dev.join("nvidia-uvm-tools")).unwrap();
    std::fs::write(dev.join("nvidia-uvm-tools"), "").unwrap();
    let before = ok(&cli(host.path(), &["list", "-d", "all"]));
    assert!(!before.contains("/dev/nvidia-uvm\n"));
    let after = ok(&cli(host.path(), &["--load-kmods", "list", "-d", "all"]));
    assert_eq!(
        after,
        "/dev/nvidiactl\n/dev/nvidia-uvm\n/dev/nvidia-uvm-tools\n/dev/nvidia-modeset\n/dev/nvidia0\n/dev/nvidia1\n"
    );
    for (name, major, minor) in [
        ("nvidia1", 195, 1),
        ("nvidia-uvm", 505, 0),
        ("nvidia-uvm-tools", 505, 1),
    ] {
        let md = std::fs::metadata(dev.join(name)).unwrap();
        assert!(md.file_type().is_char_device(), "{name}");
        let rdev = md.rdev();
        assert_eq!(((rdev >> 8) & 0xfff, rdev & 0xff), (major, minor), "{name}");
        assert_eq!(
            md.mode() & 0o777,
            0o666,
            "{name}: DeviceFileMode 438 from params"
        );
    }
    // A node with the wrong mode is repaired; one already right is not touched (its ctime
    // stays: no chmod/chown on every container start).
    std::fs::set_permissions(
        dev.join("nvidia0"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let ctl = std::fs::metadata(dev.join("nvidiactl")).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    ok(&cli(host.path(), &["--load-kmods", "info"]));
    let md = std::fs::metadata(dev.join("nvidia0")).unwrap();
    assert_eq!(md.mode() & 0o777, 0o666, "nvidia0 repaired");
    let again = std::fs::metadata(dev.join("nvidiactl")).unwrap();
    assert_eq!(
        (again.ctime(), again.ctime_nsec()),
        (ctl.ctime(), ctl.ctime_nsec()),
        "a correct node was rewritten"
    );
    // ModifyDeviceFiles: 0 means the driver's nodes are managed elsewhere: leave them alone.
    let params = host.path().join("proc/driver/nvidia/params");
    let text = std::fs::read_to_string(&params).unwrap();
    std::fs::write(
        &params,
        text.replace("ModifyDeviceFiles: 1", "ModifyDeviceFiles: 0"),
    )
    .unwrap();
    std::fs::remove_file(dev.join("nvidia0")).unwrap();
    ok(&cli(host.path(), &["--load-kmods", "info"]));
    assert!(!dev.join("nvidia0").exists());
}

#[test]
fn brands_and_architectures_by_model() {
    // Brands as `nvidia-smi -q` reports them for these boards on current drivers.
    for (model, brand, arch) in [
        ("t4", "Nvidia", "7.5"),
        ("v100", "Tesla", "7.0"),
        ("rtx4090", "GeForce", "8.9"),
        ("a100", "Nvidia", "8.0"),
        ("b200", "Nvidia", "10.0"),
    ] {
        let host = TempDir::new("brand");
        mock(host.path(), &["--gpus", "1", "--model", model]);
        let csv = ok(&cli(host.path(), &["info", "--csv"]));
        let row: Vec<&str> = csv.lines().nth(4).unwrap().split(',').collect();
        assert_eq!((row[3], row[6]), (brand, arch), "{model}");
    }
}

#[test]
fn mock_without_root_says_nodes_need_root() {
    if !is_root()
        || std::process::Command::new("setpriv")
            .arg("--version")
            .output()
            .is_err()
    {
        return skip_or_fail("needs root and setpriv to drop to nobody");
    }
    let dir = TempDir::new("nonroot");
    std::process::Command::new("chown")
        .arg("nobody")
        .arg(dir.path())
        .status()
        .unwrap();
    // The binary must be reachable by nobody: copy it into the world-readable temp dir.
    let bin_dir = dir.path().join("bin");
    std::fs::create_dir(&bin_dir).unwrap();
    std::fs::copy(nvbox(), bin_dir.join("nvbox")).unwrap();
    let host = dir.path().join("host");
    let o = std::process::Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
        .arg(bin_dir.join("nvbox"))
        .arg("mock")
        .arg(&host)
        .args(["--gpus", "1"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("device nodes need root"),
        "{}",
        stderr(&o)
    );
    // Everything else is there: the host answers `info`.
    assert_eq!(ok(&cli(&host, &["info"])), INFO_1GPU);
}
