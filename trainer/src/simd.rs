//! Loops run at the widest vector width the CPU has. The build targets the x86-64
//! baseline (SSE2); [`widest`] runs a loop compiled once more for AVX-512F and for AVX2
//! and picks by run-time detection. The same IEEE operations give the same bits at any
//! width, so results do not depend on the CPU.

/// A loop for [`widest`]. Its `run` must be `#[inline(always)]`, so that it is
/// compiled into each of `widest`'s variants with their instructions.
pub trait Kernel {
    type Output;
    fn run(self) -> Self::Output;
}

/// Runs `kernel` compiled for AVX-512F or AVX2 where the CPU has them, else as built.
pub fn widest<K: Kernel>(kernel: K) -> K::Output {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F (checked just above).
            return unsafe { avx512(kernel) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked just above).
            return unsafe { avx2(kernel) };
        }
    }
    kernel.run()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn avx512<K: Kernel>(kernel: K) -> K::Output {
    kernel.run()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn avx2<K: Kernel>(kernel: K) -> K::Output {
    kernel.run()
}
