//! `nvidia-ctk cdi` (stub, being written).
use std::ffi::OsString;
use std::process::ExitCode;

use anyhow::{Result, bail};

use super::Global;

pub fn run(_g: &Global, _args: Vec<OsString>) -> Result<ExitCode> {
    bail!("cdi: not implemented yet")
}
