//! One module per role; each exposes `main(name, args) -> ExitCode` for the dispatch table.

pub mod cli;
pub mod hook;
