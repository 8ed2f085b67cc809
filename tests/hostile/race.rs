//! The race: while a path runs, a helper thread keeps exchanging rootfs directories
//! (`usr/lib/x86_64-linux-gnu`, `etc`, `dev`, `usr/local/cuda/compat`) with symlinks to the
//! host canaries, atomically (`renameat2(RENAME_EXCHANGE)`), so any path looked up twice, or
//! resolved outside the kernel's in-root walk, would sooner or later be sent to the host.
//! Repeated; the canaries must never be touched, and every failure must be a clean one.

use std::os::unix::fs::symlink;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};

use super::direct::run_in;
use super::layouts::LAYOUTS;
use super::sandbox::Sandbox;
use super::{Case, Outcome};

const ROUNDS: usize = 8;
const PATHS: &[&str] = &[
    "configure",
    "create-symlinks",
    "update-ldcache",
    "enable-cuda-compat",
    "chmod",
];

/// Swaps until dropped.
struct Swapper {
    stop: Arc<AtomicBool>,
    swaps: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Swapper {
    fn start(pairs: Vec<(PathBuf, PathBuf)>) -> Swapper {
        let stop = Arc::new(AtomicBool::new(false));
        let swaps = Arc::new(AtomicUsize::new(0));
        let (s, n) = (stop.clone(), swaps.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                for (a, b) in &pairs {
                    if renameat2(AT_FDCWD, a, AT_FDCWD, b, RenameFlags::RENAME_EXCHANGE).is_ok() {
                        n.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
        Swapper {
            stop,
            swaps,
            thread: Some(thread),
        }
    }
}

impl Drop for Swapper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub fn matrix() -> (Vec<&'static str>, Vec<(String, Vec<Outcome>)>) {
    let benign = LAYOUTS.iter().find(|l| l.name == "benign").unwrap();
    let mut rows = Vec::new();
    for (variant, prefix) in [("absolute", ""), ("../..", "../../../../../../../../../..")] {
        for path in PATHS {
            let mut cell = Outcome {
                ok: true,
                ..Outcome::default()
            };
            let (mut ok, mut swaps) = (0, 0);
            for _ in 0..ROUNDS {
                let case = Case::new(benign, "hostile-race");
                let r = &case.root;
                let h = &case.host;
                let pairs: Vec<(PathBuf, PathBuf)> = [
                    ("usr/lib/x86_64-linux-gnu", "usr/lib/.swap", h.dir()),
                    ("etc", ".swap-etc", h.etc()),
                    ("dev", ".swap-dev", h.dev()),
                    ("usr/local/cuda/compat", "usr/local/cuda/.swap", h.dir()),
                ]
                .into_iter()
                .map(|(dir, link, target)| {
                    let l = r.join(link);
                    symlink(format!("{prefix}{}", target.display()), &l).unwrap();
                    (r.join(dir), l)
                })
                .collect();
                let sandbox = match Sandbox::new("") {
                    Ok(s) => s,
                    Err(e) => {
                        cell.problems.push(e);
                        break;
                    }
                };
                let mut o = Outcome::default();
                {
                    let swapper = Swapper::start(pairs);
                    run_in(&case, &sandbox, path, &mut o, false);
                    swaps += swapper.swaps.load(Ordering::Relaxed);
                }
                if o.ok {
                    ok += 1;
                } else {
                    cell.ok = false;
                    cell.error = o.error;
                }
                cell.problems.extend(o.problems);
            }
            if swaps == 0 {
                cell.problems.push("the helper never swapped".into());
            }
            rows.push((
                format!("{path} <-> {variant} link ({ok}/{ROUNDS} ok, {swaps} swaps)"),
                vec![cell],
            ));
        }
    }
    (vec!["host untouched, clean outcome"], rows)
}
