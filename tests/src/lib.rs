//! End-to-end tests: the real binaries as processes against the real Postgres and
//! RabbitMQ. Helpers to find the binaries live here; the tests are in `tests/`.

use std::path::PathBuf;

/// Path of a workspace binary built next to this test (`cargo test --workspace`
/// builds every binary before running the tests).
pub fn binary(name: &str) -> PathBuf {
    let mut dir = std::env::current_exe().expect("test executable path");
    dir.pop(); // the test executable
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(path.exists(), "{} not built; run `cargo build --workspace` first", path.display());
    path
}
