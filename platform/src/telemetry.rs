//! Structured logs. `RUST_LOG` overrides the configured filter.

use tracing_subscriber::EnvFilter;

use crate::config::LogSettings;

/// Installs the global subscriber; logs go to stderr so stdout stays free for the
/// one-line JSON summaries the CLIs print.
pub fn init(settings: &LogSettings) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&settings.filter));
    // Colours only on a terminal: files and log collectors get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    // A second call (tests) keeps the first subscriber.
    let _ = if settings.json { builder.json().try_init() } else { builder.try_init() };
}
