//! update-ldcache: soname links, the loader configuration and the cache, by our writer or a
//! host ldconfig, and hostile /etc layouts.

use std::os::unix::fs::{MetadataExt, symlink};
use std::path::Path;
use std::process::Command;

use super::*;

/// A mock host's libcuda copied into the rootfs folder; returns the file name.
fn seed_libcuda(f: &Fixture, folder: &str) -> String {
    let host = f.dir.path().join("host");
    mock(&host, &["--gpus", "1"]);
    let src = host.join("usr/lib/x86_64-linux-gnu");
    let name = std::fs::read_dir(&src)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("libcuda.so.") && n.matches('.').count() > 3)
        .unwrap();
    let dst = f.root().join(folder.trim_start_matches('/'));
    std::fs::create_dir_all(&dst).unwrap();
    copy_library(&src.join(&name), &dst.join(&name));
    name
}

/// `ldconfig -p` of a cache file, by the host's glibc ldconfig (reading only).
fn cache_listing(cache: &Path) -> Option<String> {
    let out = Command::new("/sbin/ldconfig")
        .args(["-p", "-C"])
        .arg(cache)
        .output()
        .ok()?;
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn update_ldcache_links_sonames_and_writes_the_cache() {
    let f = Fixture::new("ldcache");
    let name = seed_libcuda(&f, "/usr/lib/nvidia");
    let r = f.root();
    std::fs::create_dir_all(r.join("etc")).unwrap();
    std::fs::write(r.join("etc/debian_version"), "12\n").unwrap();
    ok(&f.hook(&[
        "update-ldcache",
        "--folder",
        "/usr/lib/nvidia",
        "--folder=/usr/lib/x86_64-linux-gnu",
    ]));
    assert_eq!(link_of(&r.join("usr/lib/nvidia/libcuda.so.1")), name);
    assert_eq!(
        std::fs::read_to_string(r.join("etc/ld.so.conf")).unwrap(),
        "include /etc/ld.so.conf.d/*.conf\n"
    );
    let confs = files_in(&r.join("etc/ld.so.conf.d"), "00-nvcr-");
    assert_eq!(confs.len(), 1);
    // A system directory is not listed again.
    assert_eq!(
        std::fs::read_to_string(&confs[0]).unwrap(),
        "/usr/lib/nvidia\n"
    );
    let zz = files_in(&r.join("etc/ld.so.conf.d"), "zz-nvcr-");
    assert_eq!(
        std::fs::read_to_string(&zz[0]).unwrap(),
        "/lib/x86_64-linux-gnu\n/usr/lib/x86_64-linux-gnu\n/lib\n/usr/lib\n"
    );
    if let Some(listing) = cache_listing(&r.join("etc/ld.so.cache")) {
        assert!(
            listing.contains("libcuda.so.1 (libc6,x86-64) => /usr/lib/nvidia/libcuda.so.1"),
            "{listing}"
        );
    }
    // A second run (a restarted container, a reused bundle) finds its folders configured and
    // adds no file, and leaves a soname link that is already right as it is: same inode, not an
    // unlink and a new link per library on every start.
    let link = r.join("usr/lib/nvidia/libcuda.so.1");
    let before = std::fs::symlink_metadata(&link).unwrap().ino();
    ok(&f.hook(&["update-ldcache", "--folder", "/usr/lib/nvidia"]));
    assert_eq!(files_in(&r.join("etc/ld.so.conf.d"), "").len(), 2);
    assert_eq!(std::fs::symlink_metadata(&link).unwrap().ino(), before);
    assert_eq!(link_of(&link), name);
    // A stale link (an older driver's file) is still replaced.
    std::fs::remove_file(&link).unwrap();
    symlink("libcuda.so.1.0.old", &link).unwrap();
    ok(&f.hook(&["update-ldcache", "--folder", "/usr/lib/nvidia"]));
    assert_eq!(link_of(&link), name);
}

fn digest(p: &Path) -> Option<(Vec<u8>, i64)> {
    let m = std::fs::symlink_metadata(p).ok()?;
    Some((std::fs::read(p).unwrap_or_default(), m.mtime_nsec()))
}

#[test]
fn update_ldcache_stays_inside_hostile_layouts() {
    let f = Fixture::new("ldcache-hostile");
    seed_libcuda(&f, "/usr/lib/nvidia");
    let r = f.root();
    // /etc -> / : the cache and conf files land in the rootfs's own /.
    symlink("/", r.join("etc")).unwrap();
    // A folder pointing at a host directory of libraries: resolved inside the root, where it
    // is missing, so no soname link appears next to the host's libraries.
    let host_libs = f.dir.path().join("host/usr/lib/x86_64-linux-gnu");
    let host_before = files_in(&host_libs, "");
    symlink(&host_libs, r.join("usr/lib/evil")).unwrap();
    let before = digest(Path::new("/etc/ld.so.cache"));
    let conf_before = files_in(Path::new("/etc/ld.so.conf.d"), "");
    ok(&f.hook(&[
        "update-ldcache",
        "--folder=/usr/lib/nvidia",
        "--folder=/usr/lib/evil",
    ]));
    assert!(r.join("ld.so.cache").is_file());
    assert!(r.join("ld.so.conf").is_file());
    assert_eq!(files_in(&r.join("ld.so.conf.d"), "00-nvcr-").len(), 1);
    assert_eq!(digest(Path::new("/etc/ld.so.cache")), before);
    assert_eq!(files_in(Path::new("/etc/ld.so.conf.d"), ""), conf_before);
    assert_eq!(files_in(&host_libs, ""), host_before);
    f.assert_outside_untouched();
}

#[test]
fn update_ldcache_replaces_a_cache_symlinked_to_a_host_file() {
    let f = Fixture::new("ldcache-shadow");
    seed_libcuda(&f, "/usr/lib/nvidia");
    let r = f.root();
    std::fs::create_dir_all(r.join("etc")).unwrap();
    let victim = f.outside().join("sentinel");
    symlink(&victim, r.join("etc/ld.so.cache")).unwrap();
    symlink(&victim, r.join("etc/ld.so.conf")).unwrap();
    ok(&f.hook(&["update-ldcache", "--folder=/usr/lib/nvidia"]));
    let meta = std::fs::symlink_metadata(r.join("etc/ld.so.cache")).unwrap();
    assert!(
        meta.file_type().is_file(),
        "the cache symlink was not replaced"
    );
    f.assert_outside_untouched();
}

#[test]
fn update_ldcache_runs_a_host_ldconfig_when_asked() {
    if !is_root() {
        return skip_or_fail("ldconfig chroot needs root");
    }
    if !Path::new("/sbin/ldconfig").exists() {
        return skip_or_fail("no /sbin/ldconfig on this host");
    }
    let f = Fixture::new("ldconfig");
    let name = seed_libcuda(&f, "/usr/lib/nvidia");
    ok(&f.hook(&[
        "update-ldcache",
        "--folder=/usr/lib/nvidia",
        "--ldconfig-path=/sbin/ldconfig",
    ]));
    let r = f.root();
    assert_eq!(link_of(&r.join("usr/lib/nvidia/libcuda.so.1")), name);
    let listing = cache_listing(&r.join("etc/ld.so.cache")).unwrap();
    assert!(
        listing.contains("/usr/lib/nvidia/libcuda.so.1"),
        "{listing}"
    );
}
