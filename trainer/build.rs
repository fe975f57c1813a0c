//! Lets the trainer's binaries and tests find libtorch at run time without
//! LD_LIBRARY_PATH, and keeps CUDA libtorch linked when it is there.

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    let Ok(libtorch) = std::env::var("LIBTORCH") else { return };
    let lib = std::path::Path::new(&libtorch).join("lib");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    // tch's own `--no-as-needed -ltorch` does not reach the final binary, so with a CUDA
    // libtorch the linker would drop libtorch_cuda.so and CUDA would silently stay off.
    if lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-search=native={}", lib.display());
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,-ltorch,--as-needed");
    }
}
