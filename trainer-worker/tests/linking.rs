//! The `absa-trainer` binary finds libtorch through its own run path (this crate's
//! build script sets it): it starts with LD_LIBRARY_PATH unset (the loader resolves
//! libtorch before `main`), as for a user who built it without sourcing scripts/env.sh.

use std::process::Command;

#[test]
fn the_trainer_binary_starts_without_ld_library_path_through_its_run_path() {
    let output = Command::new(env!("CARGO_BIN_EXE_absa-trainer")).args(["train", "--help"]).env_remove("LD_LIBRARY_PATH").output().expect("the binary starts");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let readelf = Command::new("readelf").arg("-d").arg(env!("CARGO_BIN_EXE_absa-trainer")).output().expect("readelf (binutils)");
    let dynamic = String::from_utf8_lossy(&readelf.stdout);
    let libtorch_lib = std::path::Path::new(&std::env::var("LIBTORCH").expect("LIBTORCH, as the build had it")).join("lib");
    assert!(
        dynamic.lines().any(|l| (l.contains("RUNPATH") || l.contains("RPATH")) && l.contains(&*libtorch_lib.to_string_lossy())),
        "no run path to {} in:\n{dynamic}",
        libtorch_lib.display()
    );
}
