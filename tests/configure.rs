//! `nvidia-container-cli configure`: the plan it prints with `--dry-run` for mock hosts
//! (what the live backend then applies; tests/live.rs and the e2e tests check that side), and
//! its argument and requirement errors.

mod common;

use std::path::Path;

use common::*;

/// A mock host and a rootfs directory beside it; the config points nvbox at the host.
struct Setup {
    dir: TempDir,
}

impl Setup {
    fn new(tag: &str, mock_args: &[&str], rootfs_files: &[&str]) -> Setup {
        let dir = TempDir::new(tag);
        let cfg = mock(&dir.path().join("host"), mock_args);
        std::fs::write(dir.path().join("config.toml"), cfg).unwrap();
        for f in rootfs_files {
            let p = dir.path().join("rootfs").join(f);
            if f.ends_with('/') {
                std::fs::create_dir_all(&p).unwrap();
            } else {
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::fs::write(&p, "").unwrap();
            }
        }
        std::fs::create_dir_all(dir.path().join("rootfs")).unwrap();
        Setup { dir }
    }

    fn rootfs(&self) -> String {
        self.dir.path().join("rootfs").display().to_string()
    }

    fn configure(&self, args: &[&str]) -> std::process::Output {
        command(nvbox())
            .env(
                "NVIDIA_CTK_CONFIG_FILE_PATH",
                self.dir.path().join("config.toml"),
            )
            .env("PATH", "/usr/bin:/bin")
            .args(["nvidia-container-cli", "configure"])
            .args(args)
            .output()
            .unwrap()
    }

    /// `configure --dry-run ARGS ROOTFS`, which must succeed.
    fn plan(&self, args: &[&str]) -> String {
        let rootfs = self.rootfs();
        let mut all = vec!["--dry-run"];
        all.extend_from_slice(args);
        all.push(&rootfs);
        let out = self.configure(&all);
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
    }
}

fn golden(name: &str, got: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("NVBOX_BLESS").is_some() {
        std::fs::write(&path, got).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(got, want, "plan differs from {}", path.display());
}

fn lines_with<'a>(plan: &'a str, needle: &str) -> Vec<&'a str> {
    plan.lines().filter(|l| l.contains(needle)).collect()
}

#[test]
fn plan_for_all_gpus_compute_utility_on_debian() {
    let s = Setup::new("cfg-debian", &["--gpus", "8"], &["etc/debian_version"]);
    let plan = s.plan(&["--device=all", "--compute", "--utility"]);
    golden("configure-h100-8gpu-debian.txt", &plan);
}

#[test]
fn plan_for_two_gpus_all_caps_compat32_without_debian_version() {
    let s = Setup::new("cfg-lib64", &["--gpus", "4"], &["usr/lib32/"]);
    let plan = s.plan(&[
        "--device=1,3",
        "-c",
        "-u",
        "-v",
        "-g",
        "-D",
        "-n",
        "--compat32",
    ]);
    golden("configure-h100-4gpu-allcaps-lib64.txt", &plan);
}

#[test]
fn lib32_dir_falls_back_to_usr_lib_unless_it_is_lib64() {
    let s = Setup::new("cfg-usrlib", &["--gpus", "1"], &["usr/lib/"]);
    let plan = s.plan(&["-c", "--compat32"]);
    assert!(
        plan.contains("bind /usr/lib/libcuda.so.535.104.05 "),
        "{plan}"
    );
    let s = Setup::new("cfg-usrlib64", &["--gpus", "1"], &["usr/lib64/"]);
    std::os::unix::fs::symlink("lib64", s.dir.path().join("rootfs/usr/lib")).unwrap();
    let plan = s.plan(&["-c", "--compat32"]);
    assert!(
        plan.contains("bind /usr/lib32/libcuda.so.535.104.05 "),
        "{plan}"
    );
}

#[test]
fn utility_only_brings_no_cuda_and_no_uvm() {
    let s = Setup::new("cfg-utility", &["--gpus", "2"], &[]);
    let plan = s.plan(&["--device=0", "--utility"]);
    assert!(plan.contains("libnvidia-ml.so.535.104.05"));
    assert!(!plan.contains("libcuda"), "{plan}");
    assert!(!plan.contains("nvidia-uvm"), "{plan}");
    assert!(!plan.contains("nvidia-cuda-mps"), "{plan}");
    assert_eq!(
        lines_with(&plan, "cgroup"),
        ["cgroup c 195:255 rw", "cgroup c 195:0 rw"]
    );
}

#[test]
fn none_means_driver_without_gpus() {
    let s = Setup::new("cfg-none", &["--gpus", "2"], &[]);
    let plan = s.plan(&["--compute"]);
    assert!(plan.contains("device /dev/nvidiactl "));
    assert!(!plan.contains("/dev/nvidia0"), "{plan}");
    assert!(!plan.contains("/proc/driver/nvidia/gpus"), "{plan}");
}

#[test]
fn mig_device_brings_its_caps_and_access_files() {
    let s = Setup::new("cfg-mig", &["--gpus", "2", "--mig", "2"], &[]);
    let plan = s.plan(&["--device=0:1", "--utility"]);
    golden("configure-mig-0-1.txt", &plan);
    let all = s.plan(&["--device=all", "--mig-config=all", "--utility"]);
    assert!(
        all.contains("bind /proc/driver/nvidia/capabilities <- proc-root:/proc/driver/nvidia/capabilities (ro,nosuid,nodev,noexec)"),
        "{all}"
    );
    assert!(all.contains("bind /dev/nvidia-caps <- dev-root:/dev/nvidia-caps (nosuid,noexec)"));
    let err = s.configure(&["--device=0:1", "--mig-config=all", &s.rootfs()]);
    assert_eq!(
        stderr(&err),
        "nvidia-container-cli: mig-config error: cannot enable mig-config with specific MIG devices selected\n"
    );
}

#[test]
fn no_devbind_and_no_cgroups() {
    let s = Setup::new("cfg-flags", &["--gpus", "1"], &[]);
    let plan = s.plan(&["--device=0", "--no-devbind", "--utility"]);
    assert!(!plan.contains("device "), "{plan}");
    assert_eq!(
        lines_with(&plan, "cgroup"),
        ["cgroup c 195:255 rw", "cgroup c 195:0 rw"]
    );
    let plan = s.plan(&["--device=0", "--no-cgroups", "--utility"]);
    assert!(plan.contains("device /dev/nvidia0 "));
    assert!(!plan.contains("cgroup"), "{plan}");
}

#[test]
fn imex_channels_exist_or_fail() {
    let s = Setup::new("cfg-imex", &["--gpus", "1"], &[]);
    let plan = s.plan(&["--imex-channel=0", "--utility"]);
    assert!(plan.contains("device /dev/nvidia-caps-imex-channels/channel0 <- dev-root:/dev/nvidia-caps-imex-channels/channel0 (c 234:0)"), "{plan}");
    let out = s.configure(&["--dry-run", "--imex-channel=7", &s.rootfs()]);
    assert_eq!(
        stderr(&out),
        "nvidia-container-cli: mount error: missing IMEX channel device node: /dev/nvidia-caps-imex-channels/channel7\n"
    );
}

#[test]
fn compat_libs_from_the_image() {
    let s = Setup::new(
        "cfg-compat",
        &["--gpus", "1"],
        &["etc/debian_version", "usr/local/cuda-12.8/compat/"],
    );
    let compat = s.dir.path().join("rootfs/usr/local/cuda-12.8/compat");
    // Not ELF files: the soname then falls back to the file name, which is enough here.
    std::fs::write(compat.join("libcuda.so.570.124.06"), "").unwrap();
    std::fs::write(compat.join("libcuda.so.535.1"), "").unwrap();
    std::os::unix::fs::symlink("cuda-12.8", s.dir.path().join("rootfs/usr/local/cuda")).unwrap();
    let plan = s.plan(&["-c", "--cuda-compat-mode=mount"]);
    assert_eq!(
        lines_with(&plan, "rootfs:"),
        [
            "bind /usr/lib/x86_64-linux-gnu/libcuda.so.570.124.06 <- rootfs:/usr/local/cuda-12.8/compat/libcuda.so.570.124.06 (ro,nosuid,nodev)"
        ]
    );
    let plan = s.plan(&["-c", "--cuda-compat-mode=ldconfig"]);
    assert!(!plan.contains("rootfs:"), "{plan}");
    assert!(
        plan.contains("ldcache-dir /usr/local/cuda-12.8/compat\n"),
        "{plan}"
    );
    let plan = s.plan(&["-c", "--cuda-compat-mode=disabled"]);
    assert!(!plan.contains("compat"), "{plan}");
}

#[test]
fn requirements_are_checked_before_anything_is_done() {
    let s = Setup::new("cfg-require", &["--gpus", "1"], &[]);
    let rootfs = s.rootfs();
    let out = s.configure(&["--device=0", "--require=cuda>=99.0", "-c", &rootfs]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "nvidia-container-cli: requirement error: unsatisfied condition: cuda>=99.0, please update your driver to a newer version, or use an earlier cuda container\n"
    );
    let out = s.configure(&[
        "--dry-run",
        "--device=0",
        "--require=cuda>=12.0 brand=tesla",
        "--require=arch>=9.0",
        &rootfs,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = s.configure(&["--device=0", "--require=brand==tesla", &rootfs]);
    assert_eq!(
        stderr(&out),
        "nvidia-container-cli: requirement error: invalid expression\n"
    );
}

#[test]
fn argument_errors() {
    let s = Setup::new("cfg-args", &["--gpus", "1"], &[]);
    for (args, want) in [
        (
            vec![],
            "nvidia-container-cli: input error: missing ROOTFS argument\n",
        ),
        (
            vec!["/"],
            "nvidia-container-cli: input error: invalid rootfs directory\n",
        ),
        (
            vec!["relative"],
            "nvidia-container-cli: input error: invalid rootfs directory\n",
        ),
        (
            vec!["/a", "/b"],
            "nvidia-container-cli: input error: too many arguments\n",
        ),
        (
            vec!["--pid=x", "/a"],
            "nvidia-container-cli: input error: invalid pid: x\n",
        ),
        (
            vec!["--cuda-compat-mode=x", "/a"],
            "nvidia-container-cli: input error: invalid cuda-compat-mode: x (mount, ldconfig or disabled)\n",
        ),
        (
            vec!["--device=9", "/a"],
            "nvidia-container-cli: device error: 9: unknown device\n",
        ),
    ] {
        let out = s.configure(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert_eq!(stderr(&out), want, "{args:?}");
    }
}
