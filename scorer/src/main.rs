use std::path::PathBuf;
use std::process::ExitCode;

use absa_platform::{cli, config, health, telemetry};
use absa_scorer::{runtime, settings::Settings};
use anyhow::Context;
use clap::{Parser, Subcommand};

/// Scores corpora with an exported TD-BERT model through ONNX Runtime.
#[derive(Parser)]
#[command(name = "absa-scorer", version)]
struct Cli {
    /// TOML configuration file; `ABSA_*` environment variables override it.
    #[arg(long, env = "ABSA_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check that ONNX Runtime loads and Postgres and RabbitMQ answer, then exit.
    Check,
}

fn main() -> ExitCode {
    cli::report(run(Cli::parse()))
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let settings: Settings = config::load(cli.config.as_deref())?;
    telemetry::init(&settings.log);
    match cli.command {
        Command::Check => {
            let ort = runtime::version()?;
            println!("onnxruntime: {ort}");
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(async {
                println!("postgres: {}", health::postgres(&settings.database).await?);
                println!("rabbitmq: {}", health::rabbitmq(&settings.amqp).await?);
                anyhow::Ok(())
            })
            .context("service check failed")?;
            Ok(())
        }
    }
}
