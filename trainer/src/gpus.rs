//! The GPUs this trainer has: how many libtorch sees, and their memory and names as
//! `nvidia-smi` reports them (libtorch's C API, which tch binds, has no query for
//! either).

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
