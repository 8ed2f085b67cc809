//! 32 `nvidia-ctk runtime configure` processes started at once on one engine config, each
//! adding a runtime of its own name: the lock beside the file must serialise every
//! read-modify-write, so the file parses afterwards and holds all 32 runtimes (a lost update
//! drops names; a torn write does not parse), and no temp file is left.

use crate::common::{TempDir, command, nvbox};
use std::path::Path;
use std::process::Child;
use std::time::Instant;

const RUNS: usize = 32;

fn names() -> Vec<String> {
    (0..RUNS).map(|i| format!("nvidia-load-{i:02}")).collect()
}

/// Start every run before waiting for any, then require each to succeed.
fn configure_all(config: &Path, engine_args: &[&str]) {
    configure_via(&[config], engine_args);
}

/// As [`configure_all`], run i naming the file as `paths[i % len]` (a link and its target).
fn configure_via(paths: &[&Path], engine_args: &[&str]) {
    let config = paths[0];
    let t0 = Instant::now();
    let children: Vec<(String, Child)> = names()
        .into_iter()
        .enumerate()
        .map(|(i, name)| {
            let child = command(nvbox())
                .args(["nvidia-ctk", "runtime", "configure"])
                .args(engine_args)
                .arg(format!("--config={}", paths[i % paths.len()].display()))
                .arg(format!("--nvidia-runtime-name={name}"))
                .arg(format!("--nvidia-runtime-path=/opt/{name}/runtime"))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            (name, child)
        })
        .collect();
    let failed: Vec<String> = children
        .into_iter()
        .filter_map(|(name, c)| {
            let out = c.wait_with_output().unwrap();
            (!out.status.success())
                .then(|| format!("{name}: {}", String::from_utf8_lossy(&out.stderr)))
        })
        .collect();
    eprintln!(
        "{RUNS} concurrent configure {engine_args:?}: {:?}",
        t0.elapsed()
    );
    assert!(failed.is_empty(), "runs failed: {failed:#?}");
    let dir = config.parent().unwrap();
    let temps: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("nvbox-"))
        .collect();
    assert!(temps.is_empty(), "temp files left: {temps:?}");
}

fn missing(present: impl Fn(&str) -> Option<String>) -> Vec<String> {
    names()
        .into_iter()
        .filter(|n| present(n).as_deref() != Some(&format!("/opt/{n}/runtime")))
        .collect()
}

#[test]
fn thirty_two_concurrent_docker_configures_keep_every_runtime() {
    let dir = TempDir::new("ctk-concurrent-docker");
    let config = dir.path().join("daemon.json");
    std::fs::write(&config, "{\n  \"log-level\": \"warn\"\n}\n").unwrap();
    configure_all(&config, &["--runtime=docker"]);
    let text = std::fs::read_to_string(&config).unwrap();
    let v: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("daemon.json torn: {e}\n{text}"));
    assert_eq!(v["log-level"], "warn", "an unrelated key was lost");
    let lost = missing(|n| v["runtimes"][n]["path"].as_str().map(str::to_string));
    assert!(
        lost.is_empty(),
        "runtimes lost by concurrent runs: {lost:?}"
    );
    assert_eq!(v["runtimes"].as_object().unwrap().len(), RUNS);
}

/// Managed hosts often symlink daemon.json: runs naming the link and runs naming its target
/// must take the same lock.
#[test]
fn thirty_two_concurrent_configures_through_a_link_and_its_target() {
    let dir = TempDir::new("ctk-concurrent-link");
    let real = dir.path().join("real.json");
    std::fs::write(&real, "{}\n").unwrap();
    let link = dir.path().join("daemon.json");
    std::os::unix::fs::symlink("real.json", &link).unwrap();
    configure_via(&[&link, &real], &["--runtime=docker"]);
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    let text = std::fs::read_to_string(&real).unwrap();
    let v: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("daemon.json torn: {e}\n{text}"));
    let lost = missing(|n| v["runtimes"][n]["path"].as_str().map(str::to_string));
    assert!(
        lost.is_empty(),
        "runtimes lost by concurrent runs: {lost:?}"
    );
}

#[test]
fn thirty_two_concurrent_containerd_configures_keep_every_runtime() {
    let dir = TempDir::new("ctk-concurrent-containerd");
    // Absent at first: the first run to take the lock creates it.
    let config = dir.path().join("config.toml");
    configure_all(&config, &["--runtime=containerd", "--drop-in-config="]);
    let text = std::fs::read_to_string(&config).unwrap();
    let v: toml::Table =
        toml::from_str(&text).unwrap_or_else(|e| panic!("config.toml torn: {e}\n{text}"));
    let runtimes = v
        .get("plugins")
        .and_then(|p| p.get("io.containerd.grpc.v1.cri"))
        .and_then(|c| c.get("containerd"))
        .and_then(|c| c.get("runtimes"))
        .and_then(|r| r.as_table())
        .unwrap_or_else(|| panic!("no runtimes table:\n{text}"));
    let lost = missing(|n| {
        runtimes
            .get(n)?
            .get("options")?
            .get("BinaryName")?
            .as_str()
            .map(str::to_string)
    });
    assert!(
        lost.is_empty(),
        "runtimes lost by concurrent runs: {lost:?}\n{text}"
    );
    assert_eq!(runtimes.len(), RUNS);
}
