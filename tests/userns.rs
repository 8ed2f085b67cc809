//! User-namespaced containers (issue 16): runc with uid/gid 0 mapped to 300000, as Docker's
//! `userns-remap`, Podman's `--userns=auto` and Kubernetes user namespaces make them, through
//! the legacy prestart hook and through jit-cdi. The container must get its GPUs, libraries and
//! loader cache, and nothing that nvbox leaves in the rootfs may belong to host root (which is
//! `nobody` inside, or EOVERFLOW on the namespace's own /dev tmpfs).

mod common;

use common::container::*;
use common::engines::*;
use serde_json::json;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

const DEFAULT_CAPS: &[&str] = &["compute", "utility"];
const HOST_ID: u64 = 300000;

fn ready() -> bool {
    have_prerequisites(&[RUNC, BUSYBOX])
}

/// Every inode under the rootfs (what the hooks left after the container's mounts went away)
/// that host root owns.
fn owned_by_host_root(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = std::fs::symlink_metadata(&p).unwrap();
        if m.uid() == 0 || m.gid() == 0 {
            out.push(format!("{} {}:{}", p.display(), m.uid(), m.gid()));
        }
        if m.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().flatten().map(|e| e.path()));
        }
    }
    out
}

#[test]
fn legacy_hook_in_a_user_namespace() {
    if !ready() {
        return;
    }
    let host = shared_host(&[]);
    let mut bundle = Bundle::new(true);
    bundle.script(PROBE);
    bundle.env(&["NVIDIA_VISIBLE_DEVICES=1,3"]);
    bundle.hook(host);
    bundle.map_ids(HOST_ID as u32);
    let want = expected(host, "1,3", DEFAULT_CAPS, &bundle.rootfs);
    let run = run_runc(&mut bundle);
    assert!(run.created, "runc create failed:\n{}", run.create_stderr);
    assert_injected(&parse_probe(&run.stdout), &want, host);
    assert_cgroup(&run.devices_list, &want.cgroup, host);
    assert_ldcache(&bundle.rootfs, &want);
    assert_eq!(owned_by_host_root(&bundle.rootfs), Vec::<String>::new());
}

/// The same through the mount path for kernels without `open_tree` (mounts by
/// /proc/thread-self/fd, remounted with MS_BIND, as upstream does for user namespaces).
#[test]
fn legacy_hook_in_a_user_namespace_old_mount_api() {
    if !ready() {
        return;
    }
    let host = shared_host(&[]);
    let mut bundle = Bundle::new(false);
    bundle.script(PROBE);
    bundle.env(&["NVIDIA_VISIBLE_DEVICES=0"]);
    bundle.hook(host);
    let env = bundle.spec["hooks"]["prestart"][0]["env"]
        .as_array_mut()
        .unwrap();
    env.push(json!("NVBOX_MOUNT_API=legacy"));
    bundle.map_ids(HOST_ID as u32);
    let want = expected(host, "0", DEFAULT_CAPS, &bundle.rootfs);
    let run = run_runc(&mut bundle);
    assert!(run.created, "runc create failed:\n{}", run.create_stderr);
    assert_injected(&parse_probe(&run.stdout), &want, host);
    assert_ldcache(&bundle.rootfs, &want);
    assert_eq!(owned_by_host_root(&bundle.rootfs), Vec::<String>::new());
}

#[test]
fn legacy_hook_in_a_user_namespace_with_ldconfig() {
    if !ready() {
        return;
    }
    let base = shared_host(&[]);
    let dir = common::TempDir::new("userns-ldconfig");
    let config = dir.path().join("config.toml");
    let toml = std::fs::read_to_string(&base.config).unwrap();
    std::fs::write(
        &config,
        toml.replace("[nvbox]", "[nvbox]\nldcache = \"ldconfig\""),
    )
    .unwrap();
    assert!(
        std::fs::read_to_string(&config)
            .unwrap()
            .contains("ldcache = \"ldconfig\"")
    );
    let host = Host {
        root: base.root.clone(),
        config,
    };
    let mut bundle = Bundle::new(true);
    bundle.script(PROBE);
    bundle.env(&["NVIDIA_VISIBLE_DEVICES=0"]);
    bundle.hook(&host);
    // The image's own ldconfig, run as the container's root.
    std::fs::create_dir_all(bundle.rootfs.join("sbin")).unwrap();
    std::fs::copy("/sbin/ldconfig", bundle.rootfs.join("sbin/ldconfig")).unwrap();
    bundle.map_ids(HOST_ID as u32);
    let want = expected(&host, "0", DEFAULT_CAPS, &bundle.rootfs);
    let run = run_runc(&mut bundle);
    assert!(run.created, "runc create failed:\n{}", run.create_stderr);
    assert_injected(&parse_probe(&run.stdout), &want, &host);
    let cache = std::fs::metadata(bundle.rootfs.join("etc/ld.so.cache")).unwrap();
    assert_eq!((cache.uid() as u64, cache.gid() as u64), (HOST_ID, HOST_ID));
    assert_eq!(owned_by_host_root(&bundle.rootfs), Vec::<String>::new());
}

#[test]
fn jit_cdi_in_a_user_namespace() {
    if !ready() {
        return;
    }
    let host = shared_host(&[]);
    let config = ShimConfig::mode(host, "jit-cdi");
    let mut bundle = Bundle::new(true);
    bundle.script(&probe_with_env());
    bundle.env(&["NVIDIA_VISIBLE_DEVICES=all"]);
    bundle.map_ids(HOST_ID as u32);
    let want = expected_jit(host, "all", &bundle.rootfs);
    let wrap = mock_dev_namespace(host);
    let wrap: Vec<&str> = wrap.iter().map(String::as_str).collect();
    let run = run_shim_via(&wrap, &mut bundle, &config.path, &[]);
    assert!(run.created, "create failed:\n{}", run.create_stderr);
    assert_jit_injected(&parse_probe(&run.stdout), &want);
    assert_cgroup_rules(&run.devices_list, &want.cgroup, host, "rwm");
    assert_ldcache(&bundle.rootfs, &want);
    assert_eq!(owned_by_host_root(&bundle.rootfs), Vec::<String>::new());
}

/// A wrapper that runs its arguments in a private mount namespace whose /dev holds the mock's
/// nodes at their container paths: a runtime in a user namespace cannot mknod, so it
/// bind-mounts each device from the path the spec names, and the simulated nodes live under
/// the mock's root. Nothing changes in the machine's own /dev.
pub fn mock_dev_namespace(host: &Host) -> Vec<String> {
    let real = scratch().join("real-dev");
    std::fs::create_dir_all(&real).unwrap();
    let script = format!(
        r#"set -e
mount --rbind /dev {real}
mount -t tmpfs -o mode=755 nvbox-test-dev /dev
for f in null zero full random urandom tty ptmx; do touch /dev/$f; mount --bind {real}/$f /dev/$f; done
mkdir /dev/shm /dev/pts /dev/mqueue
mount -t tmpfs -o mode=1777 nvbox-test-shm /dev/shm
mount --rbind {real}/pts /dev/pts
[ -d {real}/mqueue ] && mount --rbind {real}/mqueue /dev/mqueue 2>/dev/null || true
for n in {mock}/nvidia*; do
  b=${{n##*/}}
  if [ -d "$n" ]; then mkdir /dev/$b; mount --rbind "$n" /dev/$b; else touch /dev/$b; mount --bind "$n" /dev/$b; fi
done
exec "$@""#,
        real = real.display(),
        mock = host.root.join("dev").display(),
    );
    [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        &script,
        "sh",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Docker's `--userns-remap=default`: dockerd makes (or reuses) the `dockremap` user and its
/// subordinate ranges, runs every container in a user namespace with root mapped to the start
/// of that range, and `docker run --gpus all` goes through our prestart hook.
#[test]
fn docker_userns_remap_gpus_all() {
    if !have_prerequisites(&[DOCKERD, DOCKER, CONTAINERD, RUNC, BUSYBOX]) {
        return;
    }
    let host = shared_host(&[]);
    let path = format!("{}:{SYSTEM_PATH}", applet_dir().display());
    let remap = json!({"userns-remap": "default"});
    let daemon = Dockerd::start_with(Some(&host.config), DaemonConfig::Json(&remap), &path);
    let image = common::TempDir::new("userns-image");
    let rootfs = image.path().join("rootfs");
    make_rootfs(&rootfs, true);
    daemon.import(&rootfs, "nvbox-busybox-userns");
    let probe = format!("cat /proc/self/uid_map; {PROBE}");
    let out = daemon
        .command()
        .args(["run", "--rm", "--network", "none", "--gpus", "all"])
        .args(["nvbox-busybox-userns", "sh", "-c", &probe])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker run --gpus all: {}\ndockerd log:\n{}",
        text(&out.stderr),
        daemon.log()
    );
    let stdout = text(&out.stdout);
    let map: Vec<&str> = stdout.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(map[0], "0");
    assert_ne!(
        map[1], "0",
        "the container must be user-namespaced: {map:?}"
    );
    let want = expected(host, "all", DEFAULT_CAPS, &rootfs);
    let probe = parse_probe(&stdout);
    assert_injected(&probe, &want, host);
    assert_cgroup(&probe.cgroup, &want.cgroup, host);
}

const ROOTLESS_USER: &str = "nvbox-rootless";
const PODMAN: &str = "/usr/bin/podman";

/// A system user with a subordinate id range, made once per machine: what a rootless engine
/// needs (`newuidmap` maps the range into the user's namespace).
fn rootless_user() -> (u32, u32) {
    let id = |flag: &str| {
        let out = std::process::Command::new("id")
            .args([flag, ROOTLESS_USER])
            .output()
            .unwrap();
        out.status
            .success()
            .then(|| text(&out.stdout).trim().parse::<u32>().unwrap())
    };
    if id("-u").is_none() {
        let out = std::process::Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
            ])
            .arg(ROOTLESS_USER)
            .output()
            .unwrap();
        // A concurrent run may have made it first.
        assert!(
            out.status.success() || id("-u").is_some(),
            "useradd: {}",
            text(&out.stderr)
        );
    }
    let has_range = |file: &str| {
        std::fs::read_to_string(file)
            .unwrap_or_default()
            .lines()
            .any(|l| l.starts_with(&format!("{ROOTLESS_USER}:")))
    };
    if !has_range("/etc/subuid") || !has_range("/etc/subgid") {
        let out = std::process::Command::new("usermod")
            .args([
                "--add-subuids",
                "200000-265535",
                "--add-subgids",
                "200000-265535",
            ])
            .arg(ROOTLESS_USER)
            .output()
            .unwrap();
        assert!(out.status.success(), "usermod: {}", text(&out.stderr));
    }
    (id("-u").unwrap(), id("-g").unwrap())
}

/// What the probes below print: the id map, the nodes, libcuda's soname link and its cache entry.
const ROOTLESS_PROBE: &str = "cat /proc/self/uid_map; stat -c '%n %t:%T' /dev/nvidia* | sort; \
    readlink /usr/lib/x86_64-linux-gnu/libcuda.so.1; \
    test -f /usr/lib/x86_64-linux-gnu/libcuda.so.535.104.05 && echo lib-present; \
    echo CACHE=$(grep -c libcuda.so.1 /etc/ld.so.cache)";

/// `podman RUN_ARGS… nvbox-rootless sh -c PROBE` as the unprivileged [`ROOTLESS_USER`], in a
/// private mount and pid namespace of the test holding the mock's nodes at /dev (a rootless
/// runtime cannot mknod, so it bind-mounts each node from its container path), `spec_dir` at
/// /run/cdi (podman 4.3 reads specs only from /etc/cdi and /var/run/cdi) and `hooks_dir` as
/// podman's hooks directory. podman's pause process and conmon end with the namespace.
fn rootless_podman(
    host: &Host,
    spec_dir: Option<&Path>,
    hooks_dir: Option<&Path>,
    run_args: &str,
) -> (u32, std::process::Output) {
    let (uid, gid) = rootless_user();
    let dir = common::TempDir::new("rootless-podman");
    let rootfs = dir.path().join("rootfs");
    make_rootfs(&rootfs, true);
    // Podman refuses a runroot longer than 50 characters: a short home of its own.
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let short = common::TempDir(std::path::PathBuf::from(format!(
        "/tmp/nvbox-rl-{}-{n}",
        std::process::id()
    )));
    let home = short.path().to_path_buf();
    for sub in ["run", "tmp"] {
        std::fs::create_dir_all(home.join(sub)).unwrap();
    }
    for p in [home.clone(), home.join("run"), home.join("tmp")] {
        std::os::unix::fs::chown(&p, Some(uid), Some(gid)).unwrap();
    }
    let mut podman = format!(
        "{PODMAN} --cgroup-manager=cgroupfs --storage-driver=vfs --root {h}/storage \
         --runroot {h}/run/storage --tmpdir {h}/tmp --events-backend=file",
        h = home.display()
    );
    if let Some(d) = hooks_dir {
        podman.push_str(&format!(" --hooks-dir {}", d.display()));
    }
    let as_user = format!(
        "setpriv --reuid={uid} --regid={gid} --clear-groups env -i HOME={h} \
         XDG_RUNTIME_DIR={h}/run PATH=/usr/sbin:/usr/bin:/sbin:/bin",
        h = home.display()
    );
    let mut setup = String::new();
    let made_run_cdi = spec_dir.is_some() && !Path::new("/run/cdi").exists();
    if let Some(spec) = spec_dir {
        setup.push_str(&format!(
            "mkdir -p /run/cdi\nmount --bind {} /run/cdi\n",
            spec.display()
        ));
        if Path::new("/etc/cdi").is_dir() {
            setup.push_str("mount -t tmpfs none /etc/cdi\n");
        }
    }
    let script = format!(
        "set -e\n{setup}\
         tar -C {rootfs} -c . | {as_user} {podman} import - nvbox-rootless >/dev/null\n\
         {as_user} {podman} run --rm --network none {run_args} nvbox-rootless sh -c \"$1\"",
        rootfs = rootfs.display(),
    );
    let mut wrap = mock_dev_namespace(host);
    wrap.splice(
        1..1,
        ["--pid".into(), "--fork".into(), "--mount-proc".into()],
    );
    // The wrapper execs its arguments: here a shell running the script.
    wrap.extend([
        "sh".into(),
        "-c".into(),
        script,
        "sh".into(),
        ROOTLESS_PROBE.into(),
    ]);
    let out = std::process::Command::new(&wrap[0])
        .args(&wrap[1..])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    if made_run_cdi {
        let _ = std::fs::remove_dir("/run/cdi");
    }
    (uid, out)
}

/// The container's root is the user; it has the mock's GPUs and control nodes with their
/// numbers, libcuda with its soname link, and libcuda.so.1 in its loader cache.
fn assert_rootless_gpus(host: &Host, uid: u32, out: &std::process::Output) {
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "rootless podman run: {}\n{stdout}",
        text(&out.stderr)
    );
    let map: Vec<&str> = stdout.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        map[..2],
        ["0", &uid.to_string()],
        "the container's root is the user"
    );
    for g in host.gpus() {
        let (maj, min) = host.rdev(&format!("/dev/nvidia{}", g.minor));
        let want = format!("/dev/nvidia{} {maj:x}:{min:x}", g.minor);
        assert!(stdout.contains(&want), "{want} in:\n{stdout}");
    }
    let (maj, min) = host.rdev("/dev/nvidiactl");
    assert!(
        stdout.contains(&format!("/dev/nvidiactl {maj:x}:{min:x}")),
        "{stdout}"
    );
    assert!(
        stdout.contains("libcuda.so.535.104.05\nlib-present\n"),
        "{stdout}"
    );
    let cached = stdout
        .lines()
        .find_map(|l| l.strip_prefix("CACHE="))
        .and_then(|n| n.parse::<u32>().ok())
        .unwrap_or(0);
    assert!(cached >= 1, "libcuda.so.1 not in the ld.so.cache: {stdout}");
}

fn rootless_ready() -> bool {
    have_prerequisites(&[
        PODMAN,
        BUSYBOX,
        "/usr/bin/conmon",
        "/usr/bin/newuidmap",
        "/usr/bin/setpriv",
    ])
}

/// Rootless Podman with a spec from `nvidia-ctk cdi generate` and `--device nvidia.com/gpu=all`:
/// the runtime makes the nodes and mounts, the nvidia-cdi-hooks run as the namespace's root.
#[test]
fn rootless_podman_with_a_generated_spec() {
    if !rootless_ready() {
        return;
    }
    let host = shared_host(&["--gpus", "2"]);
    let spec_dir = common::TempDir::new("rootless-cdi");
    let hook = applet_dir().join("nvidia-cdi-hook");
    let out = std::process::Command::new(common::nvbox())
        .env("NVIDIA_CTK_CONFIG_FILE_PATH", &host.config)
        .args(["nvidia-ctk", "cdi", "generate", "--nvidia-cdi-hook-path"])
        .arg(&hook)
        .arg("--output")
        .arg(spec_dir.path().join("nvidia.yaml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "cdi generate: {}", text(&out.stderr));
    let (uid, out) = rootless_podman(
        host,
        Some(spec_dir.path()),
        None,
        "--device nvidia.com/gpu=all",
    );
    assert_rootless_gpus(host, uid, &out);
}

/// A hooks directory with NVIDIA's `oci-nvidia-hook.json` pointing at our prestart hook, with
/// `config` as its config.toml.
fn legacy_hooks_dir(config: &Path) -> common::TempDir {
    let dir = common::TempDir::new("rootless-hooks");
    let hook = json!({
        "version": "1.0.0",
        "hook": {
            "path": hook_path(),
            "args": ["nvidia-container-runtime-hook", "prestart"],
            "env": [
                format!("NVIDIA_CTK_CONFIG_FILE_PATH={}", config.display()),
                "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
            ],
        },
        "when": {"always": true, "commands": [".*"]},
        "stages": ["prestart"],
    });
    std::fs::write(
        dir.path().join("oci-nvidia-hook.json"),
        serde_json::to_vec_pretty(&hook).unwrap(),
    )
    .unwrap();
    dir
}

/// The mock host's config.toml with `no-cgroups = true` (or not), in its own directory.
fn hook_config(host: &Host, no_cgroups: bool) -> (common::TempDir, std::path::PathBuf) {
    let dir = common::TempDir::new("rootless-config");
    let path = dir.path().join("config.toml");
    let mut toml = std::fs::read_to_string(&host.config).unwrap();
    if no_cgroups {
        toml = toml.replace(
            "[nvidia-container-cli]\n",
            "[nvidia-container-cli]\nno-cgroups = true\n",
        );
    }
    std::fs::write(&path, toml).unwrap();
    (dir, path)
}

/// Rootless Podman through the legacy prestart hook with `no-cgroups = true`: the hook runs as
/// root of the user's namespace and mounts into the container as upstream's does.
#[test]
fn rootless_podman_legacy_hook_with_no_cgroups() {
    if !rootless_ready() {
        return;
    }
    let host = shared_host(&["--gpus", "2"]);
    let (_keep, config) = hook_config(host, true);
    let hooks = legacy_hooks_dir(&config);
    let (uid, out) = rootless_podman(
        host,
        None,
        Some(hooks.path()),
        "-e NVIDIA_VISIBLE_DEVICES=all",
    );
    assert_rootless_gpus(host, uid, &out);
}

/// Without `no-cgroups` the hook cannot program a cgroup it does not own: one line that says
/// what to set, before anything is mounted.
#[test]
fn rootless_podman_legacy_hook_without_no_cgroups_says_what_to_set() {
    if !rootless_ready() {
        return;
    }
    let host = shared_host(&["--gpus", "2"]);
    let (_keep, config) = hook_config(host, false);
    let hooks = legacy_hooks_dir(&config);
    let (_, out) = rootless_podman(
        host,
        None,
        Some(hooks.path()),
        "-e NVIDIA_VISIBLE_DEVICES=all",
    );
    assert!(!out.status.success(), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(
        err.contains(
            "nvidia-container-runtime-hook: cgroup error: cannot program the device cgroup from a \
             user namespace (rootless engine); set no-cgroups = true in [nvidia-container-cli]"
        ),
        "{err}"
    );
}

/// A runtime that runs the CDI hooks from the host (not inside the container's namespace, as
/// runc does): each hook finds the init's user namespace from the state's pid and creates its
/// links, ld.so.conf.d file and loader cache as the container's root.
#[test]
fn cdi_hooks_from_the_host_write_as_the_containers_root() {
    if !have_prerequisites(&["/usr/bin/unshare"]) {
        return;
    }
    let dir = common::TempDir::new("userns-cdi-host");
    let rootfs = dir.path().join("rootfs");
    make_rootfs(&rootfs, true);
    std::fs::create_dir_all(rootfs.join("usr/lib/x86_64-linux-gnu")).unwrap();
    Bundle::chown_tree(&rootfs, HOST_ID as u32);
    let id = HOST_ID.to_string();
    let mut init = userns_init(&format!("0 {id} 65536\n"));
    let pid = init.id();
    let state = dir.path().join("state.json");
    let s = json!({"ociVersion": "1.0.2", "id": "c", "status": "creating", "pid": pid,
                   "bundle": dir.path(), "root": rootfs});
    std::fs::write(&state, s.to_string()).unwrap();
    let hook = |args: &[&str]| {
        let out = common::command(common::nvbox())
            .arg("nvidia-cdi-hook")
            .args(args)
            .arg("--container-spec")
            .arg(&state)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    };
    hook(&[
        "create-symlinks",
        "--link",
        "libcuda.so.1::/usr/lib/x86_64-linux-gnu/libcuda.so",
    ]);
    hook(&["update-ldcache", "--folder", "/usr/lib/x86_64-linux-gnu"]);
    let _ = init.kill();
    let _ = init.wait();
    let link = std::fs::symlink_metadata(rootfs.join("usr/lib/x86_64-linux-gnu/libcuda.so"));
    assert_eq!(link.unwrap().uid() as u64, HOST_ID);
    assert!(rootfs.join("etc/ld.so.cache").exists());
    assert_eq!(owned_by_host_root(&rootfs), Vec::<String>::new());
}

/// A container's init: a process in a new user namespace whose id maps (`map` for both) we
/// write as its parent would.
fn userns_init(map: &str) -> std::process::Child {
    let init = std::process::Command::new("unshare")
        .args(["--user", "sleep", "60"])
        .spawn()
        .unwrap();
    let pid = init.id();
    let own_ns = std::fs::read_link("/proc/self/ns/user").unwrap();
    for _ in 0..200 {
        match std::fs::read_link(format!("/proc/{pid}/ns/user")) {
            Ok(ns) if ns != own_ns => break,
            _ => std::thread::sleep(std::time::Duration::from_millis(5)),
        }
    }
    for file in ["uid_map", "gid_map"] {
        std::fs::write(format!("/proc/{pid}/{file}"), map).unwrap();
    }
    init
}

/// A container whose root is mapped to no host user cannot own anything nvbox would create:
/// one line, nothing written.
#[test]
fn unmapped_container_root_is_refused_in_one_line() {
    if !have_prerequisites(&["/usr/bin/unshare"]) {
        return;
    }
    let dir = common::TempDir::new("userns-unmapped");
    let rootfs = dir.path().join("rootfs");
    make_rootfs(&rootfs, true);
    let mut init = userns_init(&format!("1 {HOST_ID} 65535\n"));
    let state = dir.path().join("state.json");
    let s = json!({"ociVersion": "1.0.2", "id": "c", "status": "creating", "pid": init.id(),
                   "bundle": dir.path(), "root": rootfs});
    std::fs::write(&state, s.to_string()).unwrap();
    let before = snapshot(&rootfs);
    let out = common::command(common::nvbox())
        .args([
            "nvidia-cdi-hook",
            "create-symlinks",
            "--link",
            "a::/usr/lib/b",
        ])
        .arg("--container-spec")
        .arg(&state)
        .output()
        .unwrap();
    let _ = init.kill();
    let _ = init.wait();
    assert!(!out.status.success());
    assert_eq!(
        text(&out.stderr),
        format!(
            "nvidia-cdi-hook: create-symlinks: container error: the container's root is not \
             mapped to a user of the host (user namespace of pid {}); nvbox cannot create files \
             it would own\n",
            init.id()
        )
    );
    assert_eq!(snapshot(&rootfs), before);
}

const ROOTLESS_DOCKERD: &str = "/usr/share/docker.io/contrib/dockerd-rootless.sh";

/// Rootless Docker: `dockerd-rootless.sh` (rootlesskit) as the unprivileged user, our hook on
/// its PATH with `no-cgroups = true`, and `docker run --gpus all`. Debian's dockerd 20.10 has no
/// CDI, so the legacy hook is Docker's only GPU path here. All in a private mount and pid
/// namespace of the test: the daemon and its containerd end with it.
#[test]
fn rootless_docker_gpus_all_with_no_cgroups() {
    if !have_prerequisites(&[
        DOCKERD,
        DOCKER,
        ROOTLESS_DOCKERD,
        "/usr/bin/rootlesskit",
        "/usr/bin/newuidmap",
        "/usr/bin/setpriv",
        BUSYBOX,
    ]) {
        return;
    }
    let host = shared_host(&["--gpus", "2"]);
    let (uid, gid) = rootless_user();
    let (_keep, config) = hook_config(host, true);
    let dir = common::TempDir::new("rootless-docker");
    let rootfs = dir.path().join("rootfs");
    make_rootfs(&rootfs, true);
    // containerd's socket paths must stay short.
    let short = common::TempDir(std::path::PathBuf::from(format!(
        "/tmp/nvbox-rd-{}",
        std::process::id()
    )));
    let h = short.path().to_path_buf();
    std::fs::create_dir_all(h.join("run")).unwrap();
    for p in [h.clone(), h.join("run")] {
        std::os::unix::fs::chown(&p, Some(uid), Some(gid)).unwrap();
    }
    let h = h.display();
    let docker = format!("DOCKER_CONFIG={h}/client {DOCKER} -H unix://{h}/run/d.sock");
    let script = format!(
        "set -e\n\
         setpriv --reuid={uid} --regid={gid} --clear-groups env -i HOME={h} \
         XDG_RUNTIME_DIR={h}/run PATH={bin}:/usr/sbin:/usr/bin:/sbin:/bin \
         NVIDIA_CTK_CONFIG_FILE_PATH={config} DOCKERD_ROOTLESS_ROOTLESSKIT_NET=host \
         DOCKERD_ROOTLESS_ROOTLESSKIT_PORT_DRIVER=none DOCKERD_ROOTLESS_ROOTLESSKIT_MTU=0 \
         {ROOTLESS_DOCKERD} --data-root {h}/data --exec-root {h}/exec -H unix://{h}/run/d.sock \
         --pidfile {h}/pid --iptables=false --ip6tables=false --bridge=none \
         --storage-driver=vfs >{h}/dockerd.log 2>&1 &\n\
         for i in $(seq 600); do {docker} version >/dev/null 2>&1 && break; sleep 0.1; done\n\
         {docker} info 2>/dev/null | grep -q rootless || {{ cat {h}/dockerd.log >&2; exit 3; }}\n\
         tar -C {rootfs} -c . | {docker} import - nvbox-rootless >/dev/null\n\
         {docker} run --rm --network none --gpus all nvbox-rootless sh -c \"$1\"",
        bin = applet_dir().display(),
        config = config.display(),
        rootfs = rootfs.display(),
    );
    let out = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--pid", "--fork"])
        .args(["--mount-proc", "sh", "-c", &script, "sh", ROOTLESS_PROBE])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_rootless_gpus(host, uid, &out);
}
