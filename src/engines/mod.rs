//! Container engine configuration files that `nvidia-ctk runtime configure` edits: one module per
//! format (daemon.json, containerd and CRI-O TOML, OCI hook JSON), the TOML layout they share,
//! and how files are replaced (atomic, locked). Pure edits on parsed values; the applet decides
//! which files to read and write.
#![allow(dead_code)]

pub mod containerd;
pub mod crio;
pub mod docker;
pub mod file;
pub mod ocihook;
pub mod toml_doc;
