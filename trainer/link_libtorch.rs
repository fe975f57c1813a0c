//! The link arguments a binary running libtorch needs: an rpath to `LIBTORCH/lib` (so
//! it runs without LD_LIBRARY_PATH) and, with a CUDA libtorch, libtorch_cuda kept
//! linked. Cargo gives a build script's link arguments to its own package's targets
//! only, so the trainer's build script and the trainer worker's both include this file.

use std::path::PathBuf;

/// Prints the link arguments; returns LIBTORCH's root.
pub fn emit() -> PathBuf {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    let Ok(libtorch) = std::env::var("LIBTORCH") else {
        panic!("LIBTORCH is not set: source scripts/env.sh (it installs libtorch and sets it)");
    };
    let root = PathBuf::from(libtorch);
    let lib = root.join("lib");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    // tch's own `--no-as-needed -ltorch` does not reach the final binary, so with a CUDA
    // libtorch the linker would drop libtorch_cuda.so and CUDA would silently stay off.
    if lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-search=native={}", lib.display());
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,-ltorch,--as-needed");
    }
    root
}
