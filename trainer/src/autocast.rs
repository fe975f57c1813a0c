//! Mixed precision: libtorch's autocast with bf16 as the reduced precision, fp32
//! master weights, gradients and optimizer states. tch 0.26 binds only CUDA autocast
//! with libtorch's default dtype (fp16); `csrc/autocast.cpp` sets the dtype per
//! device type, as `torch.autocast(device_type, dtype=torch.bfloat16)` does.

use absa_jobs::PrecisionChoice;
use tch::{Device, Kind};

extern "C" {
    fn absa_autocast_set(device_type: i32, enabled: bool, scalar_type: i32) -> i32;
    fn absa_autocast_is_enabled(device_type: i32) -> bool;
    fn absa_autocast_dtype(device_type: i32) -> i32;
    fn absa_autocast_enter() -> i32;
    fn absa_autocast_exit();
    fn absa_cpu_bf16_features() -> i32;
}

/// The CPU's bf16 instructions, as libtorch (its cpuinfo) detects them: with either,
/// oneDNN runs bf16 matrix products natively (AMX tiles or AVX-512 BF16 dot products);
/// without, bf16 is emulated and slower than fp32.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuBf16 {
    pub avx512_bf16: bool,
    pub amx_bf16: bool,
}

impl CpuBf16 {
    /// This machine's.
    pub fn detect() -> Self {
        // SAFETY: reads libtorch's cpuinfo; no state is changed.
        let bits = unsafe { absa_cpu_bf16_features() };
        Self { avx512_bf16: bits & 1 != 0, amx_bf16: bits & 2 != 0 }
    }

    /// Whether bf16 compute is native here.
    pub fn supported(self) -> bool {
        self.avx512_bf16 || self.amx_bf16
    }

    /// The detected instruction sets' names, as /proc/cpuinfo spells them.
    pub fn names(self) -> Vec<String> {
        [(self.amx_bf16, "amx_bf16"), (self.avx512_bf16, "avx512_bf16")].into_iter().filter(|(has, _)| *has).map(|(_, name)| name.to_owned()).collect()
    }
}

/// c10::DeviceType.
fn device_type(device: Device) -> i32 {
    match device {
        Device::Cpu => 0,
        Device::Cuda(_) => 1,
        Device::Mps => 13,
        Device::Vulkan => 10,
    }
}

/// c10::ScalarType of the dtypes autocast can reduce to.
fn scalar_type(kind: Kind) -> Option<i32> {
    match kind {
        Kind::Half => Some(5),
        Kind::BFloat16 => Some(15),
        _ => None,
    }
}

fn kind_of(scalar_type: i32) -> Option<Kind> {
    match scalar_type {
        5 => Some(Kind::Half),
        15 => Some(Kind::BFloat16),
        _ => None,
    }
}

/// Whether the forward pass on `device` runs under bf16 autocast on this machine.
pub fn bf16_on(precision: PrecisionChoice, device: Device) -> bool {
    bf16_with(precision, device, CpuBf16::detect())
}

/// Whether it does on a CPU with `cpu`'s bf16 instructions: `auto` picks bf16 only
/// where it is native (emulated bf16 is slower than fp32).
pub fn bf16_with(precision: PrecisionChoice, device: Device, cpu: CpuBf16) -> bool {
    match precision {
        PrecisionChoice::Auto => device.is_cuda() || (device == Device::Cpu && cpu.supported()),
        PrecisionChoice::Fp32 => false,
        PrecisionChoice::Bf16 => true,
    }
}

/// Whether autocast is on for `device`'s type, and its reduced dtype.
pub fn state(device: Device) -> (bool, Option<Kind>) {
    let t = device_type(device);
    // SAFETY: plain getters of libtorch's thread-local autocast state.
    unsafe { (absa_autocast_is_enabled(t), kind_of(absa_autocast_dtype(t))) }
}

/// Runs `f` with autocast to `dtype` (bf16 or fp16) on `device`'s type, then restores
/// the previous state (also when `f` panics). Ops libtorch lists for autocast (matmul,
/// linear, baddbmm, ...) run in `dtype`; the ones it keeps in fp32 (softmax, layer
/// norm, cross-entropy, ...) stay there; the weights stay fp32.
pub fn with_autocast<T>(device: Device, dtype: Kind, f: impl FnOnce() -> T) -> Result<T, String> {
    let t = device_type(device);
    let wanted = scalar_type(dtype).ok_or_else(|| format!("autocast reduces to bf16 or fp16, not {dtype:?}"))?;
    let (was_enabled, was_dtype) = state(device);
    // SAFETY: sets libtorch's thread-local autocast state; restored by the guard.
    if unsafe { absa_autocast_set(t, true, wanted) } != 0 {
        return Err(format!("libtorch refused autocast to {dtype:?} on {device:?}"));
    }
    unsafe { absa_autocast_enter() };
    struct Restore(i32, bool, i32);
    impl Drop for Restore {
        fn drop(&mut self) {
            // SAFETY: as above.
            unsafe {
                absa_autocast_exit();
                absa_autocast_set(self.0, self.1, self.2);
            }
        }
    }
    let _restore = Restore(t, was_enabled, was_dtype.and_then(scalar_type).unwrap_or(wanted));
    Ok(f())
}
