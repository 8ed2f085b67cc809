//! A full filesystem under every file we replace: the container's /etc/ld.so.cache (written by
//! the legacy hook in a real runc container, and by `nvidia-cdi-hook update-ldcache`), a
//! bundle's config.json (rewritten by the shim in jit-cdi mode) and the engines' config files
//! (`nvidia-ctk runtime configure`). Each must fail with one line naming the cause and leave
//! the old file byte for byte, with no temp file beside it; with space again, a rerun works.

use crate::common::container::*;
use crate::common::engines::*;
use crate::common::{TempDir, command, copy_library, is_root, mock, nvbox, skip_or_fail};
use crate::{SmallFs, error_lines, hold_host_mounts};
use serde_json::json;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// strerror(ENOSPC), compared without case: io errors print it capitalised, and messages that
/// lower-case their cause (`lower_io`) do not.
const ENOSPC: &str = "no space left on device";

fn root_ready(what: &str) -> bool {
    if !is_root() {
        skip_or_fail(&format!("{what} mounts a tmpfs: needs root"));
        return false;
    }
    true
}

/// Names in `dir` that look like one of our temp files.
fn temp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("nvbox") || n.contains('~'))
        .collect()
}

/// The one error line of a failed run that must name ENOSPC.
fn assert_one_line_enospc(what: &str, out: &Output) {
    assert!(
        !out.status.success(),
        "{what} succeeded on a full filesystem"
    );
    let err = text(&out.stderr);
    let lines = error_lines(&err);
    assert_eq!(lines.len(), 1, "{what}: not a one-line error:\n{err}");
    assert!(
        lines[0].to_lowercase().contains(ENOSPC),
        "{what}: cause not named: {err}"
    );
    eprintln!("{what} on a full fs: {}", lines[0]);
}

#[test]
fn hook_on_a_full_rootfs_keeps_the_old_ld_so_cache() {
    if !root_ready("the full-rootfs hook test") || !have_prerequisites(&[RUNC, BUSYBOX]) {
        return;
    }
    let _mounts = hold_host_mounts();
    let host = shared_host(&[]);
    let mut bundle = Bundle::new(true);
    bundle.script(PROBE);
    bundle.env(&["NVIDIA_VISIBLE_DEVICES=all"]);
    bundle.hook(host);
    let fs = SmallFs::mount(&bundle.rootfs, "16m");
    make_rootfs(&bundle.rootfs, true);
    let cache = bundle.rootfs.join("etc/ld.so.cache");
    std::fs::copy("/etc/ld.so.cache", &cache).unwrap();
    let old = std::fs::read(&cache).unwrap();
    let before = snapshot(&bundle.rootfs);
    let filler = fs.fill();

    let run = run_runc(&mut bundle);
    assert!(!run.created, "create succeeded on a full rootfs");
    // runc quotes the hook's stderr, escaping its newlines: exactly the final one.
    let hook_err = run
        .create_stderr
        .split_once("stderr: ")
        .map(|(_, e)| e)
        .unwrap_or_default();
    assert!(
        hook_err.contains("ldcache error") && hook_err.to_lowercase().contains(ENOSPC),
        "the hook's error does not name the cache and ENOSPC: {}",
        run.create_stderr
    );
    assert_eq!(
        hook_err.matches("\\n").count(),
        1,
        "the hook's error is not one line: {}",
        run.create_stderr
    );
    assert_eq!(std::fs::read(&cache).unwrap(), old, "the old cache changed");
    let mut after = snapshot(&bundle.rootfs);
    after.remove(".filler");
    let changed: Vec<String> = after
        .iter()
        .filter(|(k, v)| before.get(*k) != Some(*v))
        .map(|(k, v)| format!("{k} ({v})"))
        .chain(
            before
                .keys()
                .filter(|k| !after.contains_key(*k))
                .map(|k| format!("{k} removed")),
        )
        .collect();
    assert!(
        changed.is_empty(),
        "the failed hook left changes in the rootfs: {changed:#?}"
    );

    // With space again the same bundle starts with the cache merged.
    std::fs::remove_file(filler).unwrap();
    let want = expected(host, "all", &["compute", "utility"], &bundle.rootfs);
    let run = run_runc(&mut bundle);
    assert!(run.created, "retry failed: {}", run.create_stderr);
    assert_injected(&parse_probe(&run.stdout), &want, host);
    // The image's own entries (this host's cache) are kept beside ours.
    let listing = cache_listing(&cache);
    for (soname, arch, path) in &want.ldcache {
        let line = format!("{soname} ({arch}) => {path}");
        assert!(listing.contains(&line), "the merged cache lacks {line}");
    }
    assert!(
        listing.contains("libc.so.6 (libc6,x86-64"),
        "the image's entries were dropped"
    );
}

/// `ldconfig -p` of a cache, the ABI notes cut so lines read `soname (arch) => path`.
fn cache_listing(cache: &Path) -> String {
    let out = Command::new("ldconfig")
        .args(["-p", "-C"])
        .arg(cache)
        .output()
        .unwrap();
    assert!(out.status.success(), "ldconfig -p: {}", text(&out.stderr));
    text(&out.stdout).replace(", OS ABI: Linux 3.2.0", "")
}

/// A rootfs on a small tmpfs holding the mock's libcuda in /usr/lib/nvidia.
struct LdRoot {
    dir: TempDir,
    fs: SmallFs,
}

impl LdRoot {
    fn new(tag: &str) -> LdRoot {
        let dir = TempDir::new(tag);
        let host = dir.path().join("host");
        mock(&host, &["--gpus", "1"]);
        let fs = SmallFs::mount(&dir.path().join("rootfs"), "4m");
        let src = host.join("usr/lib/x86_64-linux-gnu");
        let name = std::fs::read_dir(&src)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .find(|n| n.starts_with("libcuda.so.") && n.matches('.').count() > 3)
            .unwrap();
        let libs = fs.dir.join("usr/lib/nvidia");
        std::fs::create_dir_all(&libs).unwrap();
        copy_library(&src.join(&name), &libs.join(&name));
        std::fs::create_dir_all(fs.dir.join("etc")).unwrap();
        std::fs::write(fs.dir.join("etc/debian_version"), "12\n").unwrap();
        LdRoot { dir, fs }
    }

    fn root(&self) -> &Path {
        &self.fs.dir
    }

    fn update_ldcache(&self) -> Output {
        let state = json!({"ociVersion": "1.0.2", "id": "x", "pid": 1, "root": self.root(),
            "bundle": self.dir.path()});
        let mut child = command(nvbox())
            .args([
                "nvidia-cdi-hook",
                "update-ldcache",
                "--folder",
                "/usr/lib/nvidia",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(state.to_string().as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    fn cache_lists_libcuda(&self) -> bool {
        cache_listing(&self.root().join("etc/ld.so.cache"))
            .contains("libcuda.so.1 (libc6,x86-64) => /usr/lib/nvidia/libcuda.so.1")
    }
}

#[test]
fn update_ldcache_on_a_full_rootfs_keeps_the_old_cache() {
    if !root_ready("update-ldcache on a full rootfs") {
        return;
    }
    let _mounts = hold_host_mounts();
    let r = LdRoot::new("fullfs-ldcache");
    // Configured already, so the cache is the only file this run must write.
    std::fs::write(
        r.root().join("etc/ld.so.conf"),
        "/usr/lib/nvidia\n/lib/x86_64-linux-gnu\n/usr/lib/x86_64-linux-gnu\n/lib\n/usr/lib\n",
    )
    .unwrap();
    let cache = r.root().join("etc/ld.so.cache");
    std::fs::copy("/etc/ld.so.cache", &cache).unwrap();
    let old = std::fs::read(&cache).unwrap();
    let filler = r.fs.fill();
    let out = r.update_ldcache();
    assert_one_line_enospc("update-ldcache", &out);
    assert_eq!(std::fs::read(&cache).unwrap(), old, "the old cache changed");
    assert_eq!(temp_files(&r.root().join("etc")), Vec::<String>::new());
    std::fs::remove_file(filler).unwrap();
    let out = r.update_ldcache();
    assert!(out.status.success(), "rerun: {}", text(&out.stderr));
    assert!(r.cache_lists_libcuda(), "the rerun's cache lacks libcuda");
}

#[test]
fn update_ldcache_on_a_full_fresh_rootfs_leaves_no_empty_ld_so_conf() {
    if !root_ready("update-ldcache on a full rootfs") {
        return;
    }
    let _mounts = hold_host_mounts();
    let r = LdRoot::new("fullfs-ldconf");
    let etc = r.root().join("etc");
    let filler = r.fs.fill();
    let out = r.update_ldcache();
    assert_one_line_enospc("update-ldcache", &out);
    // An empty ld.so.conf left here would be taken as the image's own on the rerun, which
    // would then never add the include line for its conf.d files.
    assert!(
        !etc.join("ld.so.conf").exists(),
        "a failed write left /etc/ld.so.conf ({:?})",
        std::fs::read_to_string(etc.join("ld.so.conf"))
    );
    assert_eq!(temp_files(&etc), Vec::<String>::new());
    std::fs::remove_file(filler).unwrap();
    let out = r.update_ldcache();
    assert!(out.status.success(), "rerun: {}", text(&out.stderr));
    assert_eq!(
        std::fs::read_to_string(etc.join("ld.so.conf")).unwrap(),
        "include /etc/ld.so.conf.d/*.conf\n"
    );
    assert!(r.cache_lists_libcuda(), "the rerun's cache lacks libcuda");
}

#[test]
fn shim_on_a_full_bundle_keeps_config_json() {
    if !root_ready("the full-bundle shim test") || !have_prerequisites(&[RUNC, BUSYBOX]) {
        return;
    }
    let _mounts = hold_host_mounts();
    let host = shared_host(&[]);
    let config = ShimConfig::mode(host, "jit-cdi");
    let mut bundle = Bundle::new(true);
    bundle.script(PROBE);
    bundle.env(&["NVIDIA_VISIBLE_DEVICES=all"]);
    let fs = SmallFs::mount(bundle.path(), "16m");
    make_rootfs(&bundle.rootfs, true);
    let id = unique_id("fullfs");
    bundle.spec["linux"]["cgroupsPath"] = json!(format!("/{id}"));
    let config_json = bundle.path().join("config.json");
    std::fs::write(
        &config_json,
        serde_json::to_vec_pretty(&bundle.spec).unwrap(),
    )
    .unwrap();
    let old = std::fs::read(&config_json).unwrap();
    let filler = fs.fill();
    let state = shim_state();
    let _guard = Created {
        state: state.clone(),
        id: id.clone(),
    };
    let out = create_command(shim_command(&config.path), &state, bundle.path(), &id)
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    assert_one_line_enospc("shim create", &out);
    assert_eq!(
        std::fs::read(&config_json).unwrap(),
        old,
        "config.json changed"
    );
    assert_eq!(temp_files(bundle.path()), Vec::<String>::new());
    assert!(!state.join(&id).exists(), "runc was started anyway");

    std::fs::remove_file(filler).unwrap();
    let run = run_shim(&mut bundle, &config.path, &[]);
    assert!(run.created, "retry failed: {}", run.create_stderr);
    let probe = parse_probe(&run.stdout);
    assert_jit_injected(&probe, &expected_jit(host, "all", &bundle.rootfs));
}

/// `nvidia-ctk runtime configure ARGS` on `file` in a full tmpfs: one line, file untouched.
fn configure_on_full_fs(tag: &str, name: &str, old: &str, args: &[&str]) {
    let _mounts = hold_host_mounts();
    let dir = TempDir::new(tag);
    let fs = SmallFs::mount(&dir.path().join("etc"), "64k");
    let file = fs.dir.join(name);
    std::fs::write(&file, old).unwrap();
    let filler = fs.fill();
    let ctk = || {
        command(nvbox())
            .args(["nvidia-ctk", "runtime", "configure"])
            .args(args)
            .arg(format!("--config={}", file.display()))
            .output()
            .unwrap()
    };
    let out = ctk();
    assert_one_line_enospc("nvidia-ctk runtime configure", &out);
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        old,
        "{name} changed"
    );
    assert_eq!(temp_files(&fs.dir), Vec::<String>::new());
    std::fs::remove_file(filler).unwrap();
    let out = ctk();
    assert!(out.status.success(), "rerun: {}", text(&out.stderr));
    assert!(std::fs::read_to_string(&file).unwrap().contains("nvidia"));
}

#[test]
fn ctk_configure_on_a_full_fs_keeps_daemon_json() {
    if root_ready("configure on a full fs") {
        let old = "{\n    \"log-level\": \"warn\",\n    \"runtimes\": {\"other\": {\"path\": \"/x\"}}\n}\n";
        configure_on_full_fs("fullfs-docker", "daemon.json", old, &["--runtime=docker"]);
    }
}

#[test]
fn ctk_configure_on_a_full_fs_keeps_containerd_toml() {
    if root_ready("configure on a full fs") {
        let old = "version = 2\n\n[plugins.\"io.containerd.grpc.v1.cri\".containerd]\n  snapshotter = \"overlayfs\"\n";
        configure_on_full_fs(
            "fullfs-containerd",
            "config.toml",
            old,
            &["--runtime=containerd", "--drop-in-config="],
        );
    }
}
