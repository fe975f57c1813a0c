//! Dropout that draws from the calling thread's own generator when it has one, so
//! threads that train parts of one batch at the same time each draw reproducible
//! masks. Elsewhere (no thread generator, CUDA) it is libtorch's dropout with its
//! process-wide generator.
//!
//! The thread generator is counter-based: each mask gets a key from the seed and the
//! mask's number on the thread, and element `i` keeps its value when a hash of (key,
//! `i`) falls below (1 - p) of the 32-bit range. Every element is independent of the
//! others, so the loop vectorises: libtorch's CPU Bernoulli draws one element at a
//! time from a Mersenne Twister, which was ~6% of a bf16 training step.

use std::cell::Cell;

use tch::{Device, Kind, Tensor};

use crate::simd::{self, Kernel};

thread_local! {
    /// This thread's seed and the number of masks drawn from it so far.
    static GENERATOR: Cell<Option<(u64, u64)>> = const { Cell::new(None) };
}

/// Runs `f` with the calling thread's generator seeded with `seed`, then puts back the
/// generator the thread had before (also when `f` panics).
pub fn with_thread_seed<T>(seed: u64, f: impl FnOnce() -> T) -> T {
    struct Restore(Option<(u64, u64)>);
    impl Drop for Restore {
        fn drop(&mut self) {
            GENERATOR.with(|g| g.set(self.0));
        }
    }
    let _restore = Restore(GENERATOR.with(|g| g.replace(Some((seed, 0)))));
    f()
}

/// The next mask's key from this thread's generator, if it has one.
fn next_key() -> Option<u64> {
    GENERATOR.with(|g| {
        let (seed, drawn) = g.get()?;
        g.set(Some((seed, drawn + 1)));
        Some(derive_seed(seed, drawn))
    })
}

/// Inverted dropout (`torch.nn.functional.dropout`): in training, zeroes each element
/// with probability `p` and scales the rest by 1 / (1 - p).
pub fn dropout(xs: &Tensor, p: f64, train: bool) -> Tensor {
    if !train || p == 0.0 {
        return xs.shallow_clone();
    }
    let key = match next_key() {
        Some(key) if xs.device() == Device::Cpu && matches!(xs.kind(), Kind::Float | Kind::BFloat16) => key,
        _ => return xs.dropout(p, train),
    };
    // The scaled mask, as ATen's dropout makes it (Bernoulli(1 - p), then divided by
    // 1 - p in the tensor's dtype), then the same product, which autograd differentiates.
    let noise = Tensor::empty(xs.size(), (xs.kind(), Device::Cpu));
    let n = noise.numel();
    let threshold = ((1.0 - p) * 4_294_967_296.0).round().min(u32::MAX as f64) as u32;
    let scale = (1.0 / (1.0 - p)) as f32;
    // SAFETY: `noise` is a fresh contiguous CPU buffer of `n` elements of its kind.
    unsafe {
        match xs.kind() {
            Kind::Float => simd::widest(Mask { out: std::slice::from_raw_parts_mut(noise.data_ptr() as *mut f32, n), key, threshold, keep: scale, drop: 0.0 }),
            _ => simd::widest(Mask { out: std::slice::from_raw_parts_mut(noise.data_ptr() as *mut u16, n), key, threshold, keep: bf16_bits(scale), drop: 0 }),
        }
    }
    xs * noise
}

/// An f32 rounded to the nearest bf16 (ties to even), as libtorch converts.
fn bf16_bits(x: f32) -> u16 {
    let bits = x.to_bits();
    ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) as u16
}

/// `out[i]` = `keep` where the hash of (`key`, i) is below `threshold`, else `drop`.
struct Mask<'a, T> {
    out: &'a mut [T],
    key: u64,
    threshold: u32,
    keep: T,
    drop: T,
}

impl<T: Copy> Kernel for Mask<'_, T> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let Mask { out, key, threshold, keep, drop } = self;
        let (k0, k1) = (key as u32, (key >> 32) as u32);
        for (i, o) in out.iter_mut().enumerate() {
            *o = if uniform_u32(k0, k1, i as u32) < threshold { keep } else { drop };
        }
    }
}

/// A 32-bit hash of counter `i` under key (`k0`, `k1`): MurmurHash3's finaliser, a
/// bijection with full avalanche, applied twice with a key word mixed in before each.
#[inline(always)]
fn uniform_u32(k0: u32, k1: u32, i: u32) -> u32 {
    let fmix = |mut x: u32| {
        x ^= x >> 16;
        x = x.wrapping_mul(0x85EB_CA6B);
        x ^= x >> 13;
        x = x.wrapping_mul(0xC2B2_AE35);
        x ^ (x >> 16)
    };
    fmix(fmix(i.wrapping_mul(0x9E37_79B9) ^ k0) ^ k1)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn mask(kind: Kind, n: i64, seed: u64, p: f64) -> Vec<f32> {
        with_thread_seed(seed, || {
            let ones = Tensor::ones([n], (kind, Device::Cpu));
            Vec::try_from(dropout(&ones, p, true).to_kind(Kind::Float)).unwrap()
        })
    }

    #[test]
    fn the_thread_generators_masks_drop_p_scale_the_rest_and_repeat_by_seed() {
        let n = 1_000_000;
        for kind in [Kind::Float, Kind::BFloat16] {
            let a = mask(kind, n, 42, 0.1);
            // Kept values are 1 / (1 - p) in the tensor's dtype, as libtorch divides.
            let scale = Tensor::ones([1], (kind, Device::Cpu)).g_div_scalar(0.9).double_value(&[0]) as f32;
            assert!(a.iter().all(|&x| x == 0.0 || x == scale), "{kind:?}: values other than 0 and {scale}");
            // Binomial(1e6, 0.1): standard deviation 0.0003; 0.002 is over six of them.
            let dropped = a.iter().filter(|&&x| x == 0.0).count() as f64 / n as f64;
            assert!((dropped - 0.1).abs() < 0.002, "{kind:?}: dropped {dropped}");
            // Neighbours independent: P(both dropped) ~ p^2 (sd ~0.0003).
            let pairs = a.windows(2).filter(|w| w[0] == 0.0 && w[1] == 0.0).count() as f64 / (n - 1) as f64;
            assert!((pairs - 0.01).abs() < 0.002, "{kind:?}: adjacent drops {pairs}");
            assert_eq!(a, mask(kind, n, 42, 0.1), "{kind:?}: same seed, same mask");
            assert_ne!(a, mask(kind, n, 43, 0.1), "{kind:?}: another seed, another mask");
        }
        // Successive masks on one thread differ.
        let (first, second) = with_thread_seed(7, || {
            let ones = Tensor::ones([1000], (Kind::Float, Device::Cpu));
            (dropout(&ones, 0.5, true), dropout(&ones, 0.5, true))
        });
        assert!(!first.equal(&second));
    }

    #[test]
    fn without_a_thread_generator_or_in_eval_dropout_is_libtorchs() {
        let xs = Tensor::ones([1000], (Kind::Float, Device::Cpu));
        assert!(dropout(&xs, 0.1, false).equal(&xs), "eval: identity");
        let dropped = dropout(&xs, 0.5, true).eq(0.0).sum(Kind::Int64).int64_value(&[]);
        assert!((350..650).contains(&dropped), "libtorch's dropout dropped {dropped} of 1000");
    }
}
