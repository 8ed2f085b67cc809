//! The legacy prestart hook SIGKILLed while it configures a real runc container: the hook
//! process itself, or the child it forks to work in the container's mount namespace, at random
//! delays spread over its measured runtime and at fixed points (right after exec, right after
//! fork, the child frozen while its parent dies). After every kill: `runc create` failed and
//! says the hook did, the host's mount table is unchanged, `runc delete` leaves no state or
//! cgroup, and the same bundle then starts with every GPU and a valid ld.so.cache.

use crate::common::container::*;
use crate::common::engines::create_logged;
use crate::common::{is_root, nvbox, skip_or_fail};
use crate::{Rng, hold_host_mounts, hold_load, host_mounts};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const CAPS: &[&str] = &["compute", "utility"];
/// Kills that must land (the process was alive when SIGKILL was sent), split over parent/child.
const LANDED: usize = 24;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Victim {
    /// The hook runc started.
    Hook,
    /// The hook's forked child (setns into the container, mounts, ld.so.cache).
    Child,
}

fn nvbox_exe() -> &'static Path {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(|| std::fs::canonicalize(nvbox()).unwrap())
}

fn is_nvbox(pid: i32) -> bool {
    std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|e| e == nvbox_exe())
}

fn alive(pid: i32) -> bool {
    // A zombie has no exe link: it has done all it will do.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, r)| !r.starts_with('Z')))
        .unwrap_or(false)
}

/// Children of every thread of `pid` (runc is a Go program: any thread may have forked).
fn children(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let list = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
        out.extend(
            list.split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok()),
        );
    }
    out
}

/// Poll (every 100 µs) until `f` answers or the deadline passes.
fn poll<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_micros(100));
    }
}

fn mnt_ns(pid: i32) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/ns/mnt")).ok()
}

fn find_hook(runc: i32) -> Option<i32> {
    children(runc).into_iter().find(|&p| is_nvbox(p))
}

fn find_child(hook: i32) -> Option<i32> {
    children(hook).into_iter().find(|&p| is_nvbox(p))
}

/// One `runc create` of a fresh hooked bundle, stderr into a file (the container's init
/// inherits runc's stdio, so a pipe would not close while it lives).
struct Create {
    bundle: Bundle,
    id: String,
    state: PathBuf,
    child: Child,
    stderr: PathBuf,
    /// A hook child this test froze: killed on drop whatever happened.
    frozen: Option<i32>,
}

fn start_create(host: &Host, n: usize) -> Create {
    let mut bundle = Bundle::new(true);
    bundle.script(PROBE);
    bundle.env(&["NVIDIA_VISIBLE_DEVICES=all"]);
    bundle.hook(host);
    let id = format!("nvbox-kill-{}-{n}", std::process::id());
    bundle.spec["linux"]["cgroupsPath"] = json!(format!("/{id}"));
    let config = serde_json::to_vec_pretty(&bundle.spec).unwrap();
    std::fs::write(bundle.path().join("config.json"), config).unwrap();
    let state = scratch().join("kill-runc");
    let stderr = bundle.path().join("create.err");
    let child = create_logged(Command::new(RUNC), &state, bundle.path(), &id, &stderr)
        .spawn()
        .unwrap();
    Create {
        bundle,
        id,
        state,
        child,
        stderr,
        frozen: None,
    }
}

impl Create {
    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn wait(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.success();
            }
            if Instant::now() > deadline {
                // runc waits for EOF on the hook's stdout, which a surviving child holds open.
                panic!(
                    "runc create {} hung after the kill (a hook child still holds its pipes?)",
                    self.id
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn runc(&self, args: &[&str]) -> std::process::Output {
        Command::new(RUNC)
            .arg("--root")
            .arg(&self.state)
            .args(args)
            .arg(&self.id)
            .output()
            .unwrap()
    }
}

impl Drop for Create {
    fn drop(&mut self) {
        if let Some(ch) = self.frozen {
            let _ = kill(Pid::from_raw(ch), Signal::SIGKILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = self.runc(&["delete", "--force"]);
    }
}

/// How long the hook and its child live in an undisturbed create, from when the poller first
/// sees each to when each is gone.
fn measure(host: &Host) -> (Duration, Duration) {
    let mut hook_times = Vec::new();
    let mut child_times = Vec::new();
    for n in 0..3 {
        let mut c = start_create(host, 1000 + n);
        let hook = poll(Duration::from_secs(10), || find_hook(c.pid())).expect("hook never ran");
        let t0 = Instant::now();
        let child = poll(Duration::from_secs(10), || match find_child(hook) {
            Some(p) => Some(Some(p)),
            None if !alive(hook) => Some(None),
            None => None,
        })
        .unwrap();
        let t1 = Instant::now();
        if let Some(child) = child {
            poll(Duration::from_secs(10), || (!alive(child)).then_some(()));
            child_times.push(t1.elapsed());
        }
        poll(Duration::from_secs(10), || (!alive(hook)).then_some(()));
        hook_times.push(t0.elapsed());
        assert!(
            c.wait(),
            "undisturbed create failed: {}",
            std::fs::read_to_string(&c.stderr).unwrap_or_default()
        );
    }
    assert!(!child_times.is_empty(), "the hook's child was never seen");
    hook_times.sort();
    child_times.sort();
    (
        hook_times[hook_times.len() / 2],
        child_times[child_times.len() / 2],
    )
}

/// What one round did.
struct Round {
    victim: Victim,
    delay: Duration,
    /// SIGKILL reached a live process.
    landed: bool,
    /// Entries the killed attempt left in the rootfs (placeholders, links, a cache temp file).
    leftovers: Vec<String>,
}

/// `stop_child_first`: freeze the child, then kill the hook (the child must die with it).
fn kill_round(host: &Host, n: usize, victim: Victim, delay: Duration, stop_child: bool) -> Round {
    let before_mounts = host_mounts();
    let mut c = start_create(host, n);
    let pristine = snapshot(&c.bundle.rootfs);
    let want = expected(host, "all", CAPS, &c.bundle.rootfs);
    // The poller may miss a whole hook run on a busy machine: then nothing is killed.
    let hook = poll(Duration::from_secs(10), || match find_hook(c.pid()) {
        Some(h) => Some(Some(h)),
        None => (!alive(c.pid())).then_some(None),
    })
    .expect("runc create neither ran the hook nor exited");
    let mut child = None;
    let target = match (victim, hook) {
        (_, None) => None,
        (Victim::Hook, hook) => hook,
        (Victim::Child, Some(hook)) => poll(Duration::from_secs(10), || match find_child(hook) {
            Some(p) => Some(Some(p)),
            None if !alive(hook) => Some(None),
            None => None,
        })
        .unwrap(),
    };
    let hook = hook.unwrap_or(0);
    let mut landed = false;
    if let Some(pid) = target {
        if stop_child {
            // Frozen once it has entered the container's mount namespace (past its setup).
            child = poll(Duration::from_secs(10), || {
                find_child(hook).filter(|&ch| mnt_ns(ch).is_some_and(|m| Some(m) != mnt_ns(hook)))
            });
            let ch = child.expect("the child never entered the container");
            kill(Pid::from_raw(ch), Signal::SIGSTOP).unwrap();
            c.frozen = Some(ch);
        } else {
            std::thread::sleep(delay);
            if victim == Victim::Hook {
                child = find_child(hook);
            }
        }
        landed = alive(pid) && is_nvbox(pid) && kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok();
    }
    let created = c.wait();
    let stderr = std::fs::read_to_string(&c.stderr).unwrap_or_default();
    if landed {
        assert!(
            !created,
            "runc create succeeded after the {victim:?} was killed"
        );
        assert!(
            stderr.contains("hook"),
            "runc does not name the hook failure: {stderr}"
        );
        if victim == Victim::Child {
            assert!(
                stderr.contains("mount error: child killed by SIGKILL"),
                "the hook does not report its child's death clearly: {stderr}"
            );
        }
        eprintln!(
            "round {n}: {victim:?} killed after {delay:?}: {}",
            stderr.trim()
        );
    } else {
        assert!(created, "create failed without a kill: {stderr}");
        eprintln!("round {n}: {victim:?} had exited before the kill after {delay:?}");
    }
    // A child whose hook died must not live on to mount into a dying container (or race the
    // retry on the same rootfs): it gets SIGKILL with its parent.
    if let Some(ch) = child.filter(|_| victim == Victim::Hook && landed) {
        let gone = poll(Duration::from_secs(2), || (!alive(ch)).then_some(()));
        if gone.is_none() {
            let _ = kill(Pid::from_raw(ch), Signal::SIGKILL);
            panic!("the hook's child {ch} outlived the killed hook");
        }
    }
    let del = c.runc(&["delete", "--force"]);
    let state = c.runc(&["state"]);
    assert!(
        !state.status.success(),
        "runc still knows {} after delete: {}",
        c.id,
        text(&del.stderr)
    );
    assert!(!c.state.join(&c.id).exists(), "runc state dir left");
    let cg = Path::new("/sys/fs/cgroup/devices").join(&c.id);
    assert!(
        poll(Duration::from_secs(2), || (!cg.exists()).then_some(())).is_some(),
        "device cgroup {} left",
        cg.display()
    );
    assert_eq!(host_mounts(), before_mounts, "a mount leaked into the host");
    let after = snapshot(&c.bundle.rootfs);
    let leftovers: Vec<String> = after
        .iter()
        .filter(|(k, v)| pristine.get(*k) != Some(*v))
        .map(|(k, v)| format!("{k} ({v})"))
        .collect();

    // The retry: the same bundle, a new container, everything injected.
    let retry = run_runc(&mut c.bundle);
    assert!(
        retry.created,
        "retry after killing the {victim:?} failed: {}",
        retry.create_stderr
    );
    assert_injected(&parse_probe(&retry.stdout), &want, host);
    assert_cgroup(&retry.devices_list, &want.cgroup, host);
    assert_ldcache(&c.bundle.rootfs, &want);
    assert!(
        !c.bundle.rootfs.join("etc/.ld.so.cache~nvbox").exists(),
        "the retry left a cache temp file"
    );
    assert_eq!(host_mounts(), before_mounts, "the retry leaked a mount");
    Round {
        victim,
        delay,
        landed,
        leftovers,
    }
}

fn ready() -> bool {
    if !is_root() {
        skip_or_fail("killing the hook needs root (runc)");
        return false;
    }
    have_prerequisites(&[RUNC, BUSYBOX])
}

#[test]
fn sigkill_during_configure_leaves_nothing_and_a_retry_works() {
    if !ready() {
        return;
    }
    let _load = hold_load();
    let _mounts = hold_host_mounts();
    let host = shared_host(&[]);
    let started = Instant::now();
    let (hook_t, child_t) = measure(host);
    eprintln!("undisturbed: hook lives {hook_t:?}, its child {child_t:?}");
    let mut rng = Rng::from_time("sigkill");
    let mut rounds = Vec::new();
    // Fixed points: the hook right after exec, the child right after fork, and the child
    // frozen while its hook dies.
    rounds.push(kill_round(host, 0, Victim::Hook, Duration::ZERO, false));
    rounds.push(kill_round(host, 1, Victim::Child, Duration::ZERO, false));
    let frozen = kill_round(host, 2, Victim::Hook, Duration::ZERO, true);
    assert!(
        frozen.landed,
        "the frozen-child round did not kill the hook"
    );
    rounds.push(frozen);
    // A miss means the process ran shorter than measured (the machine got faster): the span
    // for that victim halves, so the delays keep falling inside its run.
    let mut spans = [hook_t, child_t];
    let mut n = 3;
    while rounds.iter().filter(|r| r.landed).count() < LANDED + 3 && n < 3 * LANDED {
        let victim = if n % 2 == 0 {
            Victim::Hook
        } else {
            Victim::Child
        };
        let span = &mut spans[n % 2];
        let delay = Duration::from_micros(rng.below(span.as_micros() as u64));
        let round = kill_round(host, n, victim, delay, false);
        if !round.landed {
            *span /= 2;
        }
        rounds.push(round);
        n += 1;
    }
    let landed = |v: Victim| rounds.iter().filter(|r| r.landed && r.victim == v).count();
    let missed: Vec<String> = rounds
        .iter()
        .filter(|r| !r.landed)
        .map(|r| format!("{:?}@{:?}", r.victim, r.delay))
        .collect();
    let mut leftovers: Vec<&String> = rounds.iter().flat_map(|r| &r.leftovers).collect();
    leftovers.sort();
    leftovers.dedup();
    eprintln!(
        "{} rounds in {:?}: {} hook kills, {} child kills landed; missed (exited first): {missed:?}",
        rounds.len(),
        started.elapsed(),
        landed(Victim::Hook),
        landed(Victim::Child),
    );
    eprintln!("left in rootfs by killed attempts (the retries were correct): {leftovers:#?}");
    assert!(
        landed(Victim::Hook) >= 8 && landed(Victim::Child) >= 8,
        "too few kills landed: the delays do not fit the measured runtimes"
    );
}
