//! The memory a process holds, from `/proc`: what run summaries and benchmarks report.
//! Its own crate because both engines and the benchmarks read it, and none of them
//! should pull in the service's infrastructure for it.

/// Peak resident set size (VmHWM) in MiB, or 0 where /proc is unavailable.
pub fn peak_rss_mib() -> f64 {
    peak_rss_mib_of("self")
}

/// [`peak_rss_mib`] of another process (`pid`, or `self`).
pub fn peak_rss_mib_of(pid: impl std::fmt::Display) -> f64 {
    status_kib(&pid.to_string(), "VmHWM:").map_or(0.0, |kb| kb / 1024.0)
}

/// Resident set size now (VmRSS) in MiB, or 0 where /proc is unavailable.
pub fn rss_mib() -> f64 {
    status_kib("self", "VmRSS:").map_or(0.0, |kb| kb / 1024.0)
}

/// Resets this process's peak RSS (VmHWM) to its RSS now, so a later
/// [`peak_rss_mib`] measures one phase; false where the kernel refuses.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn status_kib(pid: &str, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix(field)).and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
}

/// Memory the kernel says is available for new allocations (MemAvailable), in bytes.
pub fn available_memory_bytes() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = info.lines().find_map(|l| l.strip_prefix("MemAvailable:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    #[test]
    fn peak_rss_is_positive_on_linux() {
        assert!(super::peak_rss_mib() > 1.0);
        assert!(super::peak_rss_mib_of(std::process::id()) > 1.0);
        assert!(super::rss_mib() > 1.0 && super::rss_mib() <= super::peak_rss_mib());
        assert!(super::available_memory_bytes().unwrap() > 1 << 20);
    }
}
