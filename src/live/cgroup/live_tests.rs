//! Real cgroups, real programs: each test makes its own child cgroup, moves a helper shell into
//! it and reports which device nodes that shell could open. Needs root; the helper is a separate
//! process (tests are multithreaded, so no fork() here).

use std::fs::{self, File};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread::sleep;
use std::time::Duration;

use super::*;
use crate::sys::bpf::{self, BPF_CGROUP_DEVICE, BPF_F_ALLOW_MULTI, BPF_PROG_TYPE_CGROUP_DEVICE};

const NULL: DeviceRule = DeviceRule { major: 1, minor: 3 };
const FULL: DeviceRule = DeviceRule { major: 1, minor: 7 };
const RANDOM: DeviceRule = DeviceRule { major: 1, minor: 8 };
const URANDOM: DeviceRule = DeviceRule { major: 1, minor: 9 };
const ZERO: DeviceRule = DeviceRule { major: 1, minor: 5 };

use crate::testing::skip_or_fail as skip;

/// A child cgroup, removed on drop (its programs go with it).
struct TempCgroup(PathBuf);

impl TempCgroup {
    fn create(parent: &Path, name: &str) -> TempCgroup {
        let path = parent.join(format!("nvbox-test-{}-{name}", std::process::id()));
        let _ = fs::remove_dir(&path);
        fs::create_dir(&path).unwrap();
        TempCgroup(path)
    }
}

impl Drop for TempCgroup {
    fn drop(&mut self) {
        // The helper has been reaped, but the cgroup may report busy for a moment after.
        for _ in 0..100 {
            if fs::remove_dir(&self.0).is_ok() {
                return;
            }
            sleep(Duration::from_millis(10));
        }
        eprintln!("could not remove {}", self.0.display());
    }
}

/// The cgroup2 mount point, or None (after skip) when not root or no cgroup2 is mounted.
fn cgroup2_mount() -> Option<PathBuf> {
    if !nix::unistd::geteuid().is_root() {
        skip("cgroup tests need root");
        return None;
    }
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
    match find_cgroup_mount(&mountinfo, Version::V2) {
        Ok((_, mountpoint)) => Some(mountpoint),
        Err(e) => {
            skip(&format!("no cgroup2 mount: {e}"));
            None
        }
    }
}

/// Which of `/dev/<name>` a shell moved into `cgroup` can open for reading: "<name> ok" or
/// "<name> <the shell's error>", one line each.
fn probe(cgroup: &Path, names: &[&str]) -> Vec<String> {
    const SCRIPT: &str = r#"echo $$ > "$1/cgroup.procs" || exit 99
shift
for d in "$@"; do
  if msg=$( (exec 3<"/dev/$d") 2>&1 ); then echo "$d ok"; else echo "$d $msg"; fi
done"#;
    let out = Command::new("sh")
        .args(["-c", SCRIPT, "sh"])
        .arg(cgroup)
        .args(names)
        .output()
        .unwrap();
    assert!(out.status.success(), "probe failed: {out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn assert_denied(line: &str, name: &str) {
    assert!(
        line.starts_with(&format!("{name} ")) && line.ends_with(": Operation not permitted"),
        "{name} should be denied with EPERM: {line}"
    );
}

/// Attach "allow `allowed`, deny the rest" the way a runtime would, through our own loader.
fn attach_policy(cgroup: &Path, allowed: &[DeviceRule], flags: u32) {
    let insns = program::build_program(allowed, &program::verdict(false)).unwrap();
    let prog = bpf::prog_load(
        BPF_PROG_TYPE_CGROUP_DEVICE,
        BPF_CGROUP_DEVICE,
        &insns,
        c"GPL",
    )
    .unwrap();
    let dir = File::open(cgroup).unwrap();
    bpf::prog_attach(dir.as_fd(), prog.as_fd(), BPF_CGROUP_DEVICE, flags, None).unwrap();
}

fn attached(cgroup: &Path) -> (u32, Vec<u32>) {
    let dir = File::open(cgroup).unwrap();
    bpf::prog_query(dir.as_fd(), BPF_CGROUP_DEVICE).unwrap()
}

fn dump(id: u32) -> Vec<crate::sys::bpf::Insn> {
    let fd = bpf::prog_get_fd_by_id(id).unwrap();
    bpf::prog_get_xlated(fd.as_fd()).unwrap().unwrap()
}

fn v2(path: &Path) -> DeviceCgroup {
    DeviceCgroup {
        version: Version::V2,
        path: path.to_owned(),
    }
}

#[test]
fn cgroup_v2_existing_program_keeps_its_rules_and_gains_ours() {
    let Some(mount) = cgroup2_mount() else { return };
    let cg = TempCgroup::create(&mount, "v2-existing");
    attach_policy(&cg.0, &[NULL], BPF_F_ALLOW_MULTI);
    let (_, before) = attached(&cg.0);
    assert_eq!(before.len(), 1);
    let old = dump(before[0]);
    // The policy alone: /dev/null yes, /dev/zero no.
    let seen = probe(&cg.0, &["null", "zero"]);
    assert_eq!(seen[0], "null ok");
    assert_denied(&seen[1], "zero");

    allow_devices(&v2(&cg.0), &[ZERO]).unwrap();

    let (flags, after) = attached(&cg.0);
    assert_eq!(flags, BPF_F_ALLOW_MULTI);
    assert_eq!(after.len(), 1, "replaced, not added");
    assert_ne!(after[0], before[0]);
    // The new program is exactly the allow block in front of the old program.
    assert_eq!(
        dump(after[0]),
        program::build_program(&[ZERO], &old).unwrap()
    );
    let seen = probe(&cg.0, &["null", "zero", "urandom"]);
    assert_eq!(seen[..2], ["null ok", "zero ok"]);
    assert_denied(&seen[2], "urandom");
}

#[test]
fn cgroup_v2_without_program_changes_nothing() {
    let Some(mount) = cgroup2_mount() else { return };
    let cg = TempCgroup::create(&mount, "v2-none");
    allow_devices(&v2(&cg.0), &[ZERO]).unwrap();
    assert_eq!(attached(&cg.0).1, Vec::<u32>::new());
    // No program at this level restricts nothing; that must still be so.
    let seen = probe(&cg.0, &["null", "zero", "urandom"]);
    assert_eq!(seen, ["null ok", "zero ok", "urandom ok"]);
}

#[test]
fn cgroup_v2_every_multi_program_gains_the_rules() {
    let Some(mount) = cgroup2_mount() else { return };
    let cg = TempCgroup::create(&mount, "v2-multi");
    // Together they allow only /dev/null: each denies what the other allows.
    attach_policy(&cg.0, &[NULL, URANDOM], BPF_F_ALLOW_MULTI);
    attach_policy(&cg.0, &[NULL, RANDOM], BPF_F_ALLOW_MULTI);
    let (_, before) = attached(&cg.0);
    assert_eq!(before.len(), 2);

    allow_devices(&v2(&cg.0), &[ZERO]).unwrap();

    let (flags, after) = attached(&cg.0);
    assert_eq!(flags, BPF_F_ALLOW_MULTI);
    assert_eq!(after.len(), 2);
    assert!(
        after.iter().all(|id| !before.contains(id)),
        "{before:?} {after:?}"
    );
    let seen = probe(&cg.0, &["null", "zero", "urandom", "random"]);
    assert_eq!(seen[..2], ["null ok", "zero ok"]);
    assert_denied(&seen[2], "urandom");
    assert_denied(&seen[3], "random");
}

#[test]
fn cgroup_v2_single_program_is_swapped_with_its_flags() {
    let Some(mount) = cgroup2_mount() else { return };
    let cg = TempCgroup::create(&mount, "v2-single");
    attach_policy(&cg.0, &[NULL], 0);
    let (_, before) = attached(&cg.0);

    allow_devices(&v2(&cg.0), &[ZERO, FULL]).unwrap();

    let (flags, after) = attached(&cg.0);
    assert_eq!(flags, 0);
    assert_eq!(after.len(), 1);
    assert_ne!(after, before);
    let seen = probe(&cg.0, &["null", "zero", "full", "urandom"]);
    assert_eq!(seen[..3], ["null ok", "zero ok", "full ok"]);
    assert_denied(&seen[3], "urandom");
}

#[test]
fn cgroup_v1_allow_appends_rules() {
    if !nix::unistd::geteuid().is_root() {
        return skip("cgroup tests need root");
    }
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mount = match find_cgroup_mount(&mountinfo, Version::V1) {
        Ok((_, mount)) => mount,
        Err(e) => return skip(&format!("no v1 devices hierarchy: {e}")),
    };
    let cg = TempCgroup::create(&mount, "v1");
    fs::write(cg.0.join("devices.deny"), "a").unwrap();
    assert_eq!(fs::read_to_string(cg.0.join("devices.list")).unwrap(), "");

    let dc = DeviceCgroup {
        version: Version::V1,
        path: cg.0.clone(),
    };
    allow_devices(&dc, &[ZERO, FULL]).unwrap();

    assert_eq!(
        fs::read_to_string(cg.0.join("devices.list")).unwrap(),
        "c 1:5 rw\nc 1:7 rw\n"
    );
    let seen = probe(&cg.0, &["zero", "full", "urandom", "null"]);
    assert_eq!(seen[..2], ["zero ok", "full ok"]);
    assert_denied(&seen[2], "urandom");
    assert_denied(&seen[3], "null");
}

#[test]
fn cgroup_missing_directory_errors() {
    let missing = Path::new("/nonexistent/nvbox-cgroup");
    for version in [Version::V1, Version::V2] {
        let cg = DeviceCgroup {
            version,
            path: missing.to_owned(),
        };
        let err = allow_devices(&cg, &[ZERO]).unwrap_err();
        let file = match version {
            Version::V1 => "/nonexistent/nvbox-cgroup/devices.allow",
            Version::V2 => "/nonexistent/nvbox-cgroup",
        };
        assert_eq!(
            format!("{err:#}"),
            format!("failed to add device rules: open failed: {file}: no such file or directory")
        );
    }
}

#[test]
fn cgroup_v2_load_error_carries_the_verifier_line() {
    if !nix::unistd::geteuid().is_root() {
        return skip("loading a program needs root");
    }
    // Exit with R0 never written: the verifier refuses it.
    let exit_only = &program::verdict(false)[1..];
    let err = bpf::prog_load(
        BPF_PROG_TYPE_CGROUP_DEVICE,
        BPF_CGROUP_DEVICE,
        exit_only,
        c"GPL",
    )
    .unwrap_err();
    assert_eq!(err.raw_os_error(), None, "message attached: {err}");
    let text = lower_io(&err);
    assert!(
        text.starts_with("permission denied: verifier: ") && text.contains("R0 !read_ok"),
        "{text}"
    );
}
