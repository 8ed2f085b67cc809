//! Version text, with the git commit `build.rs` recorded.

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const COMMIT: &str = env!("NVBOX_GIT_COMMIT");

/// `0.1.0 (commit 1a2b3c4d)`.
pub fn describe() -> String {
    format!("{VERSION} (commit {COMMIT})")
}
pub const BUILD_DATE: &str = env!("NVBOX_BUILD_DATE");
pub const COMPILER: &str = env!("NVBOX_RUSTC");
