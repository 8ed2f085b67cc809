//! The IMAGE's ld.so.cache gone bad. Upstream runs ldconfig in the container (libnvidia-container
//! §5.11, toolkit §8 update-ldcache), and ldconfig builds a new cache from the directories
//! without reading the old one: a broken image cache is replaced, not an error. Ours merges the
//! image's entries when it can read them and otherwise drops them the same way.

use super::*;
use crate::common::sandbox::Sandbox;

/// Ways an image's cache can be broken.
fn corruptions(good: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    let mut huge_count = good.to_vec();
    huge_count[20..24].copy_from_slice(&u32::MAX.to_ne_bytes());
    vec![
        ("garbage", b"not a cache at all".to_vec()),
        ("truncated header", good[..30].to_vec()),
        ("entry count huge", huge_count),
        ("empty", Vec::new()),
    ]
}

/// `ldconfig -p` of cache bytes, by the host's glibc (None without one).
fn listing(bytes: &[u8], scratch: &Path) -> Option<String> {
    let file = scratch.join("listed.cache");
    std::fs::write(&file, bytes).unwrap();
    let out = Command::new("/sbin/ldconfig")
        .arg("-p")
        .arg("-C")
        .arg(&file)
        .output()
        .ok()?;
    Some(stdout(&out))
}

#[track_caller]
fn assert_valid_cache_with_libcuda(bytes: &[u8], scratch: &Path, case: &str) {
    assert!(
        bytes.starts_with(b"glibc-ld.so.cache1.1"),
        "{case}: cache not rewritten"
    );
    if let Some(l) = listing(bytes, scratch) {
        assert!(l.contains("libcuda.so.1 (libc6,x86-64)"), "{case}: {l}");
    }
}

#[test]
fn update_ldcache_replaces_a_broken_image_cache() {
    if !is_root() {
        skip_or_fail("update-ldcache runs in new namespaces and needs root");
        return;
    }
    let host = Host::new("mal-img-hook");
    let good = std::fs::read(host.file("/etc/ld.so.cache")).unwrap();
    let libs = host.file("/usr/lib/x86_64-linux-gnu");
    let libcuda = std::fs::read_dir(&libs)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("libcuda.so.") && n.matches('.').count() > 3)
        .unwrap();
    for (case, bytes) in corruptions(&good) {
        let bundle = Bundle::new(
            &host,
            "b",
            br#"{"ociVersion":"1.0.2","process":{"env":[]},"root":{"path":"rootfs"}}"#,
        );
        let rootfs = bundle.dir.join("rootfs");
        std::fs::create_dir_all(rootfs.join("usr/lib/nvidia")).unwrap();
        copy_library(
            &libs.join(&libcuda),
            &rootfs.join("usr/lib/nvidia").join(&libcuda),
        );
        std::fs::write(rootfs.join("etc/ld.so.cache"), &bytes).unwrap();
        let state = bundle.state(std::process::id() as i32);
        let out = run_with(
            &host.config,
            "nvidia-cdi-hook",
            &["update-ldcache", "--folder", "/usr/lib/nvidia"],
            Some(&state),
        );
        assert!(out.status.success(), "{case}: {}", stderr(&out));
        assert_no_panic(&stderr(&out), case);
        let cache = std::fs::read(rootfs.join("etc/ld.so.cache")).unwrap();
        assert_valid_cache_with_libcuda(&cache, host.dir.path(), case);
        assert_eq!(
            mounts_under(host.dir.path()),
            Vec::<String>::new(),
            "{case}"
        );
        std::fs::remove_dir_all(&bundle.dir).unwrap();
    }
}

#[test]
fn configure_replaces_a_broken_image_cache() {
    if !is_root() {
        skip_or_fail("live configure needs root");
        return;
    }
    let host = Host::new("mal-img-cli");
    let good = std::fs::read(host.file("/etc/ld.so.cache")).unwrap();
    for (i, (case, bytes)) in corruptions(&good).into_iter().enumerate() {
        let seed = host.dir.path().join(format!("seed{i}"));
        std::fs::write(&seed, &bytes).unwrap();
        let root = host.dir.path().join(format!("rootfs{i}"));
        let sb = Sandbox::new(
            &root,
            &format!("mkdir -p etc && cp {} etc/ld.so.cache", seed.display()),
        );
        let pid = sb.pid();
        let out = host.run(
            "nvidia-container-cli",
            &[
                "configure",
                "--no-cgroups",
                "--device=0",
                "--compute",
                "--pid",
                &pid,
                root.to_str().unwrap(),
            ],
        );
        assert!(out.status.success(), "{case}: {}", stderr(&out));
        let cache = sb.read(&root.join("etc/ld.so.cache"));
        assert_valid_cache_with_libcuda(&cache, host.dir.path(), case);
        drop(sb);
        assert_eq!(
            mounts_under(host.dir.path()),
            Vec::<String>::new(),
            "{case}: mount leaked"
        );
    }
}
