//! Hostile images against every privileged step (CVE-2025-23266 class): an image whose
//! environment sets `LD_PRELOAD` (and `LD_LIBRARY_PATH`) to its own library, reached through
//! `/proc/self/cwd` the way upstream's exploit did (hooks run with the rootfs as cwd). Nothing
//! of the image may run on the host: the legacy prestart hook, the runtime shim's jit-cdi hooks
//! and the ldconfig run must all leave the marker file uncreated.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::container::*;
use common::engines::*;
use common::*;

/// A shared library whose constructor writes `marker` — what an attacker's payload would do.
fn payload(dir: &Path, marker: &Path) -> Option<PathBuf> {
    let src = dir.join("poc.c");
    std::fs::write(
        &src,
        format!(
            "#include <fcntl.h>\n#include <unistd.h>\n\
             __attribute__((constructor)) static void owned(void) {{\n\
             int fd = open(\"{}\", O_CREAT | O_WRONLY | O_APPEND, 0644);\n\
             if (fd >= 0) {{ write(fd, \"owned\\n\", 6); close(fd); }}\n}}\n",
            marker.display()
        ),
    )
    .unwrap();
    let so = dir.join("poc.so");
    let ok = Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&so)
        .arg(&src)
        .status()
        .is_ok_and(|s| s.success());
    ok.then_some(so)
}

struct Attack {
    _dir: TempDir,
    marker: PathBuf,
    so: PathBuf,
}

fn attack(tag: &str) -> Option<Attack> {
    if !have_prerequisites(&[RUNC, BUSYBOX]) {
        return None;
    }
    let dir = TempDir::new(tag);
    let marker = dir.path().join("owned");
    let Some(so) = payload(dir.path(), &marker) else {
        skip_or_fail("no C compiler to build the payload library");
        return None;
    };
    // The payload works: a dynamic host program does load it.
    let probe = Command::new("/bin/true")
        .env("LD_PRELOAD", &so)
        .status()
        .unwrap();
    assert!(probe.success());
    assert!(marker.exists(), "the payload library does not run at all");
    std::fs::remove_file(&marker).unwrap();
    Some(Attack {
        _dir: dir,
        marker,
        so,
    })
}

/// A GPU bundle carrying the payload at its root and the variables that point at it.
fn hostile_bundle(a: &Attack) -> Bundle {
    let mut bundle = Bundle::new(true);
    std::fs::copy(&a.so, bundle.rootfs.join("poc.so")).unwrap();
    bundle.script("true");
    bundle.env(&[
        "NVIDIA_VISIBLE_DEVICES=all",
        "LD_PRELOAD=/proc/self/cwd/poc.so",
        "LD_LIBRARY_PATH=/proc/self/cwd",
    ]);
    bundle
}

#[test]
fn legacy_hook_runs_nothing_from_the_image() {
    let Some(a) = attack("sec-legacy") else {
        return;
    };
    let host = shared_host(&["--gpus", "2"]);
    let mut bundle = hostile_bundle(&a);
    bundle.hook(host);
    let run = run_runc(&mut bundle);
    assert!(run.created, "{}", run.create_stderr);
    assert!(!a.marker.exists(), "the image's LD_PRELOAD ran on the host");
}

#[test]
fn jit_cdi_hooks_run_nothing_from_the_image() {
    let Some(a) = attack("sec-jit") else {
        return;
    };
    let host = shared_host(&["--gpus", "2"]);
    let config = ShimConfig::mode(host, "jit-cdi");
    let mut bundle = hostile_bundle(&a);
    let run = run_shim(&mut bundle, &config.path, &[]);
    assert!(run.created, "{}", run.create_stderr);
    assert!(!a.marker.exists(), "the image's LD_PRELOAD ran on the host");
}

#[test]
fn ldconfig_mode_runs_nothing_from_the_image() {
    let Some(a) = attack("sec-ldconfig") else {
        return;
    };
    let host = shared_host(&["--gpus", "2"]);
    let mut cfg = std::fs::read_to_string(&host.config).unwrap();
    cfg = cfg.replace(
        "[nvidia-container-cli]\n",
        "[nvidia-container-cli]\nldconfig = \"@/sbin/ldconfig\"\n",
    );
    cfg.push_str("ldcache = \"ldconfig\"\n");
    let config = ShimConfig::new(host, "");
    std::fs::write(&config.path, format!("{cfg}\n{}", mode_toml("legacy"))).unwrap();
    let mut bundle = hostile_bundle(&a);
    let run = run_shim(&mut bundle, &config.path, &[]);
    assert!(run.created, "{}", run.create_stderr);
    assert!(!a.marker.exists(), "the image's LD_PRELOAD ran on the host");
}
