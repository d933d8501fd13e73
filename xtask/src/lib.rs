//! Project tooling shared by `cargo xtask` and the integration tests: pinned
//! versions, where tools live, how to install them and how to build fixtures.
pub mod build;
pub mod fixtures;
pub mod pins;
pub mod tools;
pub mod vm;

use std::path::PathBuf;

/// The workspace root (the directory holding the top Cargo.toml).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}
