//! The .deb and .rpm built from Cargo.toml's metadata (`cargo deb`, `cargo generate-rpm`) around
//! the static release binary (tests/run.sh builds it, and installs both cargo subcommands,
//! before `cargo test`). The .deb is installed for real with `dpkg --root` into a throwaway root
//! (never this machine's /usr), a GPU container runs through the applets it installed, then it
//! is purged and nothing of it is left. The .rpm's files, conffiles, relations and scripts are
//! read back with `rpm -qp`. The units pass `systemd-analyze verify` inside the installed root.

mod common;

use common::container::*;
use common::engines::*;
use common::*;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const TARGET: &str = "x86_64-unknown-linux-gnu";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn applets() -> Vec<String> {
    let out = Command::new(nvbox()).arg("--list").output().unwrap();
    stdout(&out).lines().map(str::to_owned).collect()
}

/// deploy/packaging/links (what the .deb installs in /usr/bin) is exactly `nvbox --list`.
#[test]
fn package_links_are_the_applet_list() {
    let dir = repo().join("deploy/packaging/links");
    let mut links = BTreeSet::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        assert_eq!(
            std::fs::read_link(&p).unwrap(),
            Path::new("nvbox"),
            "{}",
            p.display()
        );
        links.insert(p.file_name().unwrap().to_string_lossy().into_owned());
    }
    assert_eq!(links, applets().into_iter().collect::<BTreeSet<_>>());
}

/// The conffile is upstream's default file as `nvidia-ctk config default` renders it for a
/// host without /sbin/ldconfig.real (Debian, Fedora) that is not SUSE.
#[test]
fn packaged_config_is_the_default() {
    let out = Command::new(nvbox())
        .args(["nvidia-ctk", "config", "default"])
        .output()
        .unwrap();
    let mut want = stdout(&out);
    if Path::new("/sbin/ldconfig.real").exists() {
        want = want.replace("@/sbin/ldconfig.real", "@/sbin/ldconfig");
    }
    let got = std::fs::read_to_string(repo().join("deploy/packaging/config.toml")).unwrap();
    assert_eq!(got, want);
}

fn ready(tool: &str) -> Option<PathBuf> {
    if !have_prerequisites(&[RUNC, BUSYBOX, "/usr/bin/dpkg", "/usr/bin/rpm"]) {
        return None;
    }
    let bin = repo().join(format!("target/{TARGET}/release/nvbox"));
    if !bin.exists() {
        skip_or_fail(&format!(
            "{} is missing (tests/run.sh builds it)",
            bin.display()
        ));
        return None;
    }
    let home = std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cargo"));
    let exe = home.join("bin").join(tool);
    if !exe.exists() {
        skip_or_fail(&format!(
            "{tool} is not installed (tests/run.sh installs it)"
        ));
        return None;
    }
    Some(exe)
}

fn ok(what: &str, out: Output) -> String {
    assert!(
        out.status.success(),
        "{what}: {}{}",
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

/// `cargo deb`/`cargo generate-rpm` for the static build, into `out`.
fn build_package(exe: &Path, args: &[&str], out: &Path) {
    let mut c = Command::new(exe);
    let sub = exe
        .file_name()
        .unwrap()
        .to_string_lossy()
        .replace("cargo-", "");
    c.current_dir(repo()).arg(sub).args(args).arg("-o").arg(out);
    ok(&format!("{}", exe.display()), c.output().unwrap());
}

/// Every path under `root`, relative, directories with a trailing slash.
fn listing(root: &Path) -> BTreeSet<String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            if meta.is_dir() {
                out.insert(format!("{rel}/"));
                walk(root, &p, out);
            } else {
                out.insert(rel);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(root, root, &mut out);
    out
}

/// A root dpkg can install into: its database, and busybox for the maintainer scripts (dpkg
/// runs them chrooted into the root).
fn dpkg_root(root: &Path) {
    std::fs::create_dir_all(root.join("var/lib/dpkg/info")).unwrap();
    std::fs::create_dir_all(root.join("var/lib/dpkg/updates")).unwrap();
    std::fs::write(root.join("var/lib/dpkg/status"), "").unwrap();
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy(BUSYBOX, root.join("bin/busybox")).unwrap();
    for a in ["sh", "rm", "ln", "cat", "ldconfig", "start-stop-daemon"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(a)).unwrap();
    }
    // systemd's own targets, which `systemd-analyze verify --root` resolves the units against.
    let units = root.join("lib/systemd/system");
    std::fs::create_dir_all(&units).unwrap();
    for e in std::fs::read_dir("/lib/systemd/system").unwrap().flatten() {
        let name = e.file_name();
        if name.to_string_lossy().ends_with(".target") && e.path().is_file() {
            std::fs::copy(e.path(), units.join(&name)).unwrap();
        }
    }
}

fn dpkg(root: &Path, args: &[&str]) -> Output {
    Command::new("dpkg")
        .arg(format!("--root={}", root.display()))
        .arg("--log=/dev/null")
        .args(args)
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .output()
        .unwrap()
}

#[test]
fn deb_installs_runs_a_gpu_container_and_purges_cleanly() {
    let Some(cargo_deb) = ready("cargo-deb") else {
        return;
    };
    let tmp = TempDir::new("deb");
    let deb = tmp.path().join("nvbox.deb");
    build_package(&cargo_deb, &["--no-build", "--target", TARGET], &deb);
    let info = ok(
        "dpkg-deb -I",
        Command::new("dpkg-deb")
            .arg("-I")
            .arg(&deb)
            .output()
            .unwrap(),
    );
    for want in [
        "Package: nvbox",
        "Provides: nvidia-container-toolkit (= 1.20.0), nvidia-container-toolkit-base (= 1.20.0)",
        "Conflicts: nvidia-container-toolkit, nvidia-container-toolkit-base, libnvidia-container-tools, libnvidia-container1, nvidia-docker2",
        "Replaces: nvidia-container-toolkit,",
    ] {
        assert!(info.contains(want), "{want:?} not in:\n{info}");
    }
    let conffiles = ok(
        "dpkg-deb --ctrl-tarfile",
        Command::new("sh")
            .arg("-c")
            .arg(format!(
                "dpkg-deb --ctrl-tarfile {} | tar -xO ./conffiles",
                deb.display()
            ))
            .output()
            .unwrap(),
    );
    assert_eq!(
        conffiles.lines().collect::<BTreeSet<_>>(),
        BTreeSet::from([
            "/etc/nvidia-container-runtime/config.toml",
            "/etc/nvidia-container-toolkit/nvidia-cdi-refresh.env"
        ])
    );

    let root = tmp.path().join("root");
    dpkg_root(&root);
    let before = listing(&root);
    ok("dpkg -i", dpkg(&root, &["-i", deb.to_str().unwrap()]));
    let usr_bin = root.join("usr/bin");
    assert!(
        std::fs::read(usr_bin.join("nvbox")).unwrap()
            == std::fs::read(repo().join(format!("target/{TARGET}/release/nvbox"))).unwrap()
    );
    for a in applets() {
        assert_eq!(
            std::fs::read_link(usr_bin.join(&a)).unwrap(),
            Path::new("nvbox"),
            "{a}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(root.join("etc/nvidia-container-runtime/config.toml")).unwrap(),
        std::fs::read_to_string(repo().join("deploy/packaging/config.toml")).unwrap()
    );
    let status = ok("dpkg -s", dpkg(&root, &["-s", "nvbox"]));
    assert!(status.contains("Status: install ok installed"), "{status}");

    // The units, verified where they are installed (their ExecStart binaries are there).
    let verify = Command::new("systemd-analyze")
        .arg(format!("--root={}", root.display()))
        .args(["verify", "--man=no"])
        .arg("/lib/systemd/system/nvidia-cdi-refresh.service")
        .arg("/lib/systemd/system/nvidia-cdi-refresh.path")
        .output()
        .unwrap();
    let complaints = format!("{}{}", stdout(&verify), stderr(&verify));
    assert!(
        verify.status.success() && !complaints.contains("nvidia-cdi-refresh"),
        "{complaints}"
    );

    // A GPU container through the installed runtime (jit-cdi) and, with the installed hook on
    // PATH, through `.legacy`, on the simulated host.
    let host = shared_host(&[]);
    let shim = |name: &str| {
        let mut c = Command::new(usr_bin.join(name));
        c.env_clear()
            .env(
                "PATH",
                format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", usr_bin.display()),
            )
            .env("NVIDIA_CTK_CONFIG_FILE_PATH", &host.config);
        c
    };
    let mut bundle = Bundle::new(true);
    bundle.script(&probe_with_env());
    bundle.env(&["NVIDIA_VISIBLE_DEVICES=0,2"]);
    let want = expected_jit(host, "0,2", &bundle.rootfs);
    let run = run_shim_with(shim("nvidia-container-runtime"), &mut bundle, &[]);
    assert!(run.created, "create: {}", run.create_stderr);
    assert_jit_injected(&parse_probe(&run.stdout), &want);
    let mut bundle = Bundle::new(true);
    bundle.script(&probe_with_env());
    bundle.env(&["NVIDIA_VISIBLE_DEVICES=all"]);
    let want = expected(host, "all", &["compute", "utility"], &bundle.rootfs);
    let run = run_shim_with(shim("nvidia-container-runtime.legacy"), &mut bundle, &[]);
    assert!(run.created, "create: {}", run.create_stderr);
    assert_injected(&parse_probe(&run.stdout), &want, host);

    ok("dpkg --purge", dpkg(&root, &["--purge", "nvbox"]));
    let mut after = listing(&root);
    // dpkg's own bookkeeping may grow (backup status files); everything else must be gone.
    after.retain(|p| !p.starts_with("var/lib/dpkg/"));
    let mut base = before.clone();
    base.retain(|p| !p.starts_with("var/lib/dpkg/"));
    assert_eq!(after, base, "files left after purge");
}

#[test]
fn rpm_contents_metadata_and_scripts() {
    let Some(generate_rpm) = ready("cargo-generate-rpm") else {
        return;
    };
    let tmp = TempDir::new("rpm");
    let rpm = tmp.path().join("nvbox.rpm");
    build_package(&generate_rpm, &["--target", TARGET], &rpm);
    let q = |args: &[&str]| {
        ok(
            "rpm -qp",
            Command::new("rpm")
                .arg("-qp")
                .args(args)
                .arg(&rpm)
                .output()
                .unwrap(),
        )
    };
    let files: BTreeSet<String> = q(&["-l"]).lines().map(str::to_owned).collect();
    let want: BTreeSet<String> = [
        "/usr/bin/nvbox",
        "/etc/nvidia-container-runtime/config.toml",
        "/etc/nvidia-container-toolkit/nvidia-cdi-refresh.env",
        "/usr/lib/systemd/system/nvidia-cdi-refresh.service",
        "/usr/lib/systemd/system/nvidia-cdi-refresh.path",
        "/usr/lib/systemd/system-preset/90-nvidia-container-toolkit.preset",
        "/usr/lib/udev/rules.d/99-nvidia-cdi-refresh.rules",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(files, want);
    let info = q(&["-i"]);
    assert!(
        info.lines()
            .any(|l| l.starts_with("Name") && l.ends_with(": nvbox")),
        "{info}"
    );
    let config: BTreeSet<String> = q(&["-c"]).lines().map(str::to_owned).collect();
    assert_eq!(
        config,
        BTreeSet::from([
            "/etc/nvidia-container-runtime/config.toml".to_owned(),
            "/etc/nvidia-container-toolkit/nvidia-cdi-refresh.env".to_owned()
        ])
    );
    let provides = q(&["--provides"]);
    for name in [
        "nvidia-container-toolkit = 1.20.0",
        "nvidia-container-toolkit-base = 1.20.0",
        "libnvidia-container-tools = 1.20.0",
        "libnvidia-container1 = 1.20.0",
        "nvidia-docker2 = 2.14.0",
    ] {
        assert!(
            provides.lines().any(|l| l == name),
            "{name} not in {provides}"
        );
    }
    let conflicts = q(&["--conflicts"]);
    assert_eq!(conflicts.lines().count(), 5, "{conflicts}");
    // No dependency on a shared library: the binary is static.
    let requires = q(&["--requires"]);
    assert!(!requires.contains(".so"), "{requires}");
    // Maintainer scripts make links and reload; they restart no engine.
    let scripts = q(&["--scripts"]);
    assert!(scripts.contains("ln -sfn nvbox"), "{scripts}");
    for engine in ["docker", "containerd", "crio"] {
        assert!(!scripts.contains(&format!("restart {engine}")), "{scripts}");
    }
}
