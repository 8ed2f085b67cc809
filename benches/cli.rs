//! `cargo bench --bench cli`: median wall time of `nvidia-container-cli info` and `list` on an
//! 8-GPU simulated host, from fork+exec to exit — what a hook or a script pays per call. A
//! process that does nothing (`nvbox --version`) is measured in the same run, so the ratio
//! separates our work from the cost of starting any process on this machine.
//! Goal (issue 2): ≤ 1 ms each; upstream measured 7 ms each here with an instant fake NVML.
//! Static build: `NVBOX_BENCH_BIN=target/x86_64-unknown-linux-gnu/release/nvbox cargo bench --bench cli`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RUNS: usize = 400;

/// The binary under test: the static release build when NVBOX_BENCH_BIN names it (what users
/// install), else the one cargo built for this bench.
fn binary() -> String {
    std::env::var("NVBOX_BENCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_nvbox").to_string())
}

fn median_of(args: &[&str], env: &[(&str, &str)]) -> Duration {
    let bin = binary();
    let mut times = Vec::with_capacity(RUNS);
    for i in 0..RUNS + 20 {
        let start = Instant::now();
        let status = Command::new(&bin)
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .status()
            .expect("spawn nvbox");
        let took = start.elapsed();
        assert!(status.success(), "{args:?} failed");
        if i >= 20 {
            times.push(took); // the first runs warm the page cache
        }
    }
    times.sort();
    times[times.len() / 2]
}

fn main() {
    let dir = std::env::temp_dir().join(format!("nvbox-bench-{}", std::process::id()));
    let out = Command::new(binary())
        .arg("mock")
        .arg(&dir)
        .args(["--gpus", "8"])
        .output()
        .expect("nvbox mock");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cfg = dir.join("config.toml");
    std::fs::write(&cfg, &out.stdout).unwrap();
    let cfg = cfg.to_str().unwrap().to_string();
    let env = [("NVIDIA_CTK_CONFIG_FILE_PATH", cfg.as_str())];

    let base = median_of(&["--version"], &env);
    println!(
        "{}: 8 simulated H100, median of {RUNS} runs (fork+exec+exit)",
        binary()
    );
    println!(
        "{:<40} {:>9.3} ms",
        "nvbox --version (process start)",
        ms(base)
    );
    for (label, args) in [
        (
            "nvidia-container-cli info",
            &["nvidia-container-cli", "info"][..],
        ),
        (
            "nvidia-container-cli info --csv",
            &["nvidia-container-cli", "info", "--csv"][..],
        ),
        (
            "nvidia-container-cli list",
            &["nvidia-container-cli", "list"][..],
        ),
        (
            "nvidia-container-cli list --libraries",
            &["nvidia-container-cli", "list", "-l"][..],
        ),
    ] {
        let t = median_of(args, &env);
        println!(
            "{label:<40} {:>9.3} ms  (x{:.2} of process start, +{:.3} ms of work)",
            ms(t),
            t.as_secs_f64() / base.as_secs_f64(),
            ms(t) - ms(base)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
