//! Lets the trainer's binaries and tests find libtorch at run time without
//! LD_LIBRARY_PATH, keeps CUDA libtorch linked when it is there, and compiles the
//! C++ shims (csrc/: autocast dtype, malloc settings, c10d)
//! against libtorch's headers.

mod link_libtorch;

fn main() {
    println!("cargo:rerun-if-changed=csrc");
    let root = &link_libtorch::emit();
    let lib = root.join("lib");
    // The same flags torch-sys builds its own C++ wrapper with.
    libtorch_cpp(root, "c++17").file("csrc/autocast.cpp").file("csrc/memory.cpp").compile("absa_csrc");
    // c10d (csrc/distributed.cpp): libtorch 2.13's distributed headers need C++20, and
    // ProcessGroupGloo.hpp includes Gloo's own headers, which the wheel lacks (Debian's
    // libgloo-dev has them; scripts/native.sh installs it). NCCL when libtorch has CUDA.
    let mut dist = libtorch_cpp(root, "c++20");
    dist.file("csrc/distributed.cpp").flag("-DUSE_C10D_GLOO");
    if let Ok(gloo) = std::env::var("ABSA_GLOO_INCLUDE") {
        dist.include(gloo);
    }
    if lib.join("libtorch_cuda.so").exists() {
        // ProcessGroupNCCL.hpp reaches ATen's CUDA headers, which include the CUDA
        // toolkit's (runtime, cuBLAS, cuSPARSE, cuSOLVER) and nccl.h: the include
        // folders of the NVIDIA wheels torch depends on, colon-separated.
        let Ok(dirs) = std::env::var("ABSA_CUDA_INCLUDE") else {
            panic!("a CUDA libtorch needs ABSA_CUDA_INCLUDE: the NVIDIA wheels' include folders (scripts/gpu-kit.sh build sets it)");
        };
        for dir in dirs.split(':').filter(|d| !d.is_empty()) {
            dist.include(dir);
        }
        dist.flag("-DUSE_C10D_NCCL").flag("-DABSA_WITH_NCCL");
    }
    dist.compile("absa_distributed");
    println!("cargo:rerun-if-env-changed=ABSA_GLOO_INCLUDE");
    println!("cargo:rerun-if-env-changed=ABSA_CUDA_INCLUDE");
    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-lib=dylib=c10");
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
}

/// A C++ build against libtorch's headers with the flags its libraries were built with.
fn libtorch_cpp(root: &std::path::Path, standard: &str) -> cc::Build {
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .include(root.join("include"))
        .include(root.join("include/torch/csrc/api/include"))
        .flag(format!("-std={standard}"))
        .flag("-D_GLIBCXX_USE_CXX11_ABI=1")
        .flag("-DGLOG_USE_GLOG_EXPORT")
        .warnings(false);
    build
}
