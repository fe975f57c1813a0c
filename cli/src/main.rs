//! `absa`: the command-line client for the service's HTTP API (see api/API.md).

mod client;
mod config;
mod exit;
mod output;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use client::{ApiError, Client};
use output::{count_of, fields, get, list, metric, percent, table, time, truncate};

#[derive(Parser)]
#[command(name = "absa", version, about = "Command-line client for the ABSA service's HTTP API")]
#[command(after_help = concat!("Settings: flags beat environment variables, which beat the config file \
(~/.config/absa/cli.toml with keys api_url and api_key).\n\n", "Exit codes: 0 done; 1 error; 2 usage; 3 no, unknown or too weak a key (401/403); \
4 not found (404); 5 the watched job failed; 6 the watched job was cancelled; 7 conflict (409: promotion refused, \
job already finished, name taken)."))]
struct Cli {
    /// API base URL [env: ABSA_API_URL] [default: http://127.0.0.1:8080]
    #[arg(long, global = true, value_name = "URL", help_heading = "Global options")]
    api_url: Option<String>,
    /// API key, sent as a Bearer token [env: ABSA_API_KEY]
    #[arg(long, global = true, value_name = "KEY", help_heading = "Global options")]
    api_key: Option<String>,
    /// Config file [env: ABSA_CLI_CONFIG] [default: ~/.config/absa/cli.toml]
    #[arg(long, global = true, value_name = "FILE", help_heading = "Global options")]
    config: Option<PathBuf>,
    /// Profile of the config file ([profiles.NAME]) [env: ABSA_PROFILE] [default: the file's top-level keys]
    #[arg(long, global = true, value_name = "NAME", help_heading = "Global options")]
    profile: Option<String>,
    /// Print the server's JSON answers instead of tables
    #[arg(long, global = true, help_heading = "Global options")]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Upload a labelled dataset or an unlabelled corpus (streamed)
    #[command(subcommand)]
    Upload(Upload),
    /// List the team's datasets
    Datasets,
    /// List the team's corpora
    Corpora,
    /// Submit a training job
    Train(Train),
    /// Submit a scoring job over a corpus
    Score(Score),
    /// Submit a hyperparameter sweep: child training jobs, the best chosen on validation
    Sweep(Sweep),
    /// List jobs, newest first
    Jobs {
        /// Only jobs in this state
        #[arg(long, value_parser = ["queued", "dispatched", "running", "succeeded", "failed", "cancelled"])]
        state: Option<String>,
        /// Only jobs of this kind
        #[arg(long, value_parser = ["train", "score", "sweep"])]
        kind: Option<String>,
        /// At most this many
        #[arg(long)]
        limit: Option<u32>,
    },
    /// Show a job with its last events
    Job {
        id: String,
        /// How many of the last events to show
        #[arg(long, default_value_t = 10)]
        events: usize,
    },
    /// Follow a job until it ends; exit code 1 when it failed or was cancelled
    #[command(visible_alias = "wait")]
    Watch { id: String },
    /// Cancel a job (and its shards)
    Cancel { id: String },
    /// Per-epoch metrics of a training job
    Metrics { job_id: String },
    /// List model versions
    Models,
    /// Show a model version
    Model { id: String },
    /// Compare model versions metric by metric
    Compare {
        #[arg(num_args = 2.., required = true, value_name = "ID")]
        ids: Vec<String>,
    },
    /// List aliases
    Aliases,
    /// List registered models: task, labels, versions, aliases
    RegisteredModels,
    /// A job's whole event log, oldest first (every page)
    Events { job_id: String },
    /// Every row error of a dataset, corpus or job, by line (every page)
    Errors {
        #[arg(value_enum)]
        of: ErrorsOf,
        id: String,
    },
    /// Move an alias
    #[command(subcommand)]
    Alias(AliasCmd),
    /// Promote a model version to an alias if it beats the alias's current version;
    /// exit code 1 when refused
    Promote {
        version_id: String,
        #[arg(long, default_value = "production")]
        alias: String,
        #[arg(long, value_enum, default_value_t = Metric::MacroF1)]
        metric: Metric,
    },
    /// Download a scoring job's predictions (streamed)
    Export {
        job_id: String,
        /// File format [default: from the output file's extension, else csv]
        #[arg(long, value_enum)]
        format: Option<ExportFormat>,
        /// Output file ("-" for standard output)
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
    },
    /// Download a model version's ONNX bundle or checkpoint: one tar, streamed, its
    /// sha256 checked against the API's ETag
    Download {
        version_id: String,
        /// onnx: fp32 and int8 graphs, tokenizer, manifest; checkpoint: Hugging Face layout
        #[arg(long, value_enum, default_value = "onnx")]
        artifact: Artifact,
        /// Output file
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
    },
    /// Print the completion script of a shell (bash, zsh, fish, elvish, powershell),
    /// e.g. `absa completions bash > ~/.local/share/bash-completion/completions/absa`
    Completions { shell: clap_complete::Shell },
    /// List retrain schedules
    Schedules,
    /// Add, show or remove a retrain schedule
    #[command(subcommand)]
    Schedule(ScheduleCmd),
    /// Who the API key belongs to
    Me,
    /// Check an API key (read from standard input, so it shows in no process list) and
    /// save it with the API URL as a profile of the config file, readable by its owner only
    Login,
    /// Manage API keys (admin)
    #[command(subcommand)]
    Keys(KeysCmd),
}

#[derive(Subcommand)]
enum Upload {
    /// Append labelled rows (text, aspect, start, end, label) to a dataset (mlops)
    Dataset {
        /// File to upload (jsonl, csv or parquet)
        file: PathBuf,
        /// Dataset name (created if new)
        #[arg(long)]
        name: String,
        /// Split the rows go to [default: the server's]
        #[arg(long, value_parser = ["train", "validation", "test"])]
        split: Option<String>,
        /// File format [default: from the extension]
        #[arg(long, value_enum)]
        format: Option<Format>,
        /// Column holding the text
        #[arg(long, value_name = "COLUMN")]
        text_column: Option<String>,
        /// Column holding the aspect
        #[arg(long, value_name = "COLUMN")]
        aspect_column: Option<String>,
        /// Column holding the span start
        #[arg(long, value_name = "COLUMN")]
        start_column: Option<String>,
        /// Column holding the span end
        #[arg(long, value_name = "COLUMN")]
        end_column: Option<String>,
        /// Column naming a target without offsets (stance toward something the text may not mention)
        #[arg(long, value_name = "COLUMN")]
        target_column: Option<String>,
        /// Column holding the label
        #[arg(long, value_name = "COLUMN")]
        label_column: Option<String>,
        #[command(flatten)]
        show: ShowErrors,
    },
    /// Append documents (text, optional id, aspect, start, end, target, published_at) to a corpus
    Corpus {
        /// File to upload (jsonl, csv or parquet)
        file: PathBuf,
        /// Corpus name (created if new)
        #[arg(long)]
        name: String,
        /// File format [default: from the extension]
        #[arg(long, value_enum)]
        format: Option<Format>,
        #[command(flatten)]
        show: ShowErrors,
    },
}

#[derive(Args)]
struct ShowErrors {
    /// How many row errors to print
    #[arg(long, default_value_t = 10, value_name = "N")]
    show_errors: usize,
}

#[derive(Args)]
struct Train {
    /// Dataset id or name
    #[arg(long)]
    dataset: String,
    /// Base model, e.g. all-minilm-l6-v2
    #[arg(long)]
    base_model: String,
    /// Learning rate
    #[arg(long)]
    lr: Option<f64>,
    /// Number of epochs
    #[arg(long)]
    epochs: Option<u32>,
    /// Batch size
    #[arg(long)]
    batch_size: Option<u32>,
    /// Random seed
    #[arg(long)]
    seed: Option<u64>,
    /// Any other hyperparameter, e.g. --hp warmup_steps=100 (value parsed as JSON, else a string)
    #[arg(long = "hp", value_name = "KEY=VALUE")]
    hyperparameters: Vec<String>,
    /// Number of GPUs (one rank per GPU)
    #[arg(long)]
    gpus: Option<u32>,
    /// Without GPUs: CPU processes that train together (sharding: --hp sharding=full_shard)
    #[arg(long, conflicts_with = "gpus")]
    ranks: Option<u32>,
    /// The registered model the new version joins (default: the task's, sentiment or stance)
    #[arg(long, value_name = "NAME")]
    registered_model: Option<String>,
    /// Promote the new version to this alias if it beats the alias's current version
    #[arg(long, value_name = "ALIAS")]
    promote: Option<String>,
    /// Metric that decides the promotion
    #[arg(long, value_enum, default_value_t = Metric::MacroF1, requires = "promote")]
    metric: Metric,
    #[command(flatten)]
    submit: Submit,
}

#[derive(Args)]
struct Sweep {
    /// Dataset id or name
    #[arg(long)]
    dataset: String,
    /// Base model, e.g. all-minilm-l6-v2
    #[arg(long)]
    base_model: String,
    /// Values to try, e.g. --grid learning_rate=1e-5,3e-5 --grid seed=1,2,3 (every combination is a trial)
    #[arg(long, value_name = "KEY=V1,V2,..", required = true)]
    grid: Vec<String>,
    /// A hyperparameter shared by every trial, e.g. --hp epochs=3
    #[arg(long = "hp", value_name = "KEY=VALUE")]
    hyperparameters: Vec<String>,
    /// Validation metric that picks the winner
    #[arg(long, value_enum, default_value_t = Metric::MacroF1)]
    metric: Metric,
    /// setting: the best mean over a setting's seeds (each seed holds out its own
    /// validation rows), then its best child; trial: the best single child
    #[arg(long, value_enum, default_value_t = ChooseBy::Setting)]
    choose_by: ChooseBy,
    /// Children training at once
    #[arg(long)]
    max_concurrency: Option<u32>,
    /// Cancel running children below their siblings' median after this epoch
    #[arg(long, value_name = "EPOCH")]
    median_stop_after: Option<u32>,
    /// Promote the chosen version to this alias if it beats the alias's current version
    #[arg(long, value_name = "ALIAS")]
    promote: Option<String>,
    #[command(flatten)]
    submit: Submit,
}

#[derive(Args)]
#[command(group = clap::ArgGroup::new("model_choice").required(true).args(["model", "alias"]))]
struct Score {
    /// Corpus id or name
    #[arg(long)]
    corpus: String,
    /// Model version id
    #[arg(long, value_name = "VERSION_ID")]
    model: Option<String>,
    /// Alias naming the model version, e.g. production
    #[arg(long, value_name = "NAME")]
    alias: Option<String>,
    /// The registered model whose alias it is (when several of the team's have it)
    #[arg(long, value_name = "NAME", requires = "alias")]
    registered_model: Option<String>,
    /// Documents per shard
    #[arg(long)]
    shard_size: Option<u32>,
    /// Find targets with this lexicon instead of the corpus's given aspects (comma-separated)
    #[arg(long, value_delimiter = ',', value_name = "TERMS")]
    lexicon: Vec<String>,
    /// Score every document's stance toward this target, mentioned or not; aliases are
    /// other words for it (repeatable: --target CDU=Union|Christdemokraten --target SPD)
    #[arg(long = "target", value_name = "NAME[=ALIAS|ALIAS]", value_parser = parse_target)]
    targets: Vec<Value>,
    #[command(flatten)]
    submit: Submit,
}

#[derive(Args)]
struct Submit {
    /// Submitting again with the same key returns the first job instead of a new one
    #[arg(long, value_name = "KEY")]
    idempotency_key: Option<String>,
    /// Follow the job until it ends (as `absa watch`)
    #[arg(long)]
    wait: bool,
}

#[derive(Subcommand)]
enum AliasCmd {
    /// Point an alias at a model version (unconditionally; see `promote`)
    Set { name: String, version_id: String },
}

#[derive(Subcommand)]
enum ScheduleCmd {
    /// Add a retrain schedule (mlops)
    Add {
        #[arg(long)]
        name: String,
        /// Dataset id or name
        #[arg(long)]
        dataset: String,
        #[arg(long)]
        base_model: String,
        /// Cron expression: 5 fields (minute hour day month weekday), or 6 with seconds first
        #[arg(long)]
        cron: Option<String>,
        /// Also retrain when rows are added to the dataset
        #[arg(long)]
        on_new_rows: bool,
        /// Hyperparameters, e.g. --hp epochs=3 (value parsed as JSON, else a string)
        #[arg(long = "hp", value_name = "KEY=VALUE")]
        hyperparameters: Vec<String>,
        /// Alias to promote to [server default: production]
        #[arg(long, value_name = "ALIAS")]
        promote: Option<String>,
        #[arg(long, value_enum, default_value_t = Metric::MacroF1, requires = "promote")]
        metric: Metric,
    },
    /// Show a schedule
    Show { id: String },
    /// Delete a schedule
    Rm { id: String },
}

#[derive(Subcommand)]
enum KeysCmd {
    /// Create an API key (shown once)
    Create {
        #[arg(long)]
        name: String,
        #[arg(long, value_enum)]
        role: Role,
    },
    /// List API keys
    List,
    /// Revoke an API key
    Rm { id: String },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Format {
    Jsonl,
    Csv,
    Parquet,
}

#[derive(Clone, Copy, ValueEnum)]
enum ErrorsOf {
    Dataset,
    Corpus,
    Job,
}

#[derive(Clone, Copy, ValueEnum)]
enum Artifact {
    Onnx,
    Checkpoint,
}

#[derive(Clone, Copy, ValueEnum)]
enum ExportFormat {
    Csv,
    Parquet,
}

#[derive(Clone, Copy, ValueEnum)]
enum Metric {
    #[value(name = "macro_f1")]
    MacroF1,
    Accuracy,
    /// Stance's mean F1 of against and favor (labels with both)
    #[value(name = "f_avg")]
    FAvg,
}

#[derive(Clone, Copy, ValueEnum)]
enum ChooseBy {
    Setting,
    Trial,
}

#[derive(Clone, Copy, ValueEnum)]
enum Role {
    Analyst,
    Mlops,
    Admin,
}

fn name_of(v: impl ValueEnum) -> String {
    v.to_possible_value().expect("no skipped values").get_name().to_owned()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            exit::code(exit::of_error(&e))
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    if let Command::Login = cli.command {
        return login(&cli);
    }
    let flags = config::Layer { api_url: cli.api_url.clone(), api_key: cli.api_key.clone() };
    let settings = config::load(flags, cli.config.clone(), cli.profile.clone(), |k| std::env::var(k).ok())?;
    let c = Client::new(&settings.api_url, settings.api_key.clone());
    let json = cli.json;
    // Prints the raw answer with --json, else the rendering.
    let show = |v: &Value, render: &dyn Fn(&Value) -> String| {
        if json {
            print_json(v)
        } else {
            print(&render(v))
        }
    };

    match cli.command {
        Command::Upload(u) => return upload(&c, u, json),
        Command::Datasets => show(&c.get("/v1/datasets", &[])?, &datasets_table),
        Command::Corpora => show(&c.get("/v1/corpora", &[])?, &corpora_table),
        Command::Train(mut t) => {
            t.dataset = id_of(&c, Named::Dataset, &t.dataset)?;
            let body = train_body(&t)?;
            return submit(&c, "/v1/jobs/train", body, &t.submit, json);
        }
        Command::Sweep(mut w) => {
            w.dataset = id_of(&c, Named::Dataset, &w.dataset)?;
            let body = sweep_body(&w)?;
            return submit(&c, "/v1/jobs/sweep", body, &w.submit, json);
        }
        Command::Score(mut s) => {
            s.corpus = id_of(&c, Named::Corpus, &s.corpus)?;
            let body = score_body(&s);
            return submit(&c, "/v1/jobs/score", body, &s.submit, json);
        }
        Command::Jobs { state, kind, limit } => {
            let mut q = Vec::new();
            if let Some(s) = state {
                q.push(("state", s));
            }
            if let Some(k) = kind {
                q.push(("kind", k));
            }
            if let Some(l) = limit {
                q.push(("limit", l.to_string()));
            }
            show(&c.get("/v1/jobs", &q)?, &jobs_table);
        }
        Command::Job { id, events } => show(&c.get(&job_path(&id, ""), &[])?, &|j| job_details(j, events)),
        Command::Watch { id } => return watch(&c, &id, json),
        Command::Cancel { id } => {
            let job = c.post(&job_path(&id, "/cancel"), &Value::Null, &[])?.body;
            show(&job, &|j| format!("job {} {}\n", get(j, "id"), get(j, "state")));
        }
        Command::Metrics { job_id } => show(&c.get(&job_path(&job_id, "/metrics"), &[])?, &metrics_table),
        Command::Models => show(&c.get("/v1/models", &[])?, &models_table),
        Command::Model { id } => show(&c.get(&format!("/v1/models/{}", seg(&id)), &[])?, &model_details),
        Command::Compare { ids } => {
            let v = c.get("/v1/models/compare", &[("ids", ids.join(","))])?;
            show(&v, &|v| compare_view(v, &ids));
        }
        Command::Aliases => show(&c.get("/v1/aliases", &[])?, &aliases_table),
        Command::RegisteredModels => show(&c.get("/v1/registered-models", &[])?, &registered_models_table),
        Command::Events { job_id } => {
            let events = every_page(&c, &job_path(&job_id, "/events"), "events")?;
            show(&json!({ "events": events }), &|v| {
                let rows: Vec<Vec<String>> =
                    list(v, "events").iter().map(|e| vec![time(e, "at"), get(e, "kind"), e.get("detail").map(Value::to_string).unwrap_or_default()]).collect();
                table(&["AT", "KIND", "DETAIL"], &rows)
            });
        }
        Command::Errors { of, id } => {
            let path = match of {
                ErrorsOf::Dataset => format!("/v1/datasets/{}/errors", seg(&id_of(&c, Named::Dataset, &id)?)),
                ErrorsOf::Corpus => format!("/v1/corpora/{}/errors", seg(&id_of(&c, Named::Corpus, &id)?)),
                ErrorsOf::Job => job_path(&id, "/errors"),
            };
            let errors = every_page(&c, &path, "errors")?;
            show(&json!({ "errors": errors }), &|v| {
                let rows: Vec<Vec<String>> = list(v, "errors").iter().map(|e| vec![get(e, "line"), get(e, "reason")]).collect();
                table(&["LINE", "REASON"], &rows)
            });
        }
        Command::Alias(AliasCmd::Set { name, version_id }) => {
            let v = c.put(&format!("/v1/aliases/{}", seg(&name)), &json!({ "model_version_id": version_id }))?;
            show(&v, &|a| format!("{} -> {}\n", get(a, "name"), get(a, "model_version_id")));
        }
        Command::Promote { version_id, alias, metric } => return promote(&c, &version_id, &alias, metric, json),
        Command::Export { job_id, format, output } => export(&c, &job_id, format, &output)?,
        Command::Download { version_id, artifact, output } => download(&c, &version_id, artifact, &output)?,
        Command::Login => unreachable!("answered before the settings are read"),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut <Cli as clap::CommandFactory>::command(), "absa", &mut std::io::stdout());
        }
        Command::Schedules => show(&c.get("/v1/schedules", &[])?, &schedules_table),
        Command::Schedule(ScheduleCmd::Add { name, dataset, base_model, cron, on_new_rows, hyperparameters, promote, metric }) => {
            let dataset = id_of(&c, Named::Dataset, &dataset)?;
            let mut body = json!({ "name": name, "dataset_id": dataset, "base_model": base_model, "on_new_rows": on_new_rows });
            let hp = parse_hyperparameters(&hyperparameters, Map::new())?;
            if !hp.is_empty() {
                body["hyperparameters"] = Value::Object(hp);
            }
            if let Some(c) = cron {
                body["cron"] = json!(c);
            }
            if let Some(a) = promote {
                body["promote"] = json!({ "alias": a, "metric": name_of(metric) });
            }
            show(&c.post("/v1/schedules", &body, &[])?.body, &schedule_details);
        }
        Command::Schedule(ScheduleCmd::Show { id }) => show(&c.get(&format!("/v1/schedules/{}", seg(&id)), &[])?, &schedule_details),
        Command::Schedule(ScheduleCmd::Rm { id }) => {
            let v = c.delete(&format!("/v1/schedules/{}", seg(&id)))?;
            show(&v, &|_| format!("schedule {id} deleted\n"));
        }
        Command::Me => show(&c.get("/v1/me", &[])?, &|v| {
            fields(&[
                ("team", get(v, "team")),
                ("team id", get(v, "team_id")),
                ("role", get(v, "role")),
                ("key id", get(v, "key_id")),
                ("api", c.base().to_owned()),
            ])
        }),
        Command::Keys(KeysCmd::Create { name, role }) => {
            let v = c.post("/v1/keys", &json!({ "name": name, "role": name_of(role) }), &[])?.body;
            show(&v, &|k| {
                let mut s = fields(&[("id", get(k, "id")), ("name", get(k, "name")), ("role", get(k, "role")), ("key", get(k, "key"))]);
                s.push_str("The key is shown only this once: store it now.\n");
                s
            });
        }
        Command::Keys(KeysCmd::List) => show(&c.get("/v1/keys", &[])?, &|v| {
            let keys = list(v, "keys");
            let rows: Vec<Vec<String>> = keys.iter().map(|k| vec![get(k, "id"), get(k, "name"), get(k, "role"), time(k, "created_at")]).collect();
            table(&["ID", "NAME", "ROLE", "CREATED"], &rows)
        }),
        Command::Keys(KeysCmd::Rm { id }) => {
            let v = c.delete(&format!("/v1/keys/{}", seg(&id)))?;
            show(&v, &|_| format!("key {id} revoked\n"));
        }
    }
    Ok(ExitCode::SUCCESS)
}

// ---- printing ----

/// Writes to standard output; a closed pipe (`absa jobs | head`) ends the program quietly.
fn print(s: &str) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(s.as_bytes()).and_then(|_| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: writing output: {e}");
        std::process::exit(1);
    }
}

fn print_json(v: &Value) {
    print(&format!("{}\n", serde_json::to_string_pretty(v).expect("JSON values serialize")));
}

/// A path segment: ids and names go into URLs percent-encoded.
/// What a name can stand for on the command line.
#[derive(Clone, Copy)]
enum Named {
    Dataset,
    Corpus,
}

/// `given` when it is an id, else the id of the team's dataset or corpus of that name
/// (the listing's `name` filter); an unknown name is a not-found error (exit code 4).
fn id_of(c: &Client, kind: Named, given: &str) -> Result<String> {
    let is_uuid = given.len() == 36 && given.chars().enumerate().all(|(i, ch)| if [8, 13, 18, 23].contains(&i) { ch == '-' } else { ch.is_ascii_hexdigit() });
    if is_uuid {
        return Ok(given.to_owned());
    }
    let (path, field, what) = match kind {
        Named::Dataset => ("/v1/datasets", "datasets", "dataset"),
        Named::Corpus => ("/v1/corpora", "corpora", "corpus"),
    };
    let page = c.get(path, &[("name", given.to_owned())])?;
    match page.get(field).and_then(Value::as_array).and_then(|items| items.first()) {
        Some(item) => Ok(get(item, "id")),
        None => Err(exit::NotFound(format!("no {what} named {given:?} in the team")).into()),
    }
}

fn seg(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn job_path(id: &str, rest: &str) -> String {
    format!("/v1/jobs/{}{rest}", seg(id))
}

// ---- uploads ----

fn format_of(path: &Path, given: Option<Format>) -> Result<Format> {
    if let Some(f) = given {
        return Ok(f);
    }
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    Ok(match ext.as_str() {
        "jsonl" | "ndjson" => Format::Jsonl,
        "csv" => Format::Csv,
        "parquet" | "pq" => Format::Parquet,
        _ => bail!("cannot tell the format of {} from its extension; pass --format jsonl|csv|parquet", path.display()),
    })
}

fn upload(c: &Client, u: Upload, json: bool) -> Result<ExitCode> {
    let (what, path, name, format, mut query, show_errors) = match u {
        Upload::Dataset { file, name, split, format, text_column, aspect_column, start_column, end_column, target_column, label_column, show } => {
            let mut q = Vec::new();
            if let Some(s) = split {
                q.push(("split", s));
            }
            for (k, v) in [
                ("text_column", text_column),
                ("aspect_column", aspect_column),
                ("start_column", start_column),
                ("end_column", end_column),
                ("target_column", target_column),
                ("label_column", label_column),
            ] {
                if let Some(v) = v {
                    q.push((k, v));
                }
            }
            ("dataset", file, name, format, q, show.show_errors)
        }
        Upload::Corpus { file, name, format, show } => ("corpus", file, name, format, Vec::new(), show.show_errors),
    };
    let format = format_of(&path, format)?;
    query.insert(0, ("name", name));
    query.insert(1, ("format", name_of(format)));
    let file = std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let len = file.metadata().with_context(|| format!("reading {}", path.display()))?.len();
    // Checked before sending: a server refusing a large body mid-stream closes the
    // connection, and the client would only see a broken pipe instead of the reason.
    let me = c.get("/v1/me", &[])?;
    if let Some(cap) = me.get("max_upload_bytes").and_then(Value::as_u64) {
        if len > cap {
            anyhow::bail!("{}: {len} bytes; the API accepts uploads of at most {cap} bytes (its api.max_upload_bytes)", path.display());
        }
    }
    if what == "dataset" && me.get("role").and_then(Value::as_str) == Some("analyst") {
        return Err(exit::KeyRefused("uploading datasets needs the mlops role; this key has analyst".into()).into());
    }
    let content_type = match format {
        Format::Jsonl => "application/x-ndjson",
        Format::Csv => "text/csv",
        Format::Parquet => "application/vnd.apache.parquet",
    };

    let bar = ProgressBar::new(len)
        .with_style(ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}").expect("valid template").progress_chars("=> "));
    bar.set_message(format!("uploading {}", path.display()));
    let reader = EndNotice { inner: bar.wrap_read(file), bar: bar.clone() };
    let endpoint = if what == "dataset" { "/v1/datasets" } else { "/v1/corpora" };
    let result = c.upload(endpoint, &query, content_type, len, reader);
    bar.finish_and_clear();
    let v = result?.body;
    if json {
        print_json(&v);
        return Ok(ExitCode::SUCCESS);
    }
    let (id, added, total, unit) =
        if what == "dataset" { ("dataset_id", "rows_added", "rows_total", "rows") } else { ("corpus_id", "documents_added", "documents_total", "documents") };
    let mut s = format!("{what} {} ({}): {} {unit} added, {} in total\n", get(&v, "name"), get(&v, id), count_of(&v, added), count_of(&v, total));
    let errors = list(&v, "errors");
    let error_count = v.get("error_count").and_then(Value::as_i64).unwrap_or(errors.len() as i64);
    s.push_str(&output::row_errors(errors, error_count, show_errors));
    print(&s);
    Ok(ExitCode::SUCCESS)
}

/// Says "waiting for the server" on the bar once the whole file has been read.
struct EndNotice<R> {
    inner: R,
    bar: ProgressBar,
}

impl<R: Read> Read for EndNotice<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.bar.set_message("sent; waiting for the server");
        }
        Ok(n)
    }
}

fn datasets_table(v: &Value) -> String {
    let rows: Vec<Vec<String>> = list(v, "datasets")
        .iter()
        .map(|d| {
            // The list has a total; a single dataset has counts per split.
            let splits = match d.get("rows") {
                Some(Value::Object(m)) if !m.is_empty() => m.iter().map(|(k, n)| format!("{k} {}", output::cell(n))).collect::<Vec<_>>().join(", "),
                Some(n @ Value::Number(_)) => output::cell(n),
                _ => "-".into(),
            };
            vec![get(d, "id"), get(d, "name"), splits, get(d, "label_names"), time(d, "created_at")]
        })
        .collect();
    table(&["ID", "NAME", "ROWS", "LABELS", "CREATED"], &rows)
}

fn corpora_table(v: &Value) -> String {
    let rows: Vec<Vec<String>> =
        list(v, "corpora").iter().map(|d| vec![get(d, "id"), get(d, "name"), count_of(d, "documents"), time(d, "created_at")]).collect();
    table(&["ID", "NAME", "DOCUMENTS", "CREATED"], &rows)
}

// ---- jobs ----

/// `KEY=VALUE` pairs into a JSON object; values parsed as JSON, else kept as strings.
fn parse_hyperparameters(pairs: &[String], mut into: Map<String, Value>) -> Result<Map<String, Value>> {
    for pair in pairs {
        let Some((k, v)) = pair.split_once('=') else { bail!("--hp {pair:?}: expected KEY=VALUE") };
        let value = serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_owned()));
        into.insert(k.trim().to_owned(), value);
    }
    Ok(into)
}

fn train_body(t: &Train) -> Result<Value> {
    let mut hp = Map::new();
    if let Some(v) = t.lr {
        hp.insert("learning_rate".into(), json!(v));
    }
    if let Some(v) = t.epochs {
        hp.insert("epochs".into(), json!(v));
    }
    if let Some(v) = t.batch_size {
        hp.insert("batch_size".into(), json!(v));
    }
    if let Some(v) = t.seed {
        hp.insert("seed".into(), json!(v));
    }
    let hp = parse_hyperparameters(&t.hyperparameters, hp)?;
    let mut body = json!({ "dataset_id": t.dataset, "base_model": t.base_model });
    if !hp.is_empty() {
        body["hyperparameters"] = Value::Object(hp);
    }
    if let Some(g) = t.gpus {
        body["gpus"] = json!(g);
    }
    if let Some(r) = t.ranks {
        body["ranks"] = json!(r);
    }
    if let Some(a) = &t.promote {
        body["promote"] = json!({ "alias": a, "metric": name_of(t.metric) });
    }
    if let Some(m) = &t.registered_model {
        body["model"] = json!(m);
    }
    Ok(body)
}

fn sweep_body(w: &Sweep) -> Result<Value> {
    let mut grid = Map::new();
    for entry in &w.grid {
        let (key, values) = entry.split_once('=').ok_or_else(|| anyhow::anyhow!("--grid {entry:?}: expected KEY=V1,V2,.."))?;
        let values: Vec<Value> = values.split(',').map(|v| serde_json::from_str(v.trim()).unwrap_or_else(|_| json!(v.trim()))).collect();
        grid.insert(key.trim().to_owned(), json!(values));
    }
    let hp = parse_hyperparameters(&w.hyperparameters, Map::new())?;
    let mut body = json!({ "dataset_id": w.dataset, "base_model": w.base_model, "grid": grid, "metric": name_of(w.metric), "choose_by": name_of(w.choose_by) });
    if !hp.is_empty() {
        body["hyperparameters"] = Value::Object(hp);
    }
    if let Some(n) = w.max_concurrency {
        body["max_concurrency"] = json!(n);
    }
    if let Some(e) = w.median_stop_after {
        body["early_stopping"] = json!({ "after_epoch": e });
    }
    if let Some(a) = &w.promote {
        body["promote"] = json!({ "alias": a, "metric": name_of(w.metric) });
    }
    Ok(body)
}

/// `NAME` or `NAME=ALIAS|ALIAS...` as the API's `{"name", "aliases"}` (the server checks
/// the bounds).
fn parse_target(arg: &str) -> Result<Value, String> {
    let (name, aliases) = arg.split_once('=').unwrap_or((arg, ""));
    let name = name.trim();
    if name.is_empty() {
        return Err("a target needs a name: NAME or NAME=ALIAS|ALIAS".into());
    }
    let aliases: Vec<&str> = aliases.split('|').map(str::trim).filter(|a| !a.is_empty()).collect();
    Ok(json!({ "name": name, "aliases": aliases }))
}

fn score_body(s: &Score) -> Value {
    let mut body = json!({ "corpus_id": s.corpus });
    if let Some(m) = &s.model {
        body["model_version_id"] = json!(m);
    }
    if let Some(a) = &s.alias {
        body["alias"] = json!(a);
    }
    if let Some(m) = &s.registered_model {
        body["model"] = json!(m);
    }
    if let Some(n) = s.shard_size {
        body["shard_size"] = json!(n);
    }
    if !s.lexicon.is_empty() {
        body["target_mode"] = json!("lexicon");
        body["lexicon"] = json!(s.lexicon);
    }
    if !s.targets.is_empty() {
        body["targets"] = json!(s.targets);
    }
    body
}

fn submit(c: &Client, path: &str, body: Value, s: &Submit, json: bool) -> Result<ExitCode> {
    let headers: Vec<(&str, String)> = s.idempotency_key.iter().map(|k| ("Idempotency-Key", k.clone())).collect();
    let reply = c.post(path, &body, &headers)?;
    let job = reply.body;
    let id = job.get("id").and_then(Value::as_str).context("the server's answer has no job id")?.to_owned();
    if s.wait {
        if !json {
            eprintln!("{}", submitted_line(&job, reply.status));
        }
        return watch(c, &id, json);
    }
    if json {
        print_json(&job);
    } else {
        print(&format!("{}\n", submitted_line(&job, reply.status)));
    }
    Ok(ExitCode::SUCCESS)
}

fn submitted_line(job: &Value, status: u16) -> String {
    if status == 200 {
        format!("{} job {} already submitted with this idempotency key ({})", get(job, "kind"), get(job, "id"), get(job, "state"))
    } else {
        format!("submitted {} job {} ({})", get(job, "kind"), get(job, "id"), get(job, "state"))
    }
}

fn jobs_table(v: &Value) -> String {
    let rows: Vec<Vec<String>> = list(v, "jobs")
        .iter()
        .map(|j| {
            vec![
                get(j, "id"),
                get(j, "kind"),
                get(j, "state"),
                percent(j.get("progress").and_then(Value::as_f64)),
                time(j, "created_at"),
                time(j, "updated_at"),
                j.get("last_error").and_then(Value::as_str).map(|e| truncate(e, 60)).unwrap_or_default(),
            ]
        })
        .collect();
    table(&["ID", "KIND", "STATE", "PROGRESS", "CREATED", "UPDATED", "ERROR"], &rows)
}

fn job_details(j: &Value, last_events: usize) -> String {
    let mut f = vec![
        ("id", get(j, "id")),
        ("kind", get(j, "kind")),
        ("state", get(j, "state")),
        ("progress", percent(j.get("progress").and_then(Value::as_f64))),
        (
            "attempts",
            match j.get("max_attempts").and_then(Value::as_i64) {
                Some(max) => format!("{} of {max}", get(j, "attempts")),
                None => get(j, "attempts"),
            },
        ),
        ("created", time(j, "created_at")),
        ("updated", time(j, "updated_at")),
    ];
    if j.get("model_version_id").is_some_and(|v| !v.is_null()) {
        f.push(("model version", get(j, "model_version_id")));
    }
    if let Some(sh) = j.get("shards").filter(|v| v.is_object()) {
        f.push((
            "shards",
            format!(
                "{} total: {} succeeded, {} failed, {} running, {} queued",
                get(sh, "total"),
                get(sh, "succeeded"),
                get(sh, "failed"),
                get(sh, "running"),
                get(sh, "queued")
            ),
        ));
    }
    if j.get("chosen_model_version_id").is_some_and(|v| !v.is_null()) {
        f.push(("chosen version", get(j, "chosen_model_version_id")));
    }
    f.push(("parameters", output::cell(j.get("parameters").unwrap_or(&Value::Null))));
    if j.get("last_error").is_some_and(|v| !v.is_null()) {
        f.push(("last error", get(j, "last_error")));
    }
    let mut s = fields(&f);
    // A sweep's children with the last point of their validation curves.
    let children = list(j, "children");
    if !children.is_empty() {
        // Stance's F_avg, where the children report it.
        let f_avg = has_metric(children, "validation_f_avg");
        let rows: Vec<Vec<String>> = children
            .iter()
            .map(|c| {
                let mut row = vec![
                    get(c, "trial"),
                    output::cell(c.get("values").unwrap_or(&Value::Null)),
                    get(c, "state"),
                    get(c, "epoch"),
                    metric(c, "validation_loss"),
                    metric(c, "validation_accuracy"),
                    metric(c, "validation_macro_f1"),
                ];
                if f_avg {
                    row.push(metric(c, "validation_f_avg"));
                }
                row.push(metric(c, "test_accuracy"));
                row
            })
            .collect();
        let mut heads = vec!["TRIAL", "VALUES", "STATE", "EPOCH", "VAL_LOSS", "VAL_ACC", "VAL_F1"];
        if f_avg {
            heads.push("VAL_F_AVG");
        }
        heads.push("TEST_ACC");
        s.push_str("\nchildren (validation figures at their last epoch; test shown, never used to choose):\n");
        s.push_str(&table(&heads, &rows));
    }
    let settings = list(j, "settings");
    if !settings.is_empty() {
        let rows: Vec<Vec<String>> =
            settings.iter().map(|t| vec![output::cell(t.get("values").unwrap_or(&Value::Null)), get(t, "children"), metric(t, "mean")]).collect();
        s.push_str("\nsettings (mean validation figure of each setting's succeeded children, at their selected epochs):\n");
        s.push_str(&table(&["VALUES", "CHILDREN", "MEAN"], &rows));
    }
    let events = list(j, "events");
    if !events.is_empty() {
        let from = events.len().saturating_sub(last_events);
        s.push_str(&format!("\nevents (last {} of {}):\n", events.len() - from, events.len()));
        let rows: Vec<Vec<String>> =
            events[from..].iter().map(|e| vec![time(e, "at"), get(e, "kind"), truncate(&output::cell(e.get("detail").unwrap_or(&Value::Null)), 100)]).collect();
        s.push_str(&table(&["AT", "KIND", "DETAIL"], &rows));
    }
    s
}

/// Polls the job every second with a progress bar until it is final.
fn watch(c: &Client, id: &str, json: bool) -> Result<ExitCode> {
    let bar = ProgressBar::new(1000)
        .with_style(ProgressStyle::with_template("{spinner} {prefix} [{bar:30}] {msg} ({elapsed})").expect("valid template").progress_chars("=> "));
    bar.enable_steady_tick(Duration::from_millis(120));
    let path = job_path(id, "");
    let mut failures = 0;
    let mut last_line = String::new();
    let mut last_logged = String::new();
    let job = loop {
        match c.get(&path, &[]) {
            Ok(job) => {
                failures = 0;
                bar.set_prefix(format!("{} {}", get(&job, "kind"), id.chars().take(8).collect::<String>()));
                let p = job.get("progress").and_then(Value::as_f64).unwrap_or(0.0);
                bar.set_position((p.clamp(0.0, 1.0) * 1000.0) as u64);
                let line = output::job_status(&job);
                bar.set_message(line.clone());
                // Without a terminal the bar is hidden: print changes as lines instead,
                // progress in steps of 10%.
                let mut coarse = job.clone();
                coarse["progress"] = json!((p * 10.0).floor() / 10.0);
                let coarse = output::job_status(&coarse);
                if bar.is_hidden() && coarse != last_logged && !json {
                    eprintln!("{} {coarse}", get(&job, "id"));
                    last_logged = coarse;
                }
                last_line = line;
                if output::is_final(job.get("state").and_then(Value::as_str).unwrap_or("")) {
                    break job;
                }
            }
            Err(e) if client::is_transient(&e) && failures < 30 => {
                failures += 1;
                bar.set_message(format!("{last_line} (retrying: {e})"));
            }
            Err(e) => {
                bar.abandon();
                return Err(e);
            }
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    bar.finish_and_clear();
    let state = get(&job, "state");
    if json {
        print_json(&job);
    } else if state == "succeeded" {
        let mut s = format!("job {} succeeded\n", get(&job, "id"));
        if job.get("model_version_id").is_some_and(|v| !v.is_null()) {
            s.push_str(&format!("model version: {}\n", get(&job, "model_version_id")));
        }
        print(&s);
    }
    if state == "succeeded" {
        return Ok(ExitCode::SUCCESS);
    }
    match job.get("last_error").and_then(Value::as_str) {
        Some(err) => eprintln!("job {} {state}: {err}", get(&job, "id")),
        None => eprintln!("job {} {state}", get(&job, "id")),
    }
    Ok(exit::code(exit::of_job_state(&state)))
}

/// Whether any of `items` has the number `key` (stance's F_avg is only there for labels
/// with against and favor: its column is shown only then).
fn has_metric(items: &[Value], key: &str) -> bool {
    items.iter().any(|i| i.get(key).is_some_and(Value::is_number))
}

fn metrics_table(v: &Value) -> String {
    let epochs = list(v, "epochs");
    let f_avg = has_metric(epochs, "f_avg");
    let rows: Vec<Vec<String>> = epochs
        .iter()
        .map(|e| {
            let mut row = vec![get(e, "epoch"), metric(e, "train_loss"), metric(e, "validation_loss"), metric(e, "accuracy"), metric(e, "macro_f1")];
            if f_avg {
                row.push(metric(e, "f_avg"));
            }
            row
        })
        .collect();
    let mut heads = vec!["EPOCH", "TRAIN_LOSS", "VALIDATION_LOSS", "ACCURACY", "MACRO_F1"];
    if f_avg {
        heads.push("F_AVG");
    }
    table(&heads, &rows)
}

// ---- models ----

fn models_table(v: &Value) -> String {
    let models = list(v, "models");
    let metrics_of = |m: &Value| m.get("metrics").cloned().unwrap_or(Value::Null);
    let f_avg = has_metric(&models.iter().map(metrics_of).collect::<Vec<_>>(), "validation_f_avg");
    let rows: Vec<Vec<String>> = models
        .iter()
        .map(|m| {
            let metrics = metrics_of(m);
            let mut row =
                vec![get(m, "id"), get(m, "base_model"), get(m, "aliases"), metric(&metrics, "validation_macro_f1"), metric(&metrics, "validation_accuracy")];
            if f_avg {
                row.push(metric(&metrics, "validation_f_avg"));
            }
            row.push(time(m, "created_at"));
            row
        })
        .collect();
    let mut heads = vec!["ID", "BASE_MODEL", "ALIASES", "VAL_MACRO_F1", "VAL_ACCURACY"];
    if f_avg {
        heads.push("VAL_F_AVG");
    }
    heads.push("CREATED");
    table(&heads, &rows)
}

fn model_details(m: &Value) -> String {
    let mut s = fields(&[
        ("id", get(m, "id")),
        ("base model", get(m, "base_model")),
        ("dataset", get(m, "dataset_id")),
        ("training job", get(m, "training_job_id")),
        ("labels", get(m, "label_names")),
        ("aliases", get(m, "aliases")),
        ("created", time(m, "created_at")),
        ("lineage", get(m, "lineage")),
    ]);
    if let Some(metrics) = m.get("metrics").and_then(Value::as_object).filter(|o| !o.is_empty()) {
        let mut names: Vec<&String> = metrics.keys().collect();
        names.sort();
        let rows: Vec<Vec<String>> = names.into_iter().map(|k| vec![k.clone(), output::cell(&metrics[k])]).collect();
        s.push('\n');
        s.push_str(&table(&["METRIC", "VALUE"], &rows));
    }
    s
}

fn compare_view(v: &Value, ids: &[String]) -> String {
    let models = list(v, "models");
    let rows: Vec<Vec<String>> = models.iter().map(|m| vec![get(m, "id"), get(m, "base_model"), get(m, "aliases"), time(m, "created_at")]).collect();
    let mut s = table(&["ID", "BASE_MODEL", "ALIASES", "CREATED"], &rows);
    s.push('\n');
    let empty = Map::new();
    s.push_str(&output::compare(ids, v.get("metrics").and_then(Value::as_object).unwrap_or(&empty)));
    s
}

fn registered_models_table(v: &Value) -> String {
    let rows: Vec<Vec<String>> = list(v, "models")
        .iter()
        .map(|m| {
            let labels =
                m.get("label_names").and_then(Value::as_array).map(|l| l.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(",")).unwrap_or_default();
            let aliases = m.get("aliases").and_then(Value::as_object).map(|a| a.keys().cloned().collect::<Vec<_>>().join(",")).unwrap_or_default();
            vec![get(m, "name"), get(m, "task"), labels, get(m, "versions"), aliases]
        })
        .collect();
    table(&["NAME", "TASK", "LABELS", "VERSIONS", "ALIASES"], &rows)
}

/// Every item of a cursor-paged listing (`has_more`, `next_after`), page after page.
fn every_page(c: &Client, path: &str, field: &str) -> Result<Vec<Value>> {
    let mut items = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut query = vec![("limit", "1000".to_owned())];
        if let Some(a) = &after {
            query.push(("after", a.clone()));
        }
        let page = c.get(path, &query)?;
        items.extend(page.get(field).and_then(Value::as_array).cloned().unwrap_or_default());
        match page.get("next_after").filter(|n| !n.is_null()) {
            Some(Value::String(s)) => after = Some(s.clone()),
            Some(other) => after = Some(other.to_string()),
            None => return Ok(items),
        }
    }
}

fn aliases_table(v: &Value) -> String {
    let rows: Vec<Vec<String>> =
        list(v, "aliases").iter().map(|a| vec![get(a, "model"), get(a, "name"), get(a, "model_version_id"), time(a, "updated_at")]).collect();
    table(&["MODEL", "NAME", "MODEL_VERSION", "UPDATED"], &rows)
}

fn promote(c: &Client, version_id: &str, alias: &str, metric: Metric, json: bool) -> Result<ExitCode> {
    let body = json!({ "alias": alias, "metric": name_of(metric) });
    let path = format!("/v1/models/{}/promote", seg(version_id));
    let (v, promoted) = match c.post(&path, &body, &[]) {
        Ok(reply) => (reply.body, true),
        Err(e) => match e.downcast_ref::<ApiError>() {
            Some(api) if api.status == 409 && api.body.get("promoted") == Some(&Value::Bool(false)) => (api.body.clone(), false),
            _ => return Err(e),
        },
    };
    if json {
        print_json(&v);
    } else {
        let scores = match (v.get("candidate").and_then(Value::as_f64), v.get("current").and_then(Value::as_f64)) {
            (Some(a), Some(b)) => {
                format!(" ({}: candidate {a:.4}, current {b:.4})", name_of(metric))
            }
            (Some(a), None) => format!(" ({}: candidate {a:.4}, alias was unset)", name_of(metric)),
            _ => String::new(),
        };
        if promoted {
            print(&format!("promoted {version_id} to {alias}{scores}\n"));
        } else {
            // The server's message already gives both scores.
            match v.get("error").and_then(Value::as_str) {
                Some(err) => print(&format!("not promoted: {err}\n")),
                None => print(&format!("not promoted{scores}\n")),
            }
        }
    }
    Ok(if promoted { ExitCode::SUCCESS } else { exit::code(exit::CONFLICT) })
}

// ---- export ----

fn export(c: &Client, job_id: &str, format: Option<ExportFormat>, output: &Path) -> Result<()> {
    let to_stdout = output.as_os_str() == "-";
    let format = format.unwrap_or_else(|| match output.extension().and_then(|e| e.to_str()) {
        Some(e) if e.eq_ignore_ascii_case("parquet") => ExportFormat::Parquet,
        _ => ExportFormat::Csv,
    });
    let mut download = c.download(&job_path(job_id, "/predictions"), &[("format", name_of(format))])?;
    if to_stdout {
        let mut out = std::io::stdout().lock();
        std::io::copy(&mut download.body, &mut out).context("streaming predictions to standard output")?;
        out.flush()?;
        return Ok(());
    }
    let (n, _) = save(download.body, download.len, output, "predictions")?;
    eprintln!("wrote {} bytes of {} to {}", output::count(n as i64), name_of(format), output.display());
    Ok(())
}

/// `absa login`: the key from standard input, checked against the API (`/v1/me`), then
/// saved with the URL (`--api-url`, `ABSA_API_URL` or the default) as the profile.
fn login(cli: &Cli) -> Result<ExitCode> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    let url = config::normalize_url(&cli.api_url.clone().or_else(|| env(config::ENV_API_URL)).unwrap_or_else(|| config::DEFAULT_API_URL.into()))?;
    let path = config::config_path(cli.config.clone(), &env).0.context("no config file to write: set HOME, or name one with --config")?;
    let profile = cli.profile.clone().or_else(|| env(config::ENV_PROFILE));
    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        eprint!("API key for {url}: ");
    }
    let mut key = String::new();
    std::io::stdin().read_line(&mut key).context("reading the API key from standard input")?;
    let key = key.trim().to_owned();
    if key.is_empty() {
        return Err(exit::KeyRefused("no API key on standard input".into()).into());
    }
    let me = Client::new(&url, Some(key.clone())).get("/v1/me", &[])?;
    config::save_profile(&path, profile.as_deref(), &url, &key)?;
    let name = profile.as_deref().unwrap_or("default");
    print(&format!("logged in to {url} as {} of team {}; profile {name} saved in {}\n", get(&me, "role"), get(&me, "team"), path.display()));
    Ok(ExitCode::SUCCESS)
}

/// `absa download`: the artifact saved to `output`, refused (and not left behind) when
/// its sha256 differs from the ETag the API sent.
fn download(c: &Client, version_id: &str, artifact: Artifact, output: &Path) -> Result<()> {
    let what = name_of(artifact);
    let download = c.download(&format!("/v1/models/{}/artifacts/{what}", seg(version_id)), &[])?;
    let expected = download.etag.clone();
    let (n, sha256) = save(download.body, download.len, output, &format!("the {what} artifact"))?;
    if let Some(expected) = expected.filter(|e| *e != sha256) {
        let _ = std::fs::remove_file(output);
        bail!("the downloaded {what} artifact has sha256 {sha256}, the API said {expected}: removed {}", output.display());
    }
    eprintln!("wrote {} bytes ({what}, sha256 {sha256}) to {}", output::count(n as i64), output.display());
    Ok(())
}

/// Streams `body` into `output` with a progress bar, hashing it on the way; written
/// beside the target and renamed at the end, so a failed download leaves no partial
/// file. Returns the bytes written and their sha256 (hex).
fn save(body: impl Read, len: Option<u64>, output: &Path, what: &str) -> Result<(u64, String)> {
    let mut part = output.as_os_str().to_owned();
    part.push(".part");
    let part = PathBuf::from(part);
    let bar = match len {
        Some(n) => ProgressBar::new(n).with_style(
            ProgressStyle::with_template("downloading [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}").expect("valid template").progress_chars("=> "),
        ),
        None => ProgressBar::new_spinner().with_style(ProgressStyle::with_template("{spinner} downloading {bytes} {bytes_per_sec}").expect("valid template")),
    };
    let result = (|| -> Result<(u64, String)> {
        let file = std::fs::File::create(&part).with_context(|| format!("creating {}", part.display()))?;
        let mut hashing = HashingWriter { inner: file, hasher: Sha256::new() };
        let n = std::io::copy(&mut bar.wrap_read(body), &mut hashing).with_context(|| format!("downloading {what}"))?;
        hashing.inner.sync_all()?;
        std::fs::rename(&part, output).with_context(|| format!("renaming {} to {}", part.display(), output.display()))?;
        Ok((n, format!("{:x}", hashing.hasher.finalize())))
    })();
    bar.finish_and_clear();
    if result.is_err() {
        let _ = std::fs::remove_file(&part);
    }
    result
}

/// A writer that hashes what passes through it.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

// ---- schedules ----

fn schedules_table(v: &Value) -> String {
    let rows: Vec<Vec<String>> = list(v, "schedules")
        .iter()
        .map(|s| vec![get(s, "id"), get(s, "name"), get(s, "cron"), get(s, "on_new_rows"), get(s, "enabled"), time(s, "next_run_at"), time(s, "last_fired_at")])
        .collect();
    table(&["ID", "NAME", "CRON", "ON_NEW_ROWS", "ENABLED", "NEXT_RUN", "LAST_FIRED"], &rows)
}

fn schedule_details(s: &Value) -> String {
    let mut f = vec![
        ("id", get(s, "id")),
        ("name", get(s, "name")),
        ("cron", get(s, "cron")),
        ("on new rows", get(s, "on_new_rows")),
        ("enabled", get(s, "enabled")),
        ("next run", time(s, "next_run_at")),
        ("last fired", time(s, "last_fired_at")),
    ];
    // The training job a firing submits is under `job_parameters`.
    let job = s.get("job_parameters");
    for key in ["dataset_id", "base_model", "hyperparameters", "promote"] {
        if let Some(v) = s.get(key).or_else(|| job.and_then(|j| j.get(key))).filter(|v| !v.is_null()) {
            f.push((key, output::cell(v)));
        }
    }
    fields(&f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_parses() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from(["absa", "--json", "score", "--corpus", "c", "--alias", "production", "--lexicon", "battery,screen"]).unwrap();
        assert!(cli.json);
        let Command::Score(s) = cli.command else { panic!() };
        assert_eq!(score_body(&s), json!({"corpus_id": "c", "alias": "production", "target_mode": "lexicon", "lexicon": ["battery", "screen"]}));
        assert!(Cli::try_parse_from(["absa", "score", "--corpus", "c"]).is_err(), "a model or an alias is required");
        assert!(Cli::try_parse_from(["absa", "score", "--corpus", "c", "--model", "m", "--alias", "a"]).is_err());
        assert!(Cli::try_parse_from(["absa", "compare", "one"]).is_err(), "compare needs two ids");
    }

    #[test]
    fn stance_targets_are_repeatable_with_optional_aliases() {
        let targets = ["--target", "CDU=Union| Christdemokraten", "--target", "legalization of abortion"];
        let cli = Cli::try_parse_from(["absa", "score", "--corpus", "c", "--alias", "production"].into_iter().chain(targets)).unwrap();
        let Command::Score(s) = cli.command else { panic!() };
        assert_eq!(
            score_body(&s),
            json!({"corpus_id": "c", "alias": "production",
                   "targets": [{"name": "CDU", "aliases": ["Union", "Christdemokraten"]}, {"name": "legalization of abortion", "aliases": []}]})
        );
        assert!(Cli::try_parse_from(["absa", "score", "--corpus", "c", "--alias", "a", "--target", "=Union"]).is_err(), "a target needs a name");
    }

    #[test]
    fn f_avg_columns_appear_only_for_stance_figures() {
        let sentiment = json!({"epochs": [{"epoch": 1, "train_loss": 0.9, "validation_loss": 0.6, "accuracy": 0.7, "macro_f1": 0.6}]});
        assert!(!metrics_table(&sentiment).contains("F_AVG"));
        let stance = json!({"epochs": [{"epoch": 1, "train_loss": 0.9, "validation_loss": 0.6, "accuracy": 0.7, "macro_f1": 0.6, "f_avg": 0.65}]});
        let t = metrics_table(&stance);
        assert!(t.contains("F_AVG") && t.contains("0.6500"), "{t}");
        let models = json!({"models": [
            {"id": "a", "base_model": "m", "aliases": [], "metrics": {"validation_macro_f1": 0.6, "validation_accuracy": 0.7, "validation_f_avg": 0.55}},
            {"id": "b", "base_model": "m", "aliases": [], "metrics": {"validation_macro_f1": 0.8, "validation_accuracy": 0.9}}]});
        let t = models_table(&models);
        assert!(t.contains("VAL_F_AVG") && t.contains("0.5500"), "{t}");
        assert!(!models_table(&json!({"models": [{"id": "b", "metrics": {"validation_macro_f1": 0.8}}]})).contains("VAL_F_AVG"), "no stance model");
    }

    #[test]
    fn sweep_bodies_turn_grid_flags_into_lists() {
        let cli = Cli::try_parse_from([
            "absa",
            "sweep",
            "--dataset",
            "d",
            "--base-model",
            "m",
            "--grid",
            "learning_rate=1e-5,5e-5",
            "--grid",
            "seed=1,2,3",
            "--hp",
            "epochs=3",
            "--max-concurrency",
            "2",
            "--median-stop-after",
            "2",
            "--promote",
            "production",
            "--choose-by",
            "trial",
        ])
        .unwrap();
        let Command::Sweep(w) = cli.command else { panic!() };
        let body = sweep_body(&w).unwrap();
        assert_eq!(body["grid"], json!({ "learning_rate": [1e-5, 5e-5], "seed": [1, 2, 3] }));
        assert_eq!(body["hyperparameters"], json!({ "epochs": 3 }));
        assert_eq!(body["early_stopping"], json!({ "after_epoch": 2 }));
        assert_eq!(body["choose_by"], "trial");
        assert_eq!(body["promote"], json!({ "alias": "production", "metric": "macro_f1" }));
    }

    #[test]
    fn train_bodies_carry_only_what_was_given() {
        let cli = Cli::try_parse_from([
            "absa",
            "train",
            "--dataset",
            "d",
            "--base-model",
            "all-minilm-l6-v2",
            "--lr",
            "0.0001",
            "--epochs",
            "3",
            "--hp",
            "warmup_steps=100",
            "--hp",
            "pooling=mean",
            "--promote",
            "production",
            "--metric",
            "accuracy",
        ])
        .unwrap();
        let Command::Train(t) = cli.command else { panic!() };
        assert_eq!(
            train_body(&t).unwrap(),
            json!({"dataset_id": "d", "base_model": "all-minilm-l6-v2",
                   "hyperparameters": {"learning_rate": 0.0001, "epochs": 3, "warmup_steps": 100, "pooling": "mean"},
                   "promote": {"alias": "production", "metric": "accuracy"}})
        );
        let cli = Cli::try_parse_from(["absa", "train", "--dataset", "d", "--base-model", "m"]).unwrap();
        let Command::Train(t) = cli.command else { panic!() };
        assert_eq!(train_body(&t).unwrap(), json!({"dataset_id": "d", "base_model": "m"}));
    }

    #[test]
    fn formats_come_from_extensions() {
        assert!(matches!(format_of(Path::new("a.JSONL"), None).unwrap(), Format::Jsonl));
        assert!(matches!(format_of(Path::new("a.csv"), None).unwrap(), Format::Csv));
        assert!(matches!(format_of(Path::new("a.parquet"), None).unwrap(), Format::Parquet));
        assert!(matches!(format_of(Path::new("a.txt"), Some(Format::Csv)).unwrap(), Format::Csv));
        assert!(format_of(Path::new("a.txt"), None).unwrap_err().to_string().contains("--format"));
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(seg("0f3c-AB_x.y~"), "0f3c-AB_x.y~");
        assert_eq!(seg("a b/c"), "a%20b%2Fc");
    }

    #[test]
    fn job_details_show_shards_errors_and_the_last_events() {
        let job = json!({
            "id": "j1", "kind": "score", "state": "failed", "progress": 0.5, "attempts": 1,
            "parameters": {"corpus_id": "c"}, "last_error": "shard 3: out of memory",
            "created_at": "2026-01-02T03:04:05Z", "updated_at": "2026-01-02T03:05:05Z",
            "shards": {"total": 4, "succeeded": 2, "failed": 1, "running": 0, "queued": 1},
            "events": [
                {"at": "2026-01-02T03:04:05Z", "kind": "submitted", "detail": {}},
                {"at": "2026-01-02T03:04:06Z", "kind": "claimed", "detail": {"worker": "w1"}},
                {"at": "2026-01-02T03:05:05Z", "kind": "failed", "detail": {"error": "out of memory"}}
            ]
        });
        let s = job_details(&job, 2);
        assert!(s.contains("shards:      4 total: 2 succeeded, 1 failed, 0 running, 1 queued\n"), "{s}");
        assert!(s.contains("last error:  shard 3: out of memory\n"), "{s}");
        assert!(s.contains("events (last 2 of 3):\n"), "{s}");
        assert!(!s.contains("submitted"), "{s}");
        assert!(s.contains("2026-01-02 03:04:06Z  claimed  {\"worker\":\"w1\"}\n"), "{s}");
    }
}
