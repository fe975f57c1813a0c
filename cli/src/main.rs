//! `absa`: the command-line client for the service's HTTP API (see docs/api.md), in
//! noun-verb form: `absa jobs list`, `absa models promote`, one module per noun.

mod access;
mod client;
mod config;
mod datasets;
mod exit;
mod jobs;
mod models;
mod output;
mod registry;
mod schedules;
mod webhooks;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};

use client::Client;

#[derive(Parser)]
#[command(name = "absa", version, about = "Command-line client for the ABSA service's HTTP API")]
#[command(after_help = concat!("Settings: flags beat environment variables, which beat the config file \
(~/.config/absa/cli.toml with keys api_url and api_key, or [profiles.NAME] tables written by `absa login`).\n\n", "Exit codes: 0 done; 1 error; 2 usage; 3 no, unknown or too weak a key (401/403); \
4 not found (404); 5 the watched job failed; 6 the watched job was cancelled; 7 conflict (409: promotion refused, \
job already finished, name taken)."))]
struct Cli {
    /// API base URL [env: ABSA_API_URL] [default: http://127.0.0.1:8080]
    #[arg(long, global = true, value_name = "URL", help_heading = "Global options")]
    api_url: Option<String>,
    /// API key, sent as a Bearer token [env: ABSA_API_KEY] (it shows in process lists: prefer `absa login`)
    #[arg(long, global = true, value_name = "KEY", help_heading = "Global options")]
    api_key: Option<String>,
    /// Config file [env: ABSA_CLI_CONFIG] [default: ~/.config/absa/cli.toml]
    #[arg(long, global = true, value_name = "FILE", help_heading = "Global options")]
    config: Option<PathBuf>,
    /// Profile of the config file ([profiles.NAME]) [env: ABSA_PROFILE] [default: the file's top-level keys]
    #[arg(long, global = true, value_name = "NAME", help_heading = "Global options")]
    profile: Option<String>,
    /// Output: tables for people, the API's JSON answer, or the tables as CSV
    #[arg(short, long, global = true, value_enum, default_value_t = output::Format::Table, help_heading = "Global options")]
    output: output::Format,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Labelled rows that train models: list, get, upload, errors
    #[command(subcommand)]
    Datasets(datasets::DatasetCmd),
    /// Unlabelled documents that scoring jobs read: list, get, upload, errors
    #[command(subcommand)]
    Corpora(datasets::CorpusCmd),
    /// Training, scoring and sweep jobs: submit, list, get, watch, cancel, events, metrics, export
    #[command(subcommand)]
    Jobs(jobs::JobCmd),
    /// Trained model versions: list, get, compare, promote, download
    #[command(subcommand)]
    Models(models::ModelCmd),
    /// The models the trainers can fine-tune
    #[command(subcommand)]
    BaseModels(models::BaseModelCmd),
    /// Named models (a task and a label set) owning versions and aliases: list, get, create, update
    #[command(subcommand)]
    RegisteredModels(registry::RegisteredModelCmd),
    /// Names such as production pointing at a model version: list, set
    #[command(subcommand)]
    Aliases(registry::AliasCmd),
    /// Retrain schedules (cron or on new rows): list, get, create, delete
    #[command(subcommand)]
    Schedules(schedules::ScheduleCmd),
    /// URLs told of every job state change (HMAC-signed): list, create, delete, deliveries
    #[command(subcommand)]
    Webhooks(webhooks::WebhookCmd),
    /// API keys of the team (admin): list, create, delete
    #[command(subcommand)]
    Keys(access::KeyCmd),
    /// Teams of the service (platform admins): create
    #[command(subcommand)]
    Teams(access::TeamCmd),
    /// Postgres logins for BI tools, reading the team's views (admin): list, create, delete
    #[command(subcommand)]
    BiLogins(access::BiLoginCmd),
    /// Who the API key belongs to
    Me,
    /// Check an API key (read from standard input, so it shows in no process list) and
    /// save it with the API URL as a profile of the config file, readable by its owner only
    Login,
    /// Print the completion script of a shell (bash, zsh, fish, elvish, powershell),
    /// e.g. `absa completions bash > ~/.local/share/bash-completion/completions/absa`
    Completions { shell: clap_complete::Shell },
}

/// A value enum's name as the API spells it.
fn name_of(v: impl ValueEnum) -> String {
    v.to_possible_value().expect("no skipped values").get_name().to_owned()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    output::set_format(cli.output);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            exit::code(exit::of_error(&e))
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Login => return access::login(cli.api_url, cli.config, cli.profile),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut <Cli as clap::CommandFactory>::command(), "absa", &mut std::io::stdout());
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }
    let flags = config::Layer { api_url: cli.api_url.clone(), api_key: cli.api_key.clone() };
    let settings = config::load(flags, cli.config.clone(), cli.profile.clone(), |k| std::env::var(k).ok())?;
    let c = Client::new(&settings.api_url, settings.api_key.clone());
    match cli.command {
        Command::Datasets(cmd) => datasets::run_datasets(&c, cmd),
        Command::Corpora(cmd) => datasets::run_corpora(&c, cmd),
        Command::Jobs(cmd) => jobs::run(&c, cmd),
        Command::Models(cmd) => models::run(&c, cmd),
        Command::BaseModels(cmd) => models::run_base_models(&c, cmd),
        Command::RegisteredModels(cmd) => registry::run_registered_models(&c, cmd),
        Command::Aliases(cmd) => registry::run_aliases(&c, cmd),
        Command::Schedules(cmd) => schedules::run(&c, cmd),
        Command::Webhooks(cmd) => webhooks::run(&c, cmd),
        Command::Keys(cmd) => access::run_keys(&c, cmd),
        Command::Teams(cmd) => access::run_teams(&c, cmd),
        Command::BiLogins(cmd) => access::run_bi_logins(&c, cmd),
        Command::Me => access::me(&c),
        Command::Login | Command::Completions { .. } => unreachable!("answered before the settings are read"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_parses() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from(["absa", "-o", "json", "jobs", "list", "--state", "running"]).unwrap();
        assert_eq!(cli.output, output::Format::Json);
        assert!(matches!(cli.command, Command::Jobs(_)));
        let cli = Cli::try_parse_from(["absa", "models", "list", "--output", "csv"]).unwrap();
        assert_eq!(cli.output, output::Format::Csv, "-o is global: it may follow the command");
        assert!(Cli::try_parse_from(["absa", "-o", "yaml", "me"]).is_err());
        assert!(Cli::try_parse_from(["absa", "models", "compare", "one"]).is_err(), "compare needs two ids");
        assert!(Cli::try_parse_from(["absa", "jobs"]).is_err(), "a noun needs a verb");
    }

    /// Every operation of the API's spec has a command (a new route without one fails
    /// here), and each command named below exists.
    #[test]
    fn every_route_has_a_command() {
        use clap::CommandFactory;
        let spec: serde_json::Value = serde_json::from_str(include_str!("../../api/openapi.json")).unwrap();
        let commands = [
            ("me", "me"),
            ("list_datasets", "datasets list"),
            ("upload_dataset", "datasets upload"),
            ("get_dataset", "datasets get"),
            ("dataset_errors", "datasets errors"),
            ("list_corpora", "corpora list"),
            ("upload_corpus", "corpora upload"),
            ("get_corpus", "corpora get"),
            ("corpus_errors", "corpora errors"),
            ("list_jobs", "jobs list"),
            ("submit_train", "jobs train"),
            ("submit_score", "jobs score"),
            ("submit_sweep", "jobs sweep"),
            ("get_job", "jobs get"),
            ("job_events", "jobs events"),
            ("job_metrics", "jobs metrics"),
            ("job_errors", "jobs errors"),
            ("cancel_job", "jobs cancel"),
            ("export_predictions", "jobs export"),
            ("list_base_models", "base-models list"),
            ("list_models", "models list"),
            ("compare_models", "models compare"),
            ("get_model", "models get"),
            ("promote", "models promote"),
            ("download_artifact", "models download"),
            ("list_registered_models", "registered-models list"),
            ("get_registered_model", "registered-models get"),
            ("put_registered_model", "registered-models update"),
            ("list_aliases", "aliases list"),
            ("set_alias", "aliases set"),
            ("list_schedules", "schedules list"),
            ("create_schedule", "schedules create"),
            ("get_schedule", "schedules get"),
            ("delete_schedule", "schedules delete"),
            ("list_webhooks", "webhooks list"),
            ("create_webhook", "webhooks create"),
            ("delete_webhook", "webhooks delete"),
            ("list_deliveries", "webhooks deliveries"),
            ("list_keys", "keys list"),
            ("create_key", "keys create"),
            ("revoke_key", "keys delete"),
            ("create_team", "teams create"),
            ("list_bi_logins", "bi-logins list"),
            ("create_bi_login", "bi-logins create"),
            ("drop_bi_login", "bi-logins delete"),
        ];
        let cli = Cli::command();
        for (operation, command) in commands {
            let mut at = &cli;
            for word in command.split(' ') {
                at = at.find_subcommand(word).unwrap_or_else(|| panic!("{operation}: no command `absa {command}`"));
            }
        }
        let operations: Vec<&str> =
            spec["paths"].as_object().unwrap().values().flat_map(|ops| ops.as_object().unwrap().values()).filter_map(|op| op["operationId"].as_str()).collect();
        let missing: Vec<&&str> = operations.iter().filter(|op| !commands.iter().any(|(o, _)| o == *op)).collect();
        assert!(missing.is_empty(), "operations without an absa command: {missing:?}");
        assert_eq!(operations.len(), commands.len(), "a command listed for an operation the API no longer has");
    }
}
