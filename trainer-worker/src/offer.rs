//! What this trainer advertises to the scheduler: its GPUs and their memory.

use absa_store::workers::Offer;
use absa_trainer::gpus;

/// What this trainer advertises: `gpus` (default: every GPU libtorch sees) with
/// `memory_gib` each (default: the smallest one's total from nvidia-smi). Asking for
/// more GPUs than libtorch sees, or GPUs whose memory is unknown, is an error.
pub fn offer(gpus: Option<u32>, memory_gib: Option<f64>) -> Result<Offer, String> {
    let visible = tch::Cuda::device_count().max(0) as u32;
    let gpus = gpus.unwrap_or(visible);
    if gpus > visible {
        return Err(format!("torch.gpus is {gpus}, but libtorch sees {visible} CUDA device(s) (a CPU build of libtorch sees none)"));
    }
    if gpus == 0 {
        return Ok(Offer::default());
    }
    let gpu_memory_mib = match memory_gib {
        Some(g) => (g * 1024.0) as u64,
        None => gpus::memory_mib().iter().take(gpus as usize).copied().min().ok_or("nvidia-smi did not report the GPUs' memory: set torch.gpu_memory_gib")?,
    };
    Ok(Offer { gpus, gpu_memory_mib })
}
