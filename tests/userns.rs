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
