//! The live backend against hostile rootfs trees: a private mount namespace holding a tmpfs
//! rootfs seeded with symlinks that point out of it; `nvidia-container-cli configure --pid`
//! must keep every directory, file and mount inside the rootfs, and undo everything when a
//! step fails.

mod common;

use std::path::{Path, PathBuf};

use common::sandbox::Sandbox;
use common::*;

fn configure(cfg: &Path, sandbox: &Sandbox, extra_env: &[(&str, &str)]) -> std::process::Output {
    configure_with(cfg, sandbox, extra_env, &[])
}

fn configure_with(
    cfg: &Path,
    sandbox: &Sandbox,
    extra_env: &[(&str, &str)],
    extra_args: &[&str],
) -> std::process::Output {
    let mut c = command(nvbox());
    c.env("NVIDIA_CTK_CONFIG_FILE_PATH", cfg);
    for (k, v) in extra_env {
        c.env(k, v);
    }
    c.args([
        "nvidia-container-cli",
        "configure",
        "--no-cgroups",
        "--device=all",
        "--compute",
        "--utility",
    ])
    .args(extra_args)
    .args(["--pid", &sandbox.pid(), sandbox.root.to_str().unwrap()])
    .output()
    .unwrap()
}

struct Fixture {
    dir: TempDir,
    cfg: PathBuf,
}

fn fixture(tag: &str) -> Option<Fixture> {
    if !is_root() {
        skip_or_fail("live mount tests need root");
        return None;
    }
    let dir = TempDir::new(tag);
    let text = mock(&dir.path().join("host"), &["--gpus", "2"]);
    let cfg = dir.path().join("config.toml");
    std::fs::write(&cfg, text).unwrap();
    std::fs::create_dir_all(dir.path().join("outside")).unwrap();
    Some(Fixture { dir, cfg })
}

fn assert_nothing_outside(f: &Fixture, sb: &Sandbox, before: &[String]) {
    let outside = f.dir.path().join("outside");
    let leaked: Vec<_> = std::fs::read_dir(&outside).unwrap().flatten().collect();
    assert!(leaked.is_empty(), "created outside the rootfs: {leaked:?}");
    let root = sb.root.to_str().unwrap();
    for m in sb.mounts() {
        if !before.contains(&m) {
            assert!(
                m.starts_with(&format!("{root}/")),
                "mount outside the rootfs: {m}"
            );
        }
    }
}

#[test]
fn benign_rootfs_gets_the_driver() {
    let Some(f) = fixture("live-benign") else {
        return;
    };
    let sb = Sandbox::new(
        &f.dir.path().join("rootfs"),
        "mkdir -p etc && touch etc/debian_version",
    );
    let before = sb.mounts();
    let out = configure_with(&f.cfg, &sb, &[], &["--graphics"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let r = sb.root.display();
    let profile = sb.sh(&format!(
        "cat {r}/etc/nvidia/nvidia-application-profiles-rc.d/10-container.conf"
    ));
    assert!(
        profile.contains("\"EGLVisibleDGPUDevices\", 0x3]"),
        "{profile}"
    );
    let got = sb.sh(&format!(
        "stat -c '%F %t:%T' {r}/dev/nvidia1 {r}/dev/nvidiactl; readlink {r}/usr/lib/x86_64-linux-gnu/libcuda.so.1; grep ModifyDeviceFiles {r}/proc/driver/nvidia/params"
    ));
    assert_eq!(
        got,
        "character special file c3:1\ncharacter special file c3:ff\nlibcuda.so.535.104.05\nModifyDeviceFiles: 0\n"
    );
    assert_nothing_outside(&f, &sb, &before);
}

#[test]
fn legacy_mount_path_gives_the_same_result() {
    let Some(f) = fixture("live-legacy") else {
        return;
    };
    let sb = Sandbox::new(&f.dir.path().join("rootfs"), "true");
    let before = sb.mounts();
    let out = configure(&f.cfg, &sb, &[("NVBOX_MOUNT_API", "legacy")]);
    assert!(out.status.success(), "{}", stderr(&out));
    let r = sb.root.display();
    let got = sb.sh(&format!(
        "stat -c '%t:%T' {r}/dev/nvidia0; grep ' {r}/usr/lib64/libcuda.so.535.104.05 ' /proc/self/mountinfo | cut -d' ' -f6"
    ));
    assert_eq!(got, "c3:0\nro,nosuid,nodev,relatime\n");
    assert_nothing_outside(&f, &sb, &before);
}

#[test]
fn symlinks_out_of_the_rootfs_resolve_inside_it() {
    let Some(f) = fixture("live-hostile") else {
        return;
    };
    let outside = f.dir.path().join("outside");
    let o = outside.display();
    let host_cache = std::fs::read("/etc/ld.so.cache").ok();
    let seed = format!(
        "mkdir -p usr proc && ln -s / etc && touch debian_version \
         && mkdir -p usr/lib && ln -s {o} usr/lib/x86_64-linux-gnu \
         && ln -s ../../../../../../../../..{o} usr/bin \
         && ln -s {o} proc/driver && ln -s ../../..{o} dev \
         && mkdir -p lib && ln -s /../../../{o} lib/firmware"
    );
    let sb = Sandbox::new(&f.dir.path().join("rootfs"), &seed);
    let before = sb.mounts();
    let out = configure(&f.cfg, &sb, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_nothing_outside(&f, &sb, &before);
    assert_eq!(std::fs::read("/etc/ld.so.cache").ok(), host_cache);
    // Everything landed under the rootfs's own copy of the outside path.
    let r = sb.root.display();
    let got = sb.sh(&format!(
        "stat -c '%t:%T' {r}{o}/nvidia0; ls {r}{o}/libcuda.so.535.104.05 {r}{o}/nvidia-smi {r}/ld.so.cache"
    ));
    assert_eq!(
        got,
        format!("c3:0\n{r}/ld.so.cache\n{r}{o}/libcuda.so.535.104.05\n{r}{o}/nvidia-smi\n")
    );
}

#[test]
fn a_planted_symlink_target_fails_and_everything_is_undone() {
    let Some(f) = fixture("live-planted") else {
        return;
    };
    let o = f.dir.path().join("outside");
    let seed = format!(
        "mkdir -p usr/bin proc && ln -s {}/evil usr/bin/nvidia-debugdump",
        o.display()
    );
    let sb = Sandbox::new(&f.dir.path().join("rootfs"), &seed);
    let before = sb.mounts();
    let out = configure(&f.cfg, &sb, &[]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.starts_with("nvidia-container-cli: mount error: mount nvidia-debugdump into /usr/bin:"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(sb.mounts(), before, "mounts left behind after a failure");
    let r = sb.root.display();
    // The placeholder made for the binary before it was refused is gone; the planted link stays.
    let got = sb.sh(&format!(
        "ls {r}/usr/bin; ls -A {r}/proc; test -e {r}/dev && echo dev-exists"
    ));
    assert_eq!(got, "nvidia-debugdump\n");
    assert_nothing_outside(&f, &sb, &before);
}

#[test]
fn ldconfig_mode_runs_the_hosts_ldconfig_from_a_sealed_copy() {
    let Some(f) = fixture("live-ldconfig") else {
        return;
    };
    let Some(ldconfig) = ["/sbin/ldconfig", "/usr/sbin/ldconfig"]
        .into_iter()
        .find(|p| Path::new(p).exists())
    else {
        skip_or_fail("no ldconfig on this host");
        return;
    };
    let mut cfg = std::fs::read_to_string(&f.cfg).unwrap();
    cfg.push_str("ldcache = \"ldconfig\"\n");
    std::fs::write(&f.cfg, cfg).unwrap();
    let sb = Sandbox::new(
        &f.dir.path().join("rootfs"),
        "mkdir -p etc && touch etc/debian_version etc/ld.so.conf",
    );
    let before = sb.mounts();
    // Without --ldconfig the image's own /sbin/ldconfig is meant; busybox has none, which
    // upstream treats as "nothing to do".
    let out = configure(&f.cfg, &sb, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let r = sb.root.display();
    assert_eq!(
        sb.sh(&format!("ls {r}/etc")),
        "debian_version\nld.so.conf\n"
    );
    let host = format!("--ldconfig=@{ldconfig}");
    let out = configure_with(&f.cfg, &sb, &[], &[&host]);
    assert!(out.status.success(), "{}", stderr(&out));
    // ldconfig made the soname link and the cache, from inside the rootfs.
    let got = sb.sh(&format!(
        "readlink {r}/usr/lib/x86_64-linux-gnu/libcuda.so.1; {ldconfig} -p -C {r}/etc/ld.so.cache | grep -c 'libcuda.so.1 (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libcuda.so.1'"
    ));
    assert_eq!(got, "libcuda.so.535.104.05\n1\n");
    assert_nothing_outside(&f, &sb, &before);
}
