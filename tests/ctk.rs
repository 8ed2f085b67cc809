//! `nvidia-ctk`: the command groups, `config` and `system` (runtime configure and cdi have
//! their own test files).

mod common;

use std::path::Path;

use common::*;

fn ctk(args: &[&str]) -> std::process::Output {
    command(nvbox())
        .arg("nvidia-ctk")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn version_help_and_unknown_commands() {
    let out = ctk(&["--version"]);
    assert!(out.status.success());
    assert!(stdout(&out).starts_with("NVIDIA Container Toolkit CLI version "));
    let out = ctk(&[]);
    assert!(stdout(&out).contains("COMMANDS:"));
    let out = ctk(&["bogus"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).starts_with("nvidia-ctk: No help topic for 'bogus'"));
}

#[test]
fn config_writes_the_default_file_and_edits_it_in_place() {
    let dir = TempDir::new("ctk-config");
    let file = dir.path().join("etc/config.toml");
    let f = file.to_str().unwrap();
    // A missing file is written whole (the packages' postinst).
    let out = ctk(&["config", "--config-file", f, "--in-place"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.starts_with("#accept-nvidia-visible-devices-as-volume-mounts = false\n"),
        "{text}"
    );
    assert!(
        text.contains("\n[nvidia-container-runtime.modes.cdi]\n"),
        "{text}"
    );
    let out = ctk(&[
        "config",
        "-c",
        f,
        "--set",
        "nvidia-container-cli.no-cgroups",
        "--set=nvidia-container-runtime.mode=cdi",
        "-i",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("\nno-cgroups = true\n"), "{text}");
    assert!(text.contains("\nmode = \"cdi\"\n"), "{text}");
    // The result is what every applet then reads.
    let out = command(nvbox())
        .env("NVIDIA_CTK_CONFIG_FILE_PATH", &file)
        .args(["nvidia-ctk", "config"])
        .output()
        .unwrap();
    assert_eq!(stdout(&out), text);
    let out = ctk(&["config", "-c", f, "--set", "nvidia-container-cli.bogus=1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("invalid config option"),
        "{}",
        stderr(&out)
    );
    let out = ctk(&[
        "config",
        "-c",
        f,
        "--set",
        "nvidia-container-runtime.mode=fast",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("nvidia-container-runtime.mode"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn system_links_and_nodes_on_a_mock_host() {
    if !is_root() {
        skip_or_fail("mock device nodes need root");
        return;
    }
    let dir = TempDir::new("ctk-system");
    let host = dir.path().join("host");
    mock(&host, &["--gpus", "2"]);
    let h = host.to_str().unwrap();
    let out = ctk(&["system", "create-dev-char-symlinks", "--dev-root", h]);
    assert!(out.status.success(), "{}", stderr(&out));
    let link = |n: &str| std::fs::read_link(host.join("dev/char").join(n)).unwrap();
    assert_eq!(link("195:0"), Path::new("../nvidia0"));
    assert_eq!(link("195:255"), Path::new("../nvidiactl"));
    assert_eq!(link("505:1"), Path::new("../nvidia-uvm-tools"));
    // Idempotent, and a wrong link is replaced.
    std::fs::remove_file(host.join("dev/char/195:0")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", host.join("dev/char/195:0")).unwrap();
    let out = ctk(&["system", "create-dev-char-symlinks", "--dev-root", h]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(link("195:0"), Path::new("../nvidia0"));

    std::fs::remove_file(host.join("dev/nvidia-uvm")).unwrap();
    std::fs::write(host.join("dev/nvidiactl.bak"), "").unwrap();
    let out = ctk(&[
        "system",
        "create-device-nodes",
        "--control-devices",
        "--dev-root",
        h,
        "--proc-root",
        h,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let meta = std::fs::metadata(host.join("dev/nvidia-uvm")).unwrap();
    assert!(meta.file_type().is_char_device());
    assert_eq!(meta.rdev(), nix_makedev(505, 0));
}

fn nix_makedev(major: u64, minor: u64) -> u64 {
    ((major & 0xfffff000) << 32)
        | ((major & 0xfff) << 8)
        | ((minor & 0xffffff00) << 12)
        | (minor & 0xff)
}

#[test]
fn config_honours_the_global_config_flag() {
    let dir = TempDir::new("ctk-config-global");
    let file = dir.path().join("config.toml");
    let f = format!("--config={}", file.display());
    let out = ctk(&[
        &f,
        "config",
        "--set",
        "nvidia-container-runtime.mode=legacy",
        "-i",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("\nmode = \"legacy\"\n"), "{text}");
}
