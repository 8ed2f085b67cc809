//! The only module with `unsafe`: thin wrappers over syscalls that nix does not cover. Each block
//! carries a `// SAFETY:` note; everything above this module is safe Rust.
#![allow(unsafe_code)]

pub mod bpf;
pub mod caps;
pub mod mount;
pub mod process;
