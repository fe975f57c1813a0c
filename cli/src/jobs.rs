//! `absa jobs`: submitting training, scoring and sweep jobs, and following them (list,
//! get, watch, cancel, events, errors, metrics, export of predictions).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Map, Value};

use crate::client::{self, pages, seg, Client};
use crate::datasets::{id_of, show_errors, Named};
use absa_jobs::sweep::ChooseBy;

use crate::models::{has_metric, save, Metric};
use crate::output::{self, fields, get, list, metric, percent, print, show, table, time, truncate};
use crate::{exit, name_of};

#[derive(Subcommand)]
pub enum JobCmd {
    /// Submit a training job (mlops)
    Train(Train),
    /// Submit a scoring job over a corpus
    Score(Score),
    /// Submit a hyperparameter sweep: child training jobs, the best chosen on validation (mlops)
    Sweep(Sweep),
    /// List jobs, newest first
    List {
        /// Only jobs in this state
        #[arg(long, value_parser = ["queued", "dispatched", "running", "succeeded", "failed", "cancelled"])]
        state: Option<String>,
        /// Only jobs of this kind
        #[arg(long, value_parser = ["train", "score", "sweep"])]
        kind: Option<String>,
        /// Only jobs created at or after this time (RFC 3339)
        #[arg(long, value_name = "TIME")]
        created_after: Option<String>,
        /// Only jobs with this tag
        #[arg(long, value_name = "KEY=VALUE")]
        tag: Option<String>,
        /// At most this many [default: all, page after page]
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        limit: Option<u32>,
    },
    /// Show a job with its last events
    Get {
        job: String,
        /// How many of the last events to show
        #[arg(long, default_value_t = 10)]
        events: usize,
    },
    /// Follow a job until it ends; exit code 5 when it failed, 6 when it was cancelled
    #[command(visible_alias = "wait")]
    Watch { job: String },
    /// Cancel a job (and its shards)
    Cancel { job: String },
    /// The job's whole event log, oldest first (every page)
    Events { job: String },
    /// Every row error of a scoring job, by line (every page)
    Errors { job: String },
    /// Per-epoch metrics of a training job
    Metrics { job: String },
    /// Download a scoring job's predictions (streamed)
    Export {
        job: String,
        /// Output file ("-" for standard output)
        file: PathBuf,
        /// File format [default: from the file's extension, else csv]
        #[arg(long, value_enum)]
        format: Option<ExportFormat>,
    },
}

#[derive(Args)]
pub struct Train {
    /// Dataset id or name
    #[arg(long)]
    dataset: String,
    /// Base model, e.g. all-minilm-l6-v2 (`absa base-models list`)
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
    #[command(flatten)]
    registration: Registration,
    #[command(flatten)]
    submit: Submit,
}

/// Where a training job's new version goes: the registered model it joins and the alias
/// it may take (shared by `jobs train` and `schedules create`).
#[derive(Args)]
pub struct Registration {
    /// The registered model the new version joins (default: the task's, sentiment or stance)
    #[arg(long, value_name = "NAME")]
    registered_model: Option<String>,
    /// Promote the new version to this alias if it beats the alias's current version
    #[arg(long, value_name = "ALIAS")]
    promote: Option<String>,
    /// Metric that decides the promotion
    #[arg(long, value_enum, default_value_t = Metric::MacroF1, requires = "promote")]
    metric: Metric,
}

impl Registration {
    /// `model` and `promote` of a training request, where given.
    pub fn add_to(&self, body: &mut Value) {
        if let Some(a) = &self.promote {
            body["promote"] = json!({ "alias": a, "metric": name_of(self.metric) });
        }
        if let Some(m) = &self.registered_model {
            body["model"] = json!(m);
        }
    }
}

#[derive(Args)]
pub struct Sweep {
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
    /// How the sweep picks its winner
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
pub struct Score {
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
pub struct Submit {
    /// A tag on the job, e.g. --tag owner=ana (repeatable; `absa jobs list --tag` finds them)
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    tags: Vec<String>,
    /// Submitting again with the same key returns the first job instead of a new one
    #[arg(long, value_name = "KEY")]
    idempotency_key: Option<String>,
    /// Follow the job until it ends (as `absa jobs watch`)
    #[arg(long)]
    wait: bool,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum ExportFormat {
    Csv,
    Parquet,
}

pub fn run(c: &Client, cmd: JobCmd) -> Result<ExitCode> {
    match cmd {
        JobCmd::Train(mut t) => {
            t.dataset = id_of(c, Named::Dataset, &t.dataset)?;
            let body = train_body(&t)?;
            return submit(c, "/v1/jobs/train", body, &t.submit);
        }
        JobCmd::Sweep(mut w) => {
            w.dataset = id_of(c, Named::Dataset, &w.dataset)?;
            let body = sweep_body(&w)?;
            return submit(c, "/v1/jobs/sweep", body, &w.submit);
        }
        JobCmd::Score(mut s) => {
            s.corpus = id_of(c, Named::Corpus, &s.corpus)?;
            let body = score_body(&s);
            return submit(c, "/v1/jobs/score", body, &s.submit);
        }
        JobCmd::List { state, kind, created_after, tag, limit } => {
            // The API's filter is KEY:VALUE; the CLI writes tags as KEY=VALUE everywhere.
            let tag = tag.map(|t| t.replacen('=', ":", 1));
            let query: Vec<(&str, String)> =
                [("state", state), ("kind", kind), ("created_after", created_after), ("tag", tag)].into_iter().filter_map(|(k, v)| v.map(|v| (k, v))).collect();
            let jobs = pages(c, "/v1/jobs", &query, "jobs", limit.map(|n| n as usize))?;
            show(&json!({ "jobs": jobs }), jobs_table);
        }
        JobCmd::Get { job, events } => show(&c.get(&job_path(&job, ""), &[])?, |j| job_details(j, events)),
        JobCmd::Watch { job } => return watch(c, &job),
        JobCmd::Cancel { job } => {
            let job = c.post(&job_path(&job, "/cancel"), &Value::Null, &[])?.body;
            show(&job, |j| format!("job {} {}\n", get(j, "id"), get(j, "state")));
        }
        JobCmd::Events { job } => {
            let events = pages(c, &job_path(&job, "/events"), &[], "events", None)?;
            show(&json!({ "events": events }), |v| {
                let rows: Vec<Vec<String>> =
                    list(v, "events").iter().map(|e| vec![time(e, "at"), get(e, "kind"), e.get("detail").map(Value::to_string).unwrap_or_default()]).collect();
                table(&["AT", "KIND", "DETAIL"], &rows)
            });
        }
        JobCmd::Errors { job } => show_errors(c, &job_path(&job, "/errors"))?,
        JobCmd::Metrics { job } => show(&c.get(&job_path(&job, "/metrics"), &[])?, metrics_table),
        JobCmd::Export { job, file, format } => export(c, &job, format, &file)?,
    }
    Ok(ExitCode::SUCCESS)
}

pub fn job_path(id: &str, rest: &str) -> String {
    format!("/v1/jobs/{}{rest}", seg(id))
}

/// `KEY=VALUE` pairs into a JSON object; values parsed as JSON, else kept as strings.
pub fn parse_hyperparameters(pairs: &[String], mut into: Map<String, Value>) -> Result<Map<String, Value>> {
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
    t.registration.add_to(&mut body);
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

fn submit(c: &Client, path: &str, mut body: Value, s: &Submit) -> Result<ExitCode> {
    if !s.tags.is_empty() {
        let mut tags = Map::new();
        for tag in &s.tags {
            let Some((k, v)) = tag.split_once('=') else { bail!("--tag {tag:?}: expected KEY=VALUE") };
            tags.insert(k.trim().to_owned(), json!(v));
        }
        body["tags"] = Value::Object(tags);
    }
    let headers: Vec<(&str, String)> = s.idempotency_key.iter().map(|k| ("Idempotency-Key", k.clone())).collect();
    let reply = c.post(path, &body, &headers)?;
    let job = reply.body;
    let id = job.get("id").and_then(Value::as_str).context("the server's answer has no job id")?.to_owned();
    if s.wait {
        if output::format() != output::Format::Json {
            eprintln!("{}", submitted_line(&job, reply.status));
        }
        return watch(c, &id);
    }
    show(&job, |j| format!("{}\n", submitted_line(j, reply.status)));
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
    if j.get("tags").and_then(Value::as_object).is_some_and(|t| !t.is_empty()) {
        f.push(("tags", get(j, "tags")));
    }
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

/// Polls the job every second with a progress bar until it is final; the exit code
/// tells succeeded (0), failed (5) and cancelled (6) apart.
pub fn watch(c: &Client, id: &str) -> Result<ExitCode> {
    let json = output::format() == output::Format::Json;
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
        output::print_json(&job);
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

fn export(c: &Client, job_id: &str, format: Option<ExportFormat>, output: &std::path::Path) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// `absa jobs ARGS` parsed.
    fn parse(args: &[&str]) -> Result<JobCmd, clap::Error> {
        #[derive(Parser)]
        struct Jobs {
            #[command(subcommand)]
            cmd: JobCmd,
        }
        Jobs::try_parse_from(std::iter::once("jobs").chain(args.iter().copied())).map(|j| j.cmd)
    }

    #[test]
    fn score_bodies_carry_the_lexicon_and_need_a_model_or_an_alias() {
        let Ok(JobCmd::Score(s)) = parse(&["score", "--corpus", "c", "--alias", "production", "--lexicon", "battery,screen"]) else { panic!() };
        assert_eq!(score_body(&s), json!({"corpus_id": "c", "alias": "production", "target_mode": "lexicon", "lexicon": ["battery", "screen"]}));
        assert!(parse(&["score", "--corpus", "c"]).is_err(), "a model or an alias is required");
        assert!(parse(&["score", "--corpus", "c", "--model", "m", "--alias", "a"]).is_err());
    }

    #[test]
    fn stance_targets_are_repeatable_with_optional_aliases() {
        let Ok(JobCmd::Score(s)) =
            parse(&["score", "--corpus", "c", "--alias", "production", "--target", "CDU=Union| Christdemokraten", "--target", "legalization of abortion"])
        else {
            panic!()
        };
        assert_eq!(
            score_body(&s),
            json!({"corpus_id": "c", "alias": "production",
                   "targets": [{"name": "CDU", "aliases": ["Union", "Christdemokraten"]}, {"name": "legalization of abortion", "aliases": []}]})
        );
        assert!(parse(&["score", "--corpus", "c", "--alias", "a", "--target", "=Union"]).is_err(), "a target needs a name");
    }

    #[test]
    fn f_avg_columns_appear_only_for_stance_figures() {
        let sentiment = json!({"epochs": [{"epoch": 1, "train_loss": 0.9, "validation_loss": 0.6, "accuracy": 0.7, "macro_f1": 0.6}]});
        assert!(!metrics_table(&sentiment).contains("F_AVG"));
        let stance = json!({"epochs": [{"epoch": 1, "train_loss": 0.9, "validation_loss": 0.6, "accuracy": 0.7, "macro_f1": 0.6, "f_avg": 0.65}]});
        let t = metrics_table(&stance);
        assert!(t.contains("F_AVG") && t.contains("0.6500"), "{t}");
    }

    #[test]
    fn sweep_bodies_turn_grid_flags_into_lists() {
        let args = [
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
        ];
        let Ok(JobCmd::Sweep(w)) = parse(&args) else { panic!() };
        let body = sweep_body(&w).unwrap();
        assert_eq!(body["grid"], json!({ "learning_rate": [1e-5, 5e-5], "seed": [1, 2, 3] }));
        assert_eq!(body["hyperparameters"], json!({ "epochs": 3 }));
        assert_eq!(body["early_stopping"], json!({ "after_epoch": 2 }));
        assert_eq!(body["choose_by"], "trial");
        assert_eq!(body["promote"], json!({ "alias": "production", "metric": "macro_f1" }));
    }

    #[test]
    fn train_bodies_carry_only_what_was_given() {
        let args = [
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
        ];
        let Ok(JobCmd::Train(t)) = parse(&args) else { panic!() };
        assert_eq!(
            train_body(&t).unwrap(),
            json!({"dataset_id": "d", "base_model": "all-minilm-l6-v2",
                   "hyperparameters": {"learning_rate": 0.0001, "epochs": 3, "warmup_steps": 100, "pooling": "mean"},
                   "promote": {"alias": "production", "metric": "accuracy"}})
        );
        let Ok(JobCmd::Train(t)) = parse(&["train", "--dataset", "d", "--base-model", "m"]) else { panic!() };
        assert_eq!(train_body(&t).unwrap(), json!({"dataset_id": "d", "base_model": "m"}));
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
