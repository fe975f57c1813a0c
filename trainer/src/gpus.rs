//! The GPUs this trainer has: how many libtorch sees, and their memory and names as
//! `nvidia-smi` reports them (libtorch's C API, which tch binds, has no query for
//! either).

use absa_store::workers::Offer;

fn nvidia_smi(query: &[&str]) -> Option<String> {
    let out = std::process::Command::new("nvidia-smi").args(query).arg("--format=csv,noheader,nounits").output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Total memory of each visible GPU, in MiB.
pub fn memory_mib() -> Vec<u64> {
    nvidia_smi(&["--query-gpu=memory.total"]).map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect()).unwrap_or_default()
}

/// GPU `index`'s name ("NVIDIA H100 80GB HBM3").
pub fn name(index: usize) -> Option<String> {
    nvidia_smi(&["--query-gpu=name", &format!("--id={index}")]).map(|s| s.trim().to_owned())
}

/// Memory this process holds on the GPUs (tensors, allocator cache, CUDA context), MiB.
pub fn process_memory_mib() -> u64 {
    let pid = std::process::id().to_string();
    nvidia_smi(&["--query-compute-apps=pid,used_memory"])
        .map(|text| text.lines().filter_map(|l| l.split_once(',')).filter(|(p, _)| p.trim() == pid).filter_map(|(_, m)| m.trim().parse::<u64>().ok()).sum())
        .unwrap_or(0)
}

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
        None => memory_mib().iter().take(gpus as usize).copied().min().ok_or("nvidia-smi did not report the GPUs' memory: set torch.gpu_memory_gib")?,
    };
    Ok(Offer { gpus, gpu_memory_mib })
}
