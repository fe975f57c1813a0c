use std::path::PathBuf;
use std::process::ExitCode;

use absa_platform::{cli, config, telemetry};
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
    /// Dispatch jobs until SIGTERM: reap expired leases, shard scoring jobs, publish queued jobs.
    Run,
}

fn main() -> ExitCode {
    cli::report(run(Cli::parse()))
}

#[tokio::main]
async fn run(cli: Cli) -> anyhow::Result<()> {
    let settings: Settings = config::load(cli.config.as_deref())?;
    let _telemetry = telemetry::init("absa-scheduler", &settings.log);
    match cli.command {
        Command::Check => cli::check_services(&settings.database, &settings.amqp).await,
        Command::Run => {
            absa_platform::metrics::start(absa_platform::metrics::Role::Scheduler, &settings.metrics).await?;
            let pool = absa_platform::db::connect(&settings.database).await?;
            absa_platform::db::migrate(&pool).await?;
            let topology = absa_platform::queue::Topology::new(&settings.amqp.prefix, settings.dispatch.delivery_limit);
            // Fails at start-up when the broker is unreachable; later outages reconnect.
            let amqp = absa_platform::queue::Reconnecting::connect(settings.amqp.clone(), topology).await?;
            let dispatcher = absa_scheduler::dispatch::Dispatcher::new(pool, amqp)
                .with_shard_size(settings.dispatch.shard_size)
                .with_redispatch_after(settings.dispatch.redispatch_after_secs)
                .with_quotas(settings.dispatch.quotas)
                .with_webhooks(settings.webhooks.clone());
            let interval = std::time::Duration::from_secs_f64(settings.dispatch.interval_secs);
            absa_scheduler::dispatch::run_until_stopped(dispatcher, settings.database.url.expose().to_owned(), interval, cli::shutdown_signal()).await
        }
    }
}
