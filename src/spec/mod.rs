//! The spec backend: OCI config.json edits and CDI specs (reference nvidia-container-toolkit.md
//! §2, §7). Unknown fields are preserved: specs are handled as `serde_json::Value`.

pub mod cdi;
pub mod features;
pub mod generate;
pub mod oci;
