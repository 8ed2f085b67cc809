//! One module per role; each exposes `main(name, args) -> ExitCode` for the dispatch table.

pub mod cdi_hook;
pub mod cli;
pub mod ctk;
pub mod docker;
pub mod hook;
pub mod installer;
pub mod runtime;
