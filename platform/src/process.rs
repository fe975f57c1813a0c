//! Facts about the running process that summaries report.

/// Peak resident set size (VmHWM) in MiB, or 0 where /proc is unavailable.
pub fn peak_rss_mib() -> f64 {
    peak_rss_mib_of("self")
}

/// [`peak_rss_mib`] of another process (`pid`, or `self`).
pub fn peak_rss_mib_of(pid: impl std::fmt::Display) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn peak_rss_is_positive_on_linux() {
        assert!(super::peak_rss_mib() > 1.0);
        assert!(super::peak_rss_mib_of(std::process::id()) > 1.0);
    }
}
