//! Headless Chromium over the dashboard: the DOM after its scripts ran, or a screenshot.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Headless Chromium: `ABSA_CHROMIUM`, else Debian's `/usr/bin/chromium`. Missing is a
/// failure, not a skip: the dashboard would go untested.
pub fn chromium() -> PathBuf {
    let path = std::env::var_os("ABSA_CHROMIUM").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        path.exists(),
        "headless Chromium not found at {}: run scripts/test.sh (its scripts/services.sh installs Debian's chromium package), or set ABSA_CHROMIUM",
        path.display()
    );
    path
}

/// Chromium on `base/dashboard#fragment` with `args` (`--dump-dom`, `--screenshot=...`),
/// its profile under `dir`; its stdout.
pub fn browse(base: &str, dir: &Path, fragment: &str, args: &[String]) -> String {
    let profile = dir.join("chromium-profile");
    let url = format!("{base}/dashboard#{fragment}");
    let out = Command::new("timeout")
        .arg("120")
        .arg(chromium())
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run", "--hide-scrollbars", "--virtual-time-budget=10000"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(&url)
        .output()
        .expect("run chromium");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "chromium on {url} exited with {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    stdout
}

/// The dashboard's DOM at `fragment` once its scripts ran.
pub fn dom(base: &str, dir: &Path, fragment: &str) -> String {
    let dom = browse(base, dir, fragment, &["--dump-dom".into()]);
    assert!(dom.contains("</html>"), "no DOM dumped for #{fragment}: {dom}");
    dom
}
