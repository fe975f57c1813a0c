//! What every binary's `main` shares: exit codes and error reporting.

use std::process::ExitCode;

/// Prints an error with its causes on stderr and turns it into exit code 1; the
/// messages name the missing service or library so the operator knows what to start.
pub fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
