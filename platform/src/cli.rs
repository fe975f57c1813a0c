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

/// Resolves on SIGTERM (Kubernetes stopping a pod) or Ctrl-C.
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
    tracing::info!("shutting down");
}

/// The `check` subcommand's service part: prints what answered, fails on what did not.
pub async fn check_services(database: &crate::config::DatabaseSettings, amqp: &crate::config::AmqpSettings) -> anyhow::Result<()> {
    println!("postgres: {}", crate::health::postgres(database).await?);
    println!("rabbitmq: {}", crate::health::rabbitmq(amqp).await?);
    Ok(())
}
