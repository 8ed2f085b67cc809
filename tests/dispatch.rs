//! How the binary is reached: by symlink name, as `nvbox APPLET`, and what happens otherwise.

mod common;

use common::*;
use std::os::unix::fs::symlink;
use std::process::Command;

#[test]
fn list_prints_one_applet_per_line() {
    let out = Command::new(nvbox()).arg("--list").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        stdout(&out),
        "nvidia-cdi-hook\nnvidia-container-cli\nnvidia-container-runtime\nnvidia-container-runtime.cdi\nnvidia-container-runtime.legacy\nnvidia-container-runtime-hook\nnvidia-container-toolkit\nnvidia-ctk\nnvidia-ctk-installer\nnvidia-docker\n"
    );
}

#[test]
fn version_and_help_on_nvbox() {
    let out = Command::new(nvbox()).arg("--version").output().unwrap();
    assert!(out.status.success());
    let v = stdout(&out);
    assert!(
        v.starts_with(&format!("nvbox {} (commit ", env!("CARGO_PKG_VERSION"))),
        "{v}"
    );
    let out = Command::new(nvbox()).arg("--help").output().unwrap();
    assert!(out.status.success());
    assert!(stdout(&out).contains("nvidia-container-cli"));
    assert!(stdout(&out).contains("mock"));
}

#[test]
fn no_arguments_is_a_usage_error() {
    let out = Command::new(nvbox()).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).starts_with("Usage: nvbox"));
}

#[test]
fn symlink_name_selects_the_applet() {
    let dir = TempDir::new("dispatch");
    for name in ["nvidia-container-cli", "-nvidia-container-cli"] {
        let link = dir.path().join(name);
        symlink(nvbox(), &link).unwrap();
        let out = Command::new(&link).arg("--version").output().unwrap();
        assert!(out.status.success(), "{name}");
        assert!(
            stdout(&out).starts_with("cli-version: "),
            "{name}: {}",
            stdout(&out)
        );
    }
    // The applet is also reachable through nvbox itself.
    let out = Command::new(nvbox())
        .args(["nvidia-container-cli", "--version"])
        .output()
        .unwrap();
    assert!(stdout(&out).contains("build revision: "));
}

#[test]
fn unknown_names_exit_127() {
    let dir = TempDir::new("dispatch-unknown");
    // A prefix of a real applet name must not match it.
    for name in ["nvidia-container", "nvidia-container-cli2", "mock"] {
        let link = dir.path().join(name);
        symlink(nvbox(), &link).unwrap();
        let out = Command::new(&link).arg("info").output().unwrap();
        assert_eq!(out.status.code(), Some(127), "{name}");
        assert_eq!(
            stderr(&out),
            format!("nvbox: unknown applet '{name}' (nvbox --list shows the applets)\n")
        );
    }
    let out = Command::new(nvbox()).arg("bogus").output().unwrap();
    assert_eq!(out.status.code(), Some(127));
    assert_eq!(stderr(&out).lines().count(), 1);
}

#[test]
fn every_applet_and_command_has_help_and_version() {
    for name in ["nvidia-container-cli", "mock"] {
        for flag in ["--help", "--version"] {
            let out = Command::new(nvbox()).args([name, flag]).output().unwrap();
            assert!(out.status.success(), "{name} {flag}: {}", stderr(&out));
            assert!(!stdout(&out).is_empty(), "{name} {flag}");
        }
    }
    for sub in ["info", "list"] {
        let out = Command::new(nvbox())
            .args(["nvidia-container-cli", sub, "--help"])
            .output()
            .unwrap();
        assert!(out.status.success());
        assert!(stdout(&out).starts_with(&format!("Usage: nvidia-container-cli {sub}")));
    }
}

#[test]
fn unknown_cli_command_and_option() {
    let out = command(nvbox())
        .args(["nvidia-container-cli", "frobnicate"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).starts_with("nvidia-container-cli: unknown command 'frobnicate'\n"));
    let out = command(nvbox())
        .args(["nvidia-container-cli", "--bogus", "info"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "nvidia-container-cli: input error: invalid option '--bogus'\n"
    );
}

#[test]
fn symlinks_sh_installs_and_removes_exactly_the_applets() {
    let mut shells = vec!["sh"];
    if std::path::Path::new("/bin/busybox").exists() {
        shells.push("/bin/busybox");
    } else {
        skip_or_fail("busybox not installed (the test command installs busybox-static)");
    }
    for shell in shells {
        let dir = TempDir::new("symlinks");
        let d = dir.path().to_str().unwrap();
        let args: Vec<&str> = if shell == "/bin/busybox" {
            vec!["sh"]
        } else {
            vec![]
        };
        let run = |extra: &[&str]| {
            let mut a = args.clone();
            a.push(concat!(env!("CARGO_MANIFEST_DIR"), "/symlinks.sh"));
            a.extend_from_slice(extra);
            Command::new(shell).args(&a).output().unwrap()
        };
        // A file that is not ours, with an applet-like name, must survive --remove.
        std::fs::write(dir.path().join("unrelated"), "x").unwrap();
        for _ in 0..2 {
            let out = run(&["--binary", nvbox(), d]);
            assert!(out.status.success(), "{shell}: {}", stderr(&out));
        }
        let link = dir.path().join("nvidia-container-cli");
        assert_eq!(
            std::fs::read_link(&link).unwrap(),
            std::path::Path::new(nvbox())
        );
        let out = Command::new(&link).arg("--version").output().unwrap();
        assert!(stdout(&out).starts_with("cli-version: "));
        let out = run(&["--binary", nvbox(), "--remove", d]);
        assert!(out.status.success());
        assert!(!link.exists() && link.symlink_metadata().is_err());
        assert!(dir.path().join("unrelated").exists());
    }
}
