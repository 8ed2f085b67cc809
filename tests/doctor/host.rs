//! The doctor's checks of what the kernel and the process table say, proven both ways against
//! the real kernel: cgroup hierarchies arranged in a private mount namespace, a device-program
//! load refused by dropping the capabilities it needs, a non-root engine process in the real
//! process table; and CRI-O's effective config.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

use crate::common::container::applet_dir;
use crate::common::*;
use crate::setup::{PROCESS_TABLE, Setup, assert_healthy, not_ok, run_fix};

/// The doctor's command run by `sh -c SCRIPT` in a private mount namespace (`exec "$@"` ends
/// the script), so mounts made there vanish with it.
fn in_mount_namespace(doctor: &Command, script: &str) -> Output {
    let mut c = Command::new("unshare");
    c.args([
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        script,
        "sh",
    ]);
    c.arg(doctor.get_program()).args(doctor.get_args());
    for (k, v) in doctor.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c.output().unwrap()
}

fn lines_of(out: &Output) -> Vec<String> {
    stdout(out).lines().map(str::to_string).collect()
}

fn line_of<'a>(lines: &'a [String], check: &str) -> Option<&'a str> {
    let infix = format!("  {check}  — ");
    lines
        .iter()
        .find(|l| l.contains(&infix))
        .map(String::as_str)
}

const V2_ONLY: &str =
    "umount -R /sys/fs/cgroup && mount -t cgroup2 none /sys/fs/cgroup && exec \"$@\"";

#[test]
fn cgroup_hierarchy_as_the_kernel_has_it_mounted() {
    let Some(s) = Setup::new() else { return };
    // This host as it is (cgroup v1 hybrid): devices.allow, and the eBPF probe is not needed.
    let (code, lines) = s.doctor_read_only(&[]);
    assert_healthy(code, &lines);
    assert!(line_of(&lines, "bpf").is_none(), "{lines:#?}");
    let _table = PROCESS_TABLE.read().unwrap_or_else(|e| e.into_inner());
    let doctor = s.command(&Setup::env_path());

    let out = in_mount_namespace(&doctor, V2_ONLY);
    let lines = lines_of(&out);
    assert_eq!(
        line_of(&lines, "cgroups"),
        Some("ok    cgroups  — v2 only: device rules are eBPF programs on the container's cgroup")
    );
    assert_eq!(
        line_of(&lines, "bpf"),
        Some("ok    bpf  — device-cgroup eBPF programs load: GPU device rules can be set")
    );
    assert_eq!(not_ok(&lines), Vec::<String>::new());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let out = in_mount_namespace(&doctor, "umount -R /sys/fs/cgroup && exec \"$@\"");
    let lines = lines_of(&out);
    assert_eq!(
        not_ok(&lines),
        [
            "warn  cgroups  — no cgroup hierarchy mounted: device access cannot be restricted; fix: mount -t cgroup2 none /sys/fs/cgroup"
        ]
    );
    assert_eq!(out.status.code(), Some(0), "a warning alone does not fail");
}

#[test]
fn device_program_refused_without_cap_bpf() {
    let Some(s) = Setup::new() else { return };
    let _table = PROCESS_TABLE.read().unwrap_or_else(|e| e.into_inner());
    // Root without CAP_BPF and CAP_SYS_ADMIN, as in an engine started with those dropped.
    let script = "umount -R /sys/fs/cgroup && mount -t cgroup2 none /sys/fs/cgroup && exec setpriv --bounding-set=-sys_admin,-bpf --inh-caps=-sys_admin,-bpf \"$@\"";
    let out = in_mount_namespace(&s.command(&Setup::env_path()), script);
    let lines = lines_of(&out);
    let c = s.config.display();
    assert_eq!(
        not_ok(&lines),
        [format!(
            "fail  bpf  — bpf(BPF_PROG_LOAD) of a device program: Operation not permitted (os error 1): on cgroup v2 every GPU container fails (`bpf_prog_load(BPF_PROG_TYPE_CGROUP_DEVICE) failed`); fix: run the engine with CAP_BPF or CAP_SYS_ADMIN on a kernel with CONFIG_CGROUP_BPF, or leave device rules to the engine: nvidia-ctk config --config-file={c} --in-place --set nvidia-container-cli.no-cgroups"
        )]
    );
    assert_eq!(out.status.code(), Some(1));

    run_fix(&lines, "bpf");
    let out = in_mount_namespace(&s.command(&Setup::env_path()), script);
    let lines = lines_of(&out);
    assert_eq!(
        line_of(&lines, "bpf"),
        Some(
            "ok    bpf  — device programs do not load (Operation not permitted (os error 1)), and no-cgroups is set: GPU containers get no device rules"
        )
    );
    assert_eq!(out.status.code(), Some(0), "{lines:#?}");
}

#[test]
fn rootless_engine_without_no_cgroups() {
    let Some(s) = Setup::new() else { return };
    // A non-root process called dockerd in the real process table, as a rootless Docker runs.
    let fake = s.dir.path().join("rootless/dockerd");
    std::fs::create_dir_all(fake.parent().unwrap()).unwrap();
    std::fs::copy("/bin/sleep", &fake).unwrap();
    std::fs::set_permissions(s.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(
        fake.parent().unwrap(),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let _table = PROCESS_TABLE.write().unwrap_or_else(|e| e.into_inner());
    let mut engine = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&fake)
        .arg("60")
        .spawn()
        .unwrap();
    let pid = engine.id();
    // setpriv execs the engine: wait until the pid carries its name.
    for _ in 0..200 {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim() == "dockerd" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let run = |s: &Setup| {
        let out = s.command(&Setup::env_path()).output().unwrap();
        lines_of(&out)
    };
    let lines = run(&s);
    let c = s.config.display();
    let warn = format!(
        "warn  rootless  — engine pid {pid} runs rootless but {c} leaves nvidia-container-cli.no-cgroups false: GPU containers fail to start (the cgroup is not the engine's to write); fix: nvidia-ctk config --config-file={c} --in-place --set nvidia-container-cli.no-cgroups"
    );
    // The user has no subordinate ids either: a rootless engine could map none.
    let subids = format!(
        "warn  user namespace  — rootless dockerd (pid {pid}, user nobody) has no subordinate id range in /etc/subuid and /etc/subgid: containers cannot map their ids and fail to start (`cannot find mappings for user`, `newuidmap … write to uid_map failed`); fix: usermod --add-subuids 100000-165535 --add-subgids 100000-165535 nobody"
    );
    let result = std::panic::catch_unwind(|| {
        assert_eq!(not_ok(&lines), [warn, subids]);
        run_fix(&lines, "rootless");
        let lines = run(&s);
        assert_eq!(
            line_of(&lines, "rootless"),
            Some(
                format!("ok    rootless  — engine pid {pid} is rootless and no-cgroups is set")
                    .as_str()
            )
        );
    });
    engine.kill().unwrap();
    engine.wait().unwrap();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

#[test]
fn crio_without_the_runtime_and_with_the_hook() {
    let Some(s) = Setup::new() else { return };
    let drop_in = s.dir.path().join("crio/crio.conf.d/99-nvidia.toml");
    std::fs::remove_file(&drop_in).unwrap();
    let (code, lines) = s.doctor_read_only(&[]);
    let c = s.crio.display();
    let fix = format!(
        "nvidia-ctk runtime configure --runtime=crio --config={c} --drop-in-config={} --nvidia-runtime-path={} && systemctl restart crio",
        drop_in.display(),
        applet_dir().join("nvidia-container-runtime").display()
    );
    assert_eq!(
        not_ok(&lines),
        [format!(
            "fail  crio runtime  — no nvidia runtime in {c} and no oci-nvidia-hook.json in hooks_dir []: pods with runtimeClassName nvidia fail (`no runtime for \"nvidia\" is configured`); fix: {fix}"
        )]
    );
    assert_eq!(code, 1);

    // The printed fix repairs it (without the restart: no CRI-O runs here).
    run_fix(&lines, "crio runtime");
    let (code, lines) = s.doctor_read_only(&[]);
    assert_healthy(code, &lines);

    // A drop-in that does not parse stops CRI-O: named with its file.
    let broken = s.dir.path().join("crio/crio.conf.d/50-broken.conf");
    std::fs::write(&broken, "[crio.runtime\n").unwrap();
    let (code, lines) = s.doctor_read_only(&[]);
    let bad = not_ok(&lines);
    assert_eq!(bad.len(), 1, "{bad:#?}");
    assert!(
        bad[0].starts_with(&format!(
            "fail  crio runtime  — unable to parse {}: TOML parse error at line 1",
            broken.display()
        )) && bad[0].ends_with(&format!(
            "CRI-O refuses to start; fix: correct the TOML in {}",
            broken.display()
        )),
        "{}",
        bad[0]
    );
    assert_eq!(code, 1);
    std::fs::remove_file(&broken).unwrap();

    // The other way CRI-O gets GPUs: the prestart hook in its hooks_dir, no runtime.
    std::fs::remove_file(&drop_in).unwrap();
    let hooks = s.dir.path().join("crio/hooks.d");
    std::fs::write(
        &s.crio,
        format!("[crio.runtime]\nhooks_dir = [\"{}\"]\n", hooks.display()),
    )
    .unwrap();
    let hook_file = hooks.join("oci-nvidia-hook.json");
    let out = command(nvbox())
        .args([
            "nvidia-ctk",
            "runtime",
            "configure",
            "--runtime=crio",
            "--config-mode=oci-hook",
        ])
        .arg(format!("--oci-hook-path={}", hook_file.display()))
        .arg(format!(
            "--nvidia-runtime-hook-path={}",
            applet_dir().join("nvidia-container-runtime-hook").display()
        ))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let (code, lines) = s.doctor_read_only(&[]);
    assert_eq!(code, 0, "{lines:#?}");
    assert_eq!(
        line_of(&lines, "crio runtime"),
        Some(
            format!(
                "ok    crio runtime  — no nvidia runtime, but the NVIDIA prestart hook is in {}",
                hook_file.display()
            )
            .as_str()
        )
    );
}
