//! Least privilege (SECURITY.md, "Privilege model"): the prestart hook and `configure` work when
//! started with a bounding set no wider than libnvidia-container's permitted set, and each
//! phase runs with exactly the effective set the code declares. The sets are read back by the
//! debug log from /proc/self/status while each phase runs; the table below is SECURITY.md's.

mod common;

use common::container::*;
use common::sandbox::Sandbox;
use common::*;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;

/// libnvidia-container's permitted set, as setpriv spells a bounding set of exactly those.
const UPSTREAM_BOUNDING: &str = "-all,+chown,+dac_override,+dac_read_search,+fowner,+kill,\
+mknod,+net_admin,+setgid,+setpcap,+setuid,+sys_admin,+sys_chroot,+sys_ptrace";

/// Each phase's effective set (capability numbers in ascending order).
const DECLARED: &[(&str, &str)] = &[
    ("discover", "none"),
    ("kmods", "cap_chown,cap_dac_override,cap_fowner,cap_mknod"),
    ("container", "cap_dac_read_search,cap_sys_ptrace"),
    (
        "mount",
        "cap_dac_override,cap_dac_read_search,cap_setgid,cap_setuid,cap_sys_chroot,\
cap_sys_ptrace,cap_sys_admin",
    ),
    ("ldcache", "none"),
    ("cgroup", "cap_net_admin,cap_sys_admin"),
    ("done", "none"),
];

const PERMITTED: &str = "cap_dac_override,cap_dac_read_search,cap_setgid,cap_setuid,\
cap_net_admin,cap_sys_chroot,cap_sys_ptrace,cap_sys_admin";

fn setpriv_prefix() -> Vec<String> {
    [
        "/usr/bin/setpriv",
        "--bounding-set",
        UPSTREAM_BOUNDING,
        "--inh-caps",
        "-all",
        "--",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The phases the debug log reports, in order, with their effective sets.
fn logged_phases(log: &str) -> Vec<(String, String)> {
    log.lines()
        .filter_map(|l| l.split_once("] privileges: phase ").map(|(_, r)| r))
        .filter_map(|r| r.split_once(": effective "))
        .map(|(p, s)| (p.to_string(), s.to_string()))
        .collect()
}

/// With `--load-kmods` (config.toml's default), the module phase's capabilities stay permitted
/// and no_new_privs waits until the modules are loaded.
const PERMITTED_KMODS: &str = "cap_chown,cap_dac_override,cap_dac_read_search,cap_fowner,\
cap_setgid,cap_setuid,cap_net_admin,cap_sys_chroot,cap_sys_ptrace,cap_sys_admin,cap_mknod";

/// Every logged phase has its declared set; `must` phases all appear; the process gave up its
/// bounding set (to libnvidia-container's {dac_override, sys_module}, of which setpriv left
/// dac_override) before the first phase.
fn assert_phases(log: &str, must: &[&str], permitted: &str, nnp: u8) {
    let declared: BTreeMap<&str, &str> = DECLARED.iter().copied().collect();
    let phases = logged_phases(log);
    for (phase, set) in &phases {
        let want = declared
            .get(phase.as_str())
            .unwrap_or_else(|| panic!("undeclared phase {phase} in:\n{log}"));
        assert_eq!(set, want, "phase {phase}'s effective set");
    }
    for m in must {
        assert!(
            phases.iter().any(|(p, _)| p == m),
            "phase {m} missing from the log:\n{log}"
        );
    }
    assert_eq!(phases.first().map(|(p, _)| p.as_str()), Some("discover"));
    let want =
        format!("privileges: bounding cap_dac_override permitted {permitted} no_new_privs {nnp}");
    assert!(log.contains(&want), "want {want} in:\n{log}");
}

#[test]
fn configure_in_upstreams_bounding_set() {
    if !is_root() {
        skip_or_fail("configure needs root");
        return;
    }
    let dir = TempDir::new("priv-configure");
    let text = mock(&dir.path().join("host"), &["--gpus", "2"]);
    let cfg = dir.path().join("config.toml");
    std::fs::write(&cfg, text).unwrap();
    let log = dir.path().join("debug.log");
    let sb = Sandbox::new(
        &dir.path().join("rootfs"),
        "mkdir -p etc && touch etc/debian_version",
    );
    let prefix = setpriv_prefix();
    let out = command(&prefix[0])
        .args(&prefix[1..])
        .arg(nvbox())
        .env("NVIDIA_CTK_CONFIG_FILE_PATH", &cfg)
        .args([
            "nvidia-container-cli",
            &format!("--debug={}", log.display()),
            "configure",
            "--no-cgroups",
            "--device=all",
            "--compute",
            "--utility",
            "--pid",
            &sb.pid(),
            sb.root.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let r = sb.root.display();
    let got = sb.sh(&format!(
        "stat -c '%t:%T' {r}/dev/nvidia1; readlink {r}/usr/lib/x86_64-linux-gnu/libcuda.so.1"
    ));
    assert_eq!(got, "c3:1\nlibcuda.so.535.104.05\n");
    let log = std::fs::read_to_string(&log).unwrap();
    assert_phases(
        &log,
        &["discover", "container", "mount", "ldcache", "done"],
        PERMITTED,
        1,
    );
}

/// The whole legacy path under runc, cgroups included, for a user-namespaced container: the
/// child re-enters `mount` after it takes the container root's fsuid (the kernel clears file
/// capabilities then) and the log says so.
#[test]
fn hook_in_upstreams_bounding_set() {
    if !have_prerequisites(&[RUNC, BUSYBOX, "/usr/bin/setpriv"]) {
        return;
    }
    let base = shared_host(&[]);
    let dir = TempDir::new("priv-hook");
    let log = dir.path().join("debug.log");
    let config = dir.path().join("config.toml");
    let toml = std::fs::read_to_string(&base.config).unwrap().replace(
        "[nvidia-container-cli]\n",
        &format!("[nvidia-container-cli]\ndebug = \"{}\"\n", log.display()),
    );
    std::fs::write(&config, toml).unwrap();
    let host = Host {
        root: base.root.clone(),
        config,
    };
    let mut bundle = Bundle::new(true);
    bundle.script(PROBE);
    bundle.env(&["NVIDIA_VISIBLE_DEVICES=0"]);
    bundle.hook(&host);
    bundle.map_ids(300000);
    let mut args = setpriv_prefix();
    args.push(hook_path().display().to_string());
    args.push("prestart".into());
    bundle.spec["hooks"]["prestart"][0]["path"] = json!("/usr/bin/setpriv");
    bundle.spec["hooks"]["prestart"][0]["args"] = json!(args);
    let want = expected(&host, "0", &["compute", "utility"], &bundle.rootfs);
    let run = run_runc(&mut bundle);
    assert!(run.created, "runc create failed:\n{}", run.create_stderr);
    assert_injected(&parse_probe(&run.stdout), &want, &host);
    assert_cgroup(&run.devices_list, &want.cgroup, &host);
    let log = std::fs::read_to_string(&log).unwrap();
    assert_phases(
        &log,
        &[
            "discover",
            "kmods",
            "container",
            "mount",
            "ldcache",
            "cgroup",
            "done",
        ],
        PERMITTED_KMODS,
        0,
    );
    // The modules' capabilities go, and no_new_privs comes, before the container is looked at.
    let loaded = format!("privileges: modules loaded: permitted {PERMITTED} no_new_privs 1");
    let at = log
        .find(&loaded)
        .unwrap_or_else(|| panic!("want {loaded} in:\n{log}"));
    assert!(at < log.find("phase container").unwrap(), "{log}");
    // The child takes the mapped root's fsuid, which clears its file capabilities, and
    // raises its declared set again: two `mount` lines from two processes.
    let mounts: Vec<&str> = log.lines().filter(|l| l.contains("phase mount")).collect();
    assert_eq!(mounts.len(), 2, "{log}");
    assert!(Path::new(&bundle.rootfs).join("etc/ld.so.cache").exists());
}

/// `list` (and `info`) keep nothing at all: discovery reads root's own files.
#[test]
fn list_keeps_no_capability() {
    if !is_root() {
        skip_or_fail("list as root");
        return;
    }
    let dir = TempDir::new("priv-list");
    let text = mock(&dir.path().join("host"), &["--gpus", "2"]);
    let cfg = dir.path().join("config.toml");
    std::fs::write(&cfg, text).unwrap();
    let log = dir.path().join("debug.log");
    let out = command(nvbox())
        .env("NVIDIA_CTK_CONFIG_FILE_PATH", &cfg)
        .args([
            "nvidia-container-cli",
            &format!("--debug={}", log.display()),
            "list",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("/dev/nvidia1\n"), "{}", stdout(&out));
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(
        log.contains(
            "privileges: bounding cap_dac_override,cap_sys_module permitted none no_new_privs 1"
        ),
        "{log}"
    );
    assert_eq!(
        logged_phases(&log),
        [("discover".to_string(), "none".to_string())]
    );
}

/// An `nvidia-cdi-hook` started as full root: the bounding set of libnvidia-container, the
/// hook's set permitted, nothing effective while it reads the state, the hook's set while it
/// writes, and nothing while `update-ldcache` parses the image's cache.
#[test]
fn cdi_hook_phases() {
    if !is_root() {
        skip_or_fail("the hook's privileges as root");
        return;
    }
    let dir = TempDir::new("priv-cdi-hook");
    let rootfs = dir.path().join("rootfs");
    std::fs::create_dir_all(rootfs.join("etc")).unwrap();
    std::fs::create_dir_all(rootfs.join("usr/lib64")).unwrap();
    let state = dir.path().join("state.json");
    let s = json!({"ociVersion": "1.0.2", "id": "c", "status": "creating", "pid": 0,
                   "bundle": dir.path(), "root": rootfs});
    std::fs::write(&state, s.to_string()).unwrap();
    let out = command(nvbox())
        .args([
            "nvidia-cdi-hook",
            "--debug",
            "update-ldcache",
            "--folder",
            "/usr/lib64",
        ])
        .arg("--container-spec")
        .arg(&state)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let log = stderr(&out);
    let hook = "cap_dac_override,cap_dac_read_search,cap_fowner,cap_setgid,cap_setuid,\
cap_sys_chroot,cap_sys_admin";
    assert!(
        log.contains(&format!(
            "privileges: bounding cap_dac_override,cap_sys_module permitted {hook} no_new_privs 1"
        )),
        "{log}"
    );
    let phases = logged_phases(&log);
    let want: Vec<(String, String)> = [("discover", "none"), ("hook", hook), ("ldcache", "none")]
        .iter()
        .map(|(p, s)| (p.to_string(), s.to_string()))
        .collect();
    assert_eq!(phases, want, "{log}");
    assert!(rootfs.join("etc/ld.so.cache").exists());
}
