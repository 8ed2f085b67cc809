//! `nvidia-cdi-hook` against rootfs directories: each hook's effect, and hostile layouts
//! (parents and /etc symlinked to `/` or `../../`, a cache symlinked to a host file,
//! `/usr/local/cuda -> /`) that must change nothing outside the rootfs. The params mount runs
//! in a private mount namespace with a fake `/proc/driver/nvidia`.

mod common;

use std::io::Write;
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::*;

#[path = "cdi_hook/compat.rs"]
mod compat;
#[path = "cdi_hook/ldcache.rs"]
mod ldcache;

/// A bundle (config.json with a relative root.path) beside a directory that must stay untouched.
struct Fixture {
    dir: TempDir,
}

impl Fixture {
    fn new(tag: &str) -> Fixture {
        let dir = TempDir::new(tag);
        let bundle = dir.path().join("bundle");
        std::fs::create_dir_all(bundle.join("rootfs")).unwrap();
        std::fs::create_dir_all(dir.path().join("outside")).unwrap();
        std::fs::write(dir.path().join("outside/sentinel"), "keep").unwrap();
        let spec = serde_json::json!({"ociVersion": "1.0.2", "process": {"env": []}, "root": {"path": "rootfs"}});
        std::fs::write(bundle.join("config.json"), spec.to_string()).unwrap();
        Fixture { dir }
    }

    fn bundle(&self) -> PathBuf {
        self.dir.path().join("bundle")
    }

    fn root(&self) -> PathBuf {
        self.bundle().join("rootfs")
    }

    fn outside(&self) -> PathBuf {
        self.dir.path().join("outside")
    }

    fn state(&self) -> String {
        serde_json::json!({"ociVersion": "1.0.2", "id": "t", "status": "creating", "pid": std::process::id(), "bundle": self.bundle()}).to_string()
    }

    fn hook(&self, args: &[&str]) -> Output {
        run_hook(args, &self.state())
    }

    fn assert_outside_untouched(&self) {
        let names: Vec<_> = std::fs::read_dir(self.outside())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, ["sentinel"], "created outside the rootfs");
        assert_eq!(
            std::fs::read_to_string(self.outside().join("sentinel")).unwrap(),
            "keep"
        );
    }
}

fn run_hook(args: &[&str], stdin: &str) -> Output {
    let mut child = command(nvbox())
        .arg("nvidia-cdi-hook")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    child.wait_with_output().unwrap()
}

fn ok(o: &Output) {
    assert!(o.status.success(), "hook failed: {}", stderr(o));
}

fn link_of(p: &Path) -> String {
    std::fs::read_link(p)
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

fn files_in(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn unknown_hooks_and_flags_before_a_hook_are_warnings() {
    let o = run_hook(&["frobnicate", "--x"], "");
    assert!(o.status.success());
    assert!(
        stderr(&o).contains("Unsupported CDI hook: frobnicate"),
        "{}",
        stderr(&o)
    );
    let o = run_hook(&[], "");
    assert!(o.status.success());
    assert!(stderr(&o).contains("No CDI hook specified"));
    let o = run_hook(&["--future-flag", "create-symlinks"], "");
    assert!(o.status.success());
    assert!(!stderr(&o).is_empty());
    let o = run_hook(&["noop"], "");
    assert!(o.status.success());
    // A known hook with a flag it does not take is an error.
    let o = run_hook(&["chmod", "--bogus", "x"], "");
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("flag provided but not defined: -bogus"));
}

#[test]
fn help_and_version() {
    let o = run_hook(&["--help"], "");
    ok(&o);
    for h in [
        "create-symlinks",
        "update-ldcache",
        "enable-cuda-compat",
        "chmod",
    ] {
        assert!(stdout(&o).contains(h), "{h} missing from help");
    }
    let o = run_hook(&["--version"], "");
    ok(&o);
    assert!(stdout(&o).contains("version"));
    let o = run_hook(&["create-symlinks", "--help"], "");
    ok(&o);
    assert!(stdout(&o).contains("--link"));
}

#[test]
fn create_symlinks_writes_targets_verbatim() {
    let f = Fixture::new("links");
    let o = f.hook(&[
        "create-symlinks",
        "--link",
        "libcuda.so.1::/usr/lib/x86_64-linux-gnu/libcuda.so",
        "--link=/usr/lib/nvbox-absent/libfoo.so.1::/usr/lib/libfoo.so",
        "-link",
        "libcuda.so.1::/usr/lib/x86_64-linux-gnu/libcuda.so",
    ]);
    ok(&o);
    let r = f.root();
    assert_eq!(
        link_of(&r.join("usr/lib/x86_64-linux-gnu/libcuda.so")),
        "libcuda.so.1"
    );
    assert_eq!(
        link_of(&r.join("usr/lib/libfoo.so")),
        "/usr/lib/nvbox-absent/libfoo.so.1"
    );
    // The absolute target is neither created in the rootfs nor on the host.
    assert!(!r.join("usr/lib/nvbox-absent").exists());
    assert!(!Path::new("/usr/lib/nvbox-absent").exists());
    let bad = f.hook(&["create-symlinks", "--link", "a::b::c"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(stderr(&bad).contains("invalid symlink specification a::b::c"));
}

#[test]
fn create_symlinks_keeps_a_correct_link_and_replaces_others() {
    let f = Fixture::new("links-replace");
    let dir = f.root().join("usr/lib");
    std::fs::create_dir_all(&dir).unwrap();
    symlink("libcuda.so.1", dir.join("same")).unwrap();
    symlink("libold.so.1", dir.join("other")).unwrap();
    std::fs::write(dir.join("file"), "x").unwrap();
    let ino = std::fs::symlink_metadata(dir.join("same")).unwrap().ino();
    ok(&f.hook(&[
        "create-symlinks",
        "--link=libcuda.so.1::/usr/lib/same",
        "--link=libnew.so.1::/usr/lib/other",
        "--link=libnew.so.1::/usr/lib/file",
    ]));
    assert_eq!(
        std::fs::symlink_metadata(dir.join("same")).unwrap().ino(),
        ino
    );
    assert_eq!(link_of(&dir.join("other")), "libnew.so.1");
    assert_eq!(link_of(&dir.join("file")), "libnew.so.1");
    // No temporary names left behind.
    let names: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().collect();
    assert_eq!(names.len(), 3);
}

#[test]
fn create_symlinks_resolves_hostile_parents_inside_the_root() {
    let f = Fixture::new("links-hostile");
    let r = f.root();
    std::fs::create_dir_all(r.join("usr")).unwrap();
    symlink("/", r.join("usr/lib64")).unwrap();
    symlink("../../../../../../..", r.join("usr/up")).unwrap();
    // An absolute link to the host's outside directory means the rootfs's own path.
    symlink(f.outside(), r.join("out")).unwrap();
    ok(&f.hook(&[
        "create-symlinks",
        "--link=t1::/usr/lib64/nvbox-cdi-test-a/l1",
        "--link=t2::/usr/up/nvbox-cdi-test-b/l2",
        "--link=t3::/out/l3",
    ]));
    assert_eq!(link_of(&r.join("nvbox-cdi-test-a/l1")), "t1");
    assert_eq!(link_of(&r.join("nvbox-cdi-test-b/l2")), "t2");
    let inside_outside = r.join(f.outside().strip_prefix("/").unwrap());
    assert_eq!(link_of(&inside_outside.join("l3")), "t3");
    assert!(!Path::new("/nvbox-cdi-test-a").exists());
    assert!(!Path::new("/nvbox-cdi-test-b").exists());
    f.assert_outside_untouched();
}

#[test]
fn the_root_comes_from_the_state_or_a_spec_file() {
    let f = Fixture::new("root-source");
    // crun's `root` in the state wins over config.json.
    let other = f.dir.path().join("other-root");
    std::fs::create_dir_all(&other).unwrap();
    let state = serde_json::json!({"ociVersion": "1.0.2", "id": "t", "pid": 1, "bundle": f.bundle(), "root": other});
    ok(&run_hook(
        &["create-symlinks", "--link=t::/l"],
        &state.to_string(),
    ));
    assert_eq!(link_of(&other.join("l")), "t");
    assert!(!f.root().join("l").exists());
    let file = f.dir.path().join("state.json");
    std::fs::write(&file, f.state()).unwrap();
    ok(&run_hook(
        &[
            "create-symlinks",
            "--link=u::/m",
            "--container-spec",
            file.to_str().unwrap(),
        ],
        "",
    ));
    assert_eq!(link_of(&f.root().join("m")), "u");
}

#[test]
fn chmod_changes_modes_inside_the_root_only() {
    let f = Fixture::new("chmod");
    let r = f.root();
    std::fs::create_dir_all(r.join("data/sub")).unwrap();
    std::fs::write(r.join("hosts"), "").unwrap();
    symlink(f.outside().join("sentinel"), r.join("victim")).unwrap();
    let outside_mode = std::fs::metadata(f.outside().join("sentinel"))
        .unwrap()
        .mode();
    ok(&f.hook(&[
        "chmod",
        "--mode",
        "0711",
        "--path=/data/sub",
        "--path=/missing",
        "--path=/victim",
    ]));
    assert_eq!(
        std::fs::metadata(r.join("data/sub")).unwrap().mode() & 0o7777,
        0o711
    );
    assert_eq!(
        std::fs::metadata(f.outside().join("sentinel"))
            .unwrap()
            .mode(),
        outside_mode
    );
    let o = f.hook(&["chmod", "--path=/data"]);
    assert_eq!(o.status.code(), Some(1));
    let o = f.hook(&["chmod", "--mode=9", "--path=/data"]);
    assert_eq!(o.status.code(), Some(1));
    f.assert_outside_untouched();
}

#[test]
fn application_profile_masks_gpu_minors() {
    if !is_root() {
        return skip_or_fail("mknod needs root");
    }
    let f = Fixture::new("profile");
    let dev = f.root().join("dev");
    std::fs::create_dir_all(&dev).unwrap();
    for (name, minor) in [
        ("nvidia0", 0),
        ("nvidia3", 3),
        ("nvidiactl", 255),
        ("nvidia70", 70),
    ] {
        let st = Command::new("mknod")
            .arg(dev.join(name))
            .args(["c", "195", &minor.to_string()])
            .status()
            .unwrap();
        assert!(st.success());
    }
    std::fs::write(dev.join("nvidia5"), "").unwrap();
    let o = f.hook(&["update-application-profile"]);
    ok(&o);
    assert!(stderr(&o).contains("nvidia70"), "{}", stderr(&o));
    let dir = f.root().join("etc/nvidia/nvidia-application-profiles-rc.d");
    let text = std::fs::read_to_string(dir.join("10-container.conf")).unwrap();
    assert!(text.contains(r#""EGLVisibleDGPUDevices", 0x9]"#), "{text}");
    assert_eq!(
        std::fs::metadata(dir.join("10-container.conf"))
            .unwrap()
            .mode()
            & 0o777,
        0o444
    );
    assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o555);
    // No GPU node: nothing written.
    let g = Fixture::new("profile-none");
    std::fs::create_dir_all(g.root().join("dev")).unwrap();
    ok(&g.hook(&["update-application-profile"]));
    assert!(!g.root().join("etc").exists());
}

#[test]
fn device_node_modification_is_disabled_by_a_read_only_copy() {
    if !is_root() {
        return skip_or_fail("mount namespaces need root");
    }
    let f = Fixture::new("params");
    let r = f.root();
    std::fs::create_dir_all(r.join("proc/driver/nvidia")).unwrap();
    std::fs::write(r.join("proc/driver/nvidia/params"), "original\n").unwrap();
    let state = f.dir.path().join("state.json");
    std::fs::write(&state, f.state()).unwrap();
    // A private namespace whose /proc/driver/nvidia/params is the host driver's stand-in.
    let script = format!(
        "mount --make-rprivate / && mount -t tmpfs tmpfs /proc/driver && mkdir /proc/driver/nvidia && \
         printf 'ResmanDebugLevel: 4294967295\nModifyDeviceFiles: 1\n' > /proc/driver/nvidia/params && \
         {nvbox} nvidia-cdi-hook disable-device-node-modification --container-spec {state} && \
         cat {root}/proc/driver/nvidia/params && (echo x > {root}/proc/driver/nvidia/params && echo WRITABLE || true)",
        nvbox = nvbox(),
        state = state.display(),
        root = r.display(),
    );
    let out = Command::new("unshare")
        .args(["--mount", "sh", "-c", &script])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(text, "ResmanDebugLevel: 4294967295\nModifyDeviceFiles: 0\n");
    // Outside the namespace the rootfs file is untouched.
    assert_eq!(
        std::fs::read_to_string(r.join("proc/driver/nvidia/params")).unwrap(),
        "original\n"
    );
    // A container without the file, and a host whose params are already off: nothing to do.
    let g = Fixture::new("params-none");
    let state = g.dir.path().join("state.json");
    std::fs::write(&state, g.state()).unwrap();
    let script = format!(
        "mount --make-rprivate / && mount -t tmpfs tmpfs /proc/driver && mkdir /proc/driver/nvidia && \
         printf 'ModifyDeviceFiles: 1\n' > /proc/driver/nvidia/params && \
         {nvbox} nvidia-cdi-hook disable-device-node-modification --container-spec {state}",
        nvbox = nvbox(),
        state = state.display(),
    );
    let out = Command::new("unshare")
        .args(["--mount", "sh", "-c", &script])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!g.root().join("proc").exists());
    // The host here has no driver params: a no-op, even without a readable state.
    if !Path::new("/proc/driver/nvidia/params").exists() {
        ok(&run_hook(&["disable-device-node-modification"], ""));
    }
}
