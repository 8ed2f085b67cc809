//! CDI (Container Device Interface) specs: the document model, spec directories with their
//! priorities and conflicts, and applying container edits to an OCI config.json (reference
//! nvidia-container-toolkit.md §2.5 cdi/jit-cdi modes, §7; ecosystem.md §3).
// Listing, generation and name checks serve `nvidia-ctk cdi` (the next issue); the runtime
// shim uses the registry and apply_edits.
#![allow(dead_code, unused_imports)]

mod apply;
mod model;
mod name;
mod registry;

pub use apply::apply_edits;
pub use model::{
    ContainerEdits, Device, DeviceNode, HOOK_NAMES, Hook, IntelRdt, Mount, NetDevice, Spec,
    minimum_version, parse_spec,
};
pub use name::{is_qualified_name, parse_qualified_name};
pub use registry::{LoadError, LoadedSpec, Registry, load_registry};

/// Spec directories when none are configured, lowest priority first.
pub const DEFAULT_SPEC_DIRS: [&str; 2] = ["/etc/cdi", "/var/run/cdi"];

#[cfg(test)]
#[path = "model_tests.rs"]
mod model_tests;

#[cfg(test)]
#[path = "registry_tests.rs"]
mod registry_tests;

#[cfg(test)]
#[path = "apply_tests.rs"]
mod apply_tests;
