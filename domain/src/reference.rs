//! Where the reference data and models live (`../shared` beside the checkout, or
//! `ABSA_SHARED`). Tests, benchmarks and the demo read them from there; nothing is
//! downloaded.

use std::path::PathBuf;

/// The shared folder, checked to hold `models/` and `data/`; the error says how to
/// point at it.
pub fn shared_dir() -> Result<PathBuf, String> {
    let dir = std::env::var_os("ABSA_SHARED").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"));
    if dir.join("models").is_dir() && dir.join("data").is_dir() {
        Ok(dir)
    } else {
        Err(format!("reference data and models not found in {}: set ABSA_SHARED to the shared folder", dir.display()))
    }
}
