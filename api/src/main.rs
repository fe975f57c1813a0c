use std::path::PathBuf;
use std::process::ExitCode;

use absa_api::{auth, settings::Settings, Application};
use absa_platform::{cli, config, db, telemetry};
use clap::{Parser, Subcommand};

/// The HTTP API of the ABSA service.
#[derive(Parser)]
#[command(name = "absa-api", version)]
struct Cli {
    /// TOML configuration file; `ABSA_*` environment variables override it.
    #[arg(long, env = "ABSA_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Apply pending database migrations and serve HTTP (the default).
    Serve,
    /// Apply pending database migrations, then exit.
    Migrate,
    /// Check that Postgres and RabbitMQ answer, then exit.
    Check,
    /// Create an API key (printed once) for a team, creating the team if it is new:
    /// how the first admin key comes to exist.
    CreateKey {
        #[arg(long)]
        team: String,
        #[arg(long, value_parser = ["analyst", "mlops", "admin"], default_value = "admin")]
        role: String,
        #[arg(long, default_value = "bootstrap")]
        name: String,
    },
    /// Print the OpenAPI document the routes make (what `/openapi.json` serves), then exit.
    Openapi,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The document needs no configuration, database or runtime.
    if let Some(Command::Openapi) = cli.command {
        println!("{}", absa_api::openapi::document().to_pretty_json().expect("the document serialises"));
        return ExitCode::SUCCESS;
    }
    cli::report(run(cli))
}

#[tokio::main]
async fn run(cli: Cli) -> anyhow::Result<()> {
    let settings: Settings = config::load(cli.config.as_deref())?;
    let _telemetry = telemetry::init("absa-api", &settings.log);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let app = Application::build(&settings).await?;
            tracing::info!(addr = %app.local_addr(), "absa-api listening");
            app.run_until_stopped(cli::shutdown_signal()).await
        }
        Command::Migrate => {
            let pool = db::connect(&settings.database).await?;
            db::migrate(&pool).await?;
            println!("migrations applied");
            Ok(())
        }
        Command::Openapi => unreachable!("answered before start-up"),
        Command::Check => cli::check_services(&settings.database, &settings.amqp).await,
        Command::CreateKey { team, role, name } => {
            let pool = db::connect(&settings.database).await?;
            db::migrate(&pool).await?;
            let role = auth::Role::parse(&role).expect("clap checked the role");
            let team_id = auth::ensure_team(&pool, &team).await.map_err(|e| anyhow::anyhow!("{e}"))?;
            let (_, key) = auth::create_key(&pool, team_id, &name, role).await.map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("{key}");
            Ok(())
        }
    }
}
