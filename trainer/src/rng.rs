//! Dropout that draws from the calling thread's own generator when it has one
//! (`csrc/rng.cpp`), so threads that train parts of one batch at the same time each
//! draw reproducible masks. Elsewhere (no thread generator, CUDA) it is libtorch's
//! dropout with its process-wide generator.

use std::cell::Cell;

use tch::{Device, Tensor};

extern "C" {
    fn absa_rng_seed_thread(seed: u64);
    fn absa_rng_clear_thread();
    fn absa_rng_bernoulli_(t: *mut std::ffi::c_void, p: f64) -> i32;
}

thread_local! {
    static SEEDED: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with the calling thread's generator seeded with `seed`, then drops it
/// (also when `f` panics).
pub fn with_thread_seed<T>(seed: u64, f: impl FnOnce() -> T) -> T {
    struct Clear;
    impl Drop for Clear {
        fn drop(&mut self) {
            // SAFETY: resets this thread's own generator.
            unsafe { absa_rng_clear_thread() };
            SEEDED.with(|s| s.set(false));
        }
    }
    // SAFETY: sets this thread's own generator.
    unsafe { absa_rng_seed_thread(seed) };
    SEEDED.with(|s| s.set(true));
    let _clear = Clear;
    f()
}

/// Inverted dropout (`torch.nn.functional.dropout`): in training, zeroes each element
/// with probability `p` and scales the rest by 1 / (1 - p).
pub fn dropout(xs: &Tensor, p: f64, train: bool) -> Tensor {
    if !train || p == 0.0 {
        return xs.shallow_clone();
    }
    if xs.device() != Device::Cpu || !SEEDED.with(Cell::get) {
        return xs.dropout(p, train);
    }
    // ATen's own CPU dropout, with the mask from this thread's generator.
    let mut noise = xs.empty_like();
    // SAFETY: `noise` is a live CPU tensor; tch's tensor handle is libtorch's
    // at::Tensor*, which the shim fills in place.
    let rc = unsafe { absa_rng_bernoulli_(noise.as_mut_ptr() as *mut std::ffi::c_void, 1.0 - p) };
    assert_eq!(rc, 0, "libtorch refused a Bernoulli draw into a {:?} tensor", xs.kind());
    let _ = noise.g_div_scalar_(1.0 - p);
    xs * noise
}

/// A seed derived from `seed` for item `n` (a micro-batch of an epoch, a part of a
/// micro-batch): SplitMix64's finaliser, so neighbouring items get unrelated seeds.
pub fn derive_seed(seed: u64, n: u64) -> u64 {
    let mut z = seed ^ n.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Runs `f` with its dropout drawn from `seed` on `device`: on the CPU from this
/// thread's own generator, on CUDA from the default generators reseeded (libtorch's
/// CUDA dropout and attention draw from those).
pub fn with_seed<T>(device: Device, seed: u64, f: impl FnOnce() -> T) -> T {
    if device.is_cuda() {
        tch::Cuda::manual_seed_all(seed);
        f()
    } else {
        with_thread_seed(seed, f)
    }
}
