use std::path::PathBuf;
use std::process::ExitCode;

use absa_platform::{cli, config, health, telemetry};
use absa_trainer::{settings::Settings, torch_check};
use anyhow::Context;
use clap::{Parser, Subcommand};

/// Fine-tunes TD-BERT models (XLM-R, BERT family) on libtorch.
#[derive(Parser)]
#[command(name = "absa-trainer", version)]
struct Cli {
    /// TOML configuration file; `ABSA_*` environment variables override it.
    #[arg(long, env = "ABSA_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a libtorch training step and check that Postgres and RabbitMQ answer, then exit.
    Check,
}

fn main() -> ExitCode {
    cli::report(run(Cli::parse()))
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let settings: Settings = config::load(cli.config.as_deref())?;
    telemetry::init(&settings.log);
    if settings.torch.threads > 0 {
        tch::set_num_threads(settings.torch.threads);
    }
    match cli.command {
        Command::Check => {
            let device = tch::Device::cuda_if_available();
            let report = torch_check::train_steps(device, 20).context("libtorch self-test failed")?;
            println!(
                "libtorch: {:?}, {} threads, loss {:.4} -> {:.4} after 20 AdamW steps",
                report.device,
                tch::get_num_threads(),
                report.loss_before,
                report.loss_after
            );
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
