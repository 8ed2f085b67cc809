//! Making the engine read its new config (upstream's RestartContainerd/RestartDocker/
//! RestartCrio): SIGHUP to the process behind its socket, `systemctl restart` (through the
//! host's root when the installer runs in a container), or nothing.

use std::path::Path;
use std::process::Command;

use anyhow::{Result, anyhow, bail};

use super::info;
use super::options::{Restart, RuntimeOptions};

/// Make the engine read its new config (upstream's RestartContainerd/RestartDocker/RestartCrio).
pub fn restart(o: &RuntimeOptions) -> Result<()> {
    let service = o.engine.name();
    match o.restart {
        Restart::None => {
            super::warn(&format!(
                "Skipping restart of {service} due to --restart-mode=none"
            ));
            Ok(())
        }
        Restart::Signal => signal(service, &o.socket),
        Restart::Systemd => {
            let mut cmd = match o.host_root.as_deref().filter(|r| *r != Path::new("/")) {
                Some(root) => {
                    info(&format!("Restarting {service} on host using systemd"));
                    let mut c = Command::new("chroot");
                    c.arg(root).arg("systemctl");
                    c
                }
                None => {
                    info(&format!("Restarting {service} using systemd"));
                    Command::new("systemctl")
                }
            };
            let status = cmd
                .args(["restart", service])
                .status()
                .map_err(|e| anyhow!("error restarting {service} using systemd: {e}"))?;
            if !status.success() {
                bail!("error restarting {service} using systemd: {status}");
            }
            Ok(())
        }
    }
}

const SIGNAL_ATTEMPTS: u32 = 6;
const SIGNAL_BACKOFF: std::time::Duration = std::time::Duration::from_secs(5);

/// SIGHUP to the process serving `socket` (its pid from SO_PEERCRED): dockerd reloads its
/// runtimes; containerd exits and its supervisor starts it again with the new config.
fn signal(service: &str, socket: &Path) -> Result<()> {
    info(&format!("Sending SIGHUP signal to {service}"));
    let once = || -> Result<()> {
        let stream = std::os::unix::net::UnixStream::connect(socket)
            .map_err(|e| anyhow!("unable to dial {}: {e}", socket.display()))?;
        let cred =
            nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials)
                .map_err(|e| anyhow!("unable to read the peer of {}: {e}", socket.display()))?;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(cred.pid()),
            nix::sys::signal::Signal::SIGHUP,
        )
        .map_err(|e| anyhow!("unable to send SIGHUP to '{service}' process: {e}"))
    };
    let mut attempt = 1;
    loop {
        match once() {
            Ok(()) => {
                info(&format!("Successfully signaled {service}"));
                return Ok(());
            }
            Err(e) if attempt == SIGNAL_ATTEMPTS => {
                return Err(e.context(format!(
                    "unable to signal {service} after {attempt} attempts"
                )));
            }
            Err(e) => {
                super::warn(&format!(
                    "Error signaling {service}, attempt {attempt}/{SIGNAL_ATTEMPTS}: {e:#}"
                ));
                std::thread::sleep(SIGNAL_BACKOFF);
                attempt += 1;
            }
        }
    }
}
