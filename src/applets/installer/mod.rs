//! `nvidia-ctk-installer` (alias `nvidia-toolkit`): what the GPU Operator's toolkit DaemonSet
//! runs on every node (upstream's cmd/nvidia-ctk-installer). It installs the toolkit into
//! `<install dir>/toolkit`, configures the engine for it, optionally writes the management CDI
//! spec, restarts the engine, then holds its pid file until SIGTERM/SIGINT and undoes the engine
//! config. It sits on top of the house: it calls `engines` and the CDI generator, never the
//! reverse.

mod engine;
mod flags;
mod options;
mod restart;
mod toolkit;

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, anyhow};
use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{SigSet, Signal};

use crate::report;

pub const NAME: &str = "nvidia-ctk-installer";

static DEBUG: AtomicBool = AtomicBool::new(false);

fn debug_enabled() -> bool {
    DEBUG.load(Ordering::Relaxed)
}

/// logrus's text layout, as upstream logs, on stderr.
fn info(msg: &str) {
    eprintln!("INFO[0000] {msg}");
}

fn warn(msg: &str) {
    eprintln!("WARN[0000] {msg}");
}

pub fn main(_name: &str, args: Vec<OsString>) -> ExitCode {
    report::finish(NAME, run(args))
}

fn run(args: Vec<OsString>) -> Result<ExitCode> {
    if args.first().is_some_and(|a| a == "--version" || a == "-v") {
        println!("{NAME} version {}", crate::version::describe());
        return Ok(ExitCode::SUCCESS);
    }
    let Some(values) = flags::parse(args, |k| std::env::var(k).ok())? else {
        print!("{}", flags::help());
        return Ok(ExitCode::SUCCESS);
    };
    let o = options::build(&values)?;
    DEBUG.store(o.debug, Ordering::Relaxed);
    info(&format!("Starting {NAME}"));
    // Blocked from the start, the stop signals wait until setup is complete and are then taken
    // by sigwait: a SIGTERM during the install still gets the undo (upstream exits at once).
    let stop = stop_signals();
    stop.thread_block().context("unable to block signals")?;
    let pid = PidFile::create(&o.pid_file)?;
    let result = install_and_wait(&o, &stop);
    pid.remove();
    result?;
    info(&format!("Completed {NAME}"));
    Ok(ExitCode::SUCCESS)
}

fn stop_signals() -> SigSet {
    let mut s = SigSet::empty();
    for sig in [
        Signal::SIGHUP,
        Signal::SIGINT,
        Signal::SIGQUIT,
        Signal::SIGPIPE,
        Signal::SIGTERM,
    ] {
        s.add(sig);
    }
    s
}

fn install_and_wait(o: &options::Options, stop: &SigSet) -> Result<()> {
    let root = o.toolkit_root();
    let rt = &o.runtime;
    let low_level = if !o.toolkit.low_level.is_empty() {
        o.toolkit.low_level.clone()
    } else {
        let mut found = match o.no_runtime_config {
            true => Vec::new(),
            false => engine::low_level_paths(rt)
                .map_err(|e| anyhow!("unable to determine runtime options: {e:#}"))?,
        };
        for d in ["runc", "crun"] {
            if !found.iter().any(|f| f == d) {
                found.push(d.to_owned());
            }
        }
        found
    };
    // The engine's files are planned (parsed, edited in memory, directories checked) before
    // anything is installed, so bad engine input changes nothing.
    let plan = match o.no_runtime_config {
        true => Vec::new(),
        false => engine::plan(rt, &root).map_err(|e| anyhow!("unable to setup runtime: {e:#}"))?,
    };
    toolkit::install(o, &low_level)?;
    if !o.no_runtime_config {
        engine::setup(rt, &plan).map_err(|e| anyhow!("unable to setup runtime: {e:#}"))?;
        restart::restart(rt)
            .map_err(|e| anyhow!("unable to restart {}: {e:#}", rt.engine.name()))?;
        info(&format!("Completed 'setup' for {}", rt.engine.name()));
    }
    if o.no_daemon {
        return Ok(());
    }
    info("Waiting for signal");
    let sig = stop.wait().context("unable to wait for signal")?;
    info(&format!("Received {sig}, cleaning up"));
    if !o.no_runtime_config
        && engine::cleanup(rt, &root, &plan)
            .map_err(|e| anyhow!("unable to cleanup runtime: {e:#}"))?
    {
        restart::restart(rt)
            .map_err(|e| anyhow!("unable to restart {}: {e:#}", rt.engine.name()))?;
        info(&format!("Completed 'cleanup' for {}", rt.engine.name()));
    }
    Ok(())
}

/// The pid file, locked for the life of the installer: a second one finds it locked and
/// refuses. Unlike upstream, the file is not truncated before the lock is won, so a refused
/// installer leaves the running one's pid in place.
struct PidFile {
    path: PathBuf,
    _lock: Flock<File>,
}

impl PidFile {
    fn create(path: &Path) -> Result<PidFile> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| {
                format!("unable to create folder for pidfile {}", dir.display())
            })?;
        }
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .with_context(|| format!("unable to create pidfile {}", path.display()))?;
        let mut lock = Flock::lock(f, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
            warn(&format!("Unable to get exclusive lock on '{}'", path.display()));
            anyhow!(
                "unable to get flock on pidfile {}: {e} (another instance of the toolkit installer is running)",
                path.display()
            )
        })?;
        lock.set_len(0)
            .and_then(|()| writeln!(&*lock, "{}", std::process::id()))
            .with_context(|| format!("unable to write PID to pidfile {}", path.display()))?;
        let _ = &mut lock;
        Ok(PidFile {
            path: path.to_path_buf(),
            _lock: lock,
        })
    }

    fn remove(self) {
        info("Shutting Down");
        if let Err(e) = std::fs::remove_file(&self.path) {
            warn(&format!("Unable to remove pidfile: {e}"));
        }
    }
}
