use std::path::PathBuf;
use std::process::ExitCode;

use absa_platform::{cli, config, health, telemetry};
use absa_scheduler::settings::Settings;
use clap::{Parser, Subcommand};

/// Dispatches the ABSA service's jobs.
#[derive(Parser)]
#[command(name = "absa-scheduler", version)]
struct Cli {
    /// TOML configuration file; `ABSA_*` environment variables override it.
    #[arg(long, env = "ABSA_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check that Postgres and RabbitMQ answer, then exit.
    Check,
}

fn main() -> ExitCode {
    cli::report(run(Cli::parse()))
}

#[tokio::main]
async fn run(cli: Cli) -> anyhow::Result<()> {
    let settings: Settings = config::load(cli.config.as_deref())?;
    telemetry::init(&settings.log);
    match cli.command {
        Command::Check => {
            println!("postgres: {}", health::postgres(&settings.database).await?);
            println!("rabbitmq: {}", health::rabbitmq(&settings.amqp).await?);
            Ok(())
        }
    }
}
