//! nvbox as a library: the module tree behind the multicall binary (src/main.rs), public so that
//! the fuzz targets in fuzz/ can drive each reader of untrusted bytes directly, without a process
//! or a filesystem per input. The binary is the only supported interface; these paths carry no
//! stability promise.

#![deny(unsafe_code)]

pub mod applets;
pub mod config;
pub mod discover;
pub mod doctor;
pub mod engines;
mod kmods;
pub mod live;
mod log;
pub mod mock;
pub mod plan;
pub mod privilege;
pub mod report;
pub mod request;
pub mod require;
pub mod select;
pub mod spec;
mod sys;
#[cfg(test)]
mod testing;
pub mod version;

use std::ffi::OsString;
use std::process::ExitCode;

/// An applet's entry point: the arguments after argv[0], and the name it was invoked as.
pub type AppletMain = fn(&str, Vec<OsString>) -> ExitCode;

/// Installable applets: `nvbox --list` prints these and `symlinks.sh` links each one.
pub const APPLETS: &[(&str, AppletMain)] = &[
    ("nvidia-cdi-hook", applets::cdi_hook::main),
    ("nvidia-container-cli", applets::cli::main),
    ("nvidia-container-runtime", applets::runtime::main),
    ("nvidia-container-runtime.cdi", applets::runtime::main),
    ("nvidia-container-runtime.legacy", applets::runtime::main),
    ("nvidia-container-runtime-hook", applets::hook::main),
    ("nvidia-container-toolkit", applets::hook::main),
    ("nvidia-ctk", applets::ctk::main),
    ("nvidia-ctk-installer", applets::installer::main),
    ("nvidia-docker", applets::docker::main),
];
