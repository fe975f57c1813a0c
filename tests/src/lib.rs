//! End-to-end tests: the real binaries as processes against the real Postgres and
//! RabbitMQ. Helpers to find the binaries live here; the tests are in `tests/`.

use std::path::PathBuf;

pub mod browser;
pub mod http;
pub mod scrape;
pub mod service;

/// Path of a workspace binary built next to this test (`cargo test --workspace`
/// builds every binary before running the tests).
pub fn binary(name: &str) -> PathBuf {
    let mut dir = std::env::current_exe().expect("test executable path");
    dir.pop(); // the test executable
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(path.exists(), "{} not built; run `cargo build --workspace` first", path.display());
    path
}

/// The peak resident memory (VmHWM) of process `pid` so far, in MiB.
pub fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let kib: f64 = status.lines().find_map(|l| l.strip_prefix("VmHWM:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok()).expect("VmHWM");
    kib / 1024.0
}

/// A binary running as a child process for the length of a test, its output in a log
/// file; killed (SIGKILL) when dropped so a failing test leaves nothing behind.
pub struct Process {
    pub name: String,
    child: std::sync::Mutex<std::process::Child>,
    pub log: PathBuf,
}

impl Process {
    /// Starts `binary args` with `env` added to the environment, logging to `log_dir`.
    pub fn start(binary_name: &str, args: &[&str], env: &[(String, String)], log_dir: &std::path::Path, tag: &str) -> Self {
        std::fs::create_dir_all(log_dir).expect("log folder");
        let log = log_dir.join(format!("{tag}.log"));
        let out = std::fs::File::create(&log).expect("log file");
        let mut cmd = std::process::Command::new(binary(binary_name));
        cmd.args(args).stdout(out.try_clone().expect("log handle")).stderr(out);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("starting {binary_name}: {e}"));
        Self { name: tag.to_owned(), child: std::sync::Mutex::new(child), log }
    }

    fn child(&self) -> std::sync::MutexGuard<'_, std::process::Child> {
        self.child.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn pid(&self) -> u32 {
        self.child().id()
    }

    /// SIGKILL: the process gets no chance to clean up (a crash, an OOM kill).
    pub fn kill9(&mut self) {
        let mut child = self.child();
        let _ = child.kill();
        let _ = child.wait();
    }

    /// SIGTERM, then waits up to `within` for a clean exit; returns its status.
    pub fn terminate(&mut self, within: std::time::Duration) -> Option<std::process::ExitStatus> {
        let _ = std::process::Command::new("kill").args(["-TERM", &self.pid().to_string()]).status();
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child().try_wait() {
                return Some(status);
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        None
    }

    /// Whether it is still running.
    pub fn running(&self) -> bool {
        matches!(self.child().try_wait(), Ok(None))
    }

    /// The last `n` lines of its log, for assertion messages.
    pub fn tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill9();
    }
}
