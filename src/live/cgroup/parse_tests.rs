//! The pure halves of find_device_cgroup: /proc/<pid>/cgroup and mountinfo parsing, and the
//! composition of both over a fake proc root.

use std::fs;
use std::path::{Path, PathBuf};

use super::*;

const V1_FILE: &str = "12:pids:/docker/abc\n5:devices:/docker/abc\n1:name=systemd:/docker/abc\n";
const V2_FILE: &str = "0::/system.slice/docker-abc.scope\n";
const HYBRID_FILE: &str =
    "9:name=systemd:/\n5:devices:/docker/abc\n4:memory:/docker/abc\n0::/system.slice/x.scope\n";

const MOUNTINFO: &str = "\
22 1 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
31 23 0:28 / /sys/fs/cgroup rw,relatime shared:9 - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime shared:10 - cgroup cgroup rw,cpu
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime shared:14 - cgroup cgroup rw,devices
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime shared:19 - cgroup2 cgroup2 rw,nsdelegate
";

#[test]
fn cgroup_file_v1() {
    let got = parse_cgroup_file("4:devices:/docker/abc\n").unwrap();
    assert_eq!(got, (Version::V1, "/docker/abc".to_owned()));
    let got = parse_cgroup_file(V1_FILE).unwrap();
    assert_eq!(got, (Version::V1, "/docker/abc".to_owned()));
}

#[test]
fn cgroup_file_v2() {
    let got = parse_cgroup_file("0::/system.slice/x.scope\n").unwrap();
    assert_eq!(got, (Version::V2, "/system.slice/x.scope".to_owned()));
    // A path may itself contain ':'; only the first two separate fields.
    let got = parse_cgroup_file("0::/a:b\n").unwrap();
    assert_eq!(got, (Version::V2, "/a:b".to_owned()));
}

#[test]
fn cgroup_file_hybrid_prefers_v1_devices() {
    let got = parse_cgroup_file(HYBRID_FILE).unwrap();
    assert_eq!(got, (Version::V1, "/docker/abc".to_owned()));
}

#[test]
fn cgroup_file_errors() {
    let err = parse_cgroup_file("4:memory:/x\n1:name=systemd:/x\n").unwrap_err();
    assert_eq!(
        err.to_string(),
        "no devices or unified cgroup entries found"
    );
    let err = parse_cgroup_file("").unwrap_err();
    assert_eq!(
        err.to_string(),
        "no devices or unified cgroup entries found"
    );
    let err = parse_cgroup_file("0::/ok\n4-devices-/x\n").unwrap_err();
    assert_eq!(err.to_string(), "malformed cgroup line: 4-devices-/x");
    let err = parse_cgroup_file("4:devices\n").unwrap_err();
    assert_eq!(err.to_string(), "malformed cgroup line: 4:devices");
}

#[test]
fn mountinfo_v1_devices() {
    let got = find_cgroup_mount(MOUNTINFO, Version::V1).unwrap();
    assert_eq!(
        got,
        ("/".to_owned(), PathBuf::from("/sys/fs/cgroup/devices"))
    );
}

#[test]
fn mountinfo_v2() {
    let got = find_cgroup_mount(MOUNTINFO, Version::V2).unwrap();
    assert_eq!(
        got,
        ("/".to_owned(), PathBuf::from("/sys/fs/cgroup/unified"))
    );
    // No optional fields, a subtree root, an escaped space in the mount point.
    let line = "30 24 0:26 /kubepods /sys/fs/my\\040cgroup rw - cgroup2 cgroup2 rw\n";
    let got = find_cgroup_mount(line, Version::V2).unwrap();
    assert_eq!(
        got,
        ("/kubepods".to_owned(), PathBuf::from("/sys/fs/my cgroup"))
    );
}

#[test]
fn mountinfo_errors() {
    let err = find_cgroup_mount(MOUNTINFO.lines().next().unwrap(), Version::V2).unwrap_err();
    assert_eq!(err.to_string(), "no cgroup2 filesystem in mountinfo file");
    let only_cpu = "32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n";
    let err = find_cgroup_mount(only_cpu, Version::V1).unwrap_err();
    assert_eq!(
        err.to_string(),
        "no cgroup filesystem with the devices controller in mountinfo file"
    );
    let escaped = "36 31 0:33 /../.. /sys/fs/cgroup/devices rw - cgroup cgroup rw,devices\n";
    let err = find_cgroup_mount(escaped, Version::V1).unwrap_err();
    assert_eq!(
        err.to_string(),
        "cgroup mount root /../.. lies outside our cgroup namespace"
    );
}

/// A throwaway proc root under the target directory's temp area.
fn fake_proc(name: &str, cgroup: &str, mountinfo: &str) -> PathBuf {
    let root = std::env::temp_dir().join(format!("nvbox-cg-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&root);
    fs::create_dir_all(root.join("proc/42")).unwrap();
    fs::create_dir_all(root.join("proc/self")).unwrap();
    fs::write(root.join("proc/42/cgroup"), cgroup).unwrap();
    fs::write(root.join("proc/self/mountinfo"), mountinfo).unwrap();
    root
}

#[test]
fn find_device_cgroup_composes_root_mount_and_path() {
    let root = fake_proc("v1", V1_FILE, MOUNTINFO);
    let got = find_device_cgroup(&root, 42).unwrap();
    assert_eq!(got.version, Version::V1);
    assert_eq!(got.path, root.join("sys/fs/cgroup/devices/docker/abc"));

    let root2 = fake_proc("v2", V2_FILE, MOUNTINFO);
    let got = find_device_cgroup(&root2, 42).unwrap();
    assert_eq!(got.version, Version::V2);
    assert_eq!(
        got.path,
        root2.join("sys/fs/cgroup/unified/system.slice/docker-abc.scope")
    );
    for dir in [root, root2] {
        fs::remove_dir_all(dir).unwrap();
    }
}

#[test]
fn find_device_cgroup_strips_the_mount_root() {
    let mountinfo = "40 31 0:38 /kubepods /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
    let root = fake_proc("strip", "0::/kubepods/pod1/c1\n", mountinfo);
    let got = find_device_cgroup(&root, 42).unwrap();
    assert_eq!(got.path, root.join("sys/fs/cgroup/pod1/c1"));

    // Component-wise: /kubepods2 is not below /kubepods.
    fs::write(root.join("proc/42/cgroup"), "0::/kubepods2/c1\n").unwrap();
    let err = find_device_cgroup(&root, 42).unwrap_err();
    assert_eq!(
        format!("{err:#}"),
        "failed to get device cgroup root path: cgroup /kubepods2/c1 is not below the mount root /kubepods"
    );

    // The cgroup is the mount root itself: the mount point, with no trailing separator.
    fs::write(root.join("proc/42/cgroup"), "0::/kubepods\n").unwrap();
    let got = find_device_cgroup(&root, 42).unwrap();
    assert_eq!(got.path.as_os_str(), root.join("sys/fs/cgroup").as_os_str());
    fs::remove_dir_all(root).unwrap();
}

#[test]
fn find_device_cgroup_errors_carry_upstream_context() {
    let root = fake_proc("err", "4:memory:/x\n", MOUNTINFO);
    let err = find_device_cgroup(&root, 42).unwrap_err();
    assert_eq!(
        format!("{err:#}"),
        "failed to get device cgroup version: no devices or unified cgroup entries found"
    );
    let err = find_device_cgroup(&root, 7).unwrap_err();
    let missing = root.join("proc/7/cgroup");
    assert_eq!(
        format!("{err:#}"),
        format!(
            "failed to get device cgroup version: open failed: {}: no such file or directory",
            missing.display()
        )
    );
    fs::write(root.join("proc/42/cgroup"), V2_FILE).unwrap();
    fs::write(
        root.join("proc/self/mountinfo"),
        "1 0 0:1 / / rw - ext4 /dev/sda rw\n",
    )
    .unwrap();
    let err = find_device_cgroup(&root, 42).unwrap_err();
    assert_eq!(
        format!("{err:#}"),
        "failed to get device cgroup mount path: no cgroup2 filesystem in mountinfo file"
    );
    fs::remove_dir_all(root).unwrap();
}

#[test]
fn real_self_cgroup_resolves_to_a_directory() {
    // Our own process on this host: whatever the layout, the answer must exist.
    let got = find_device_cgroup(Path::new("/"), std::process::id() as i32).unwrap();
    assert!(got.path.is_dir(), "{got:?}");
}
