//! Lets the `absa-trainer` binary and this crate's tests find libtorch at run time
//! without LD_LIBRARY_PATH, and keeps CUDA libtorch linked when it is there.

#[path = "../trainer/link_libtorch.rs"]
mod link_libtorch;

fn main() {
    println!("cargo:rerun-if-changed=../trainer/link_libtorch.rs");
    link_libtorch::emit();
}
