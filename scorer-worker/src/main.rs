use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use absa_domain::readers::{self, ReaderOptions, DEFAULT_MAX_LINE_BYTES};
use absa_onnx::Precision;
use absa_platform::{cli, config, telemetry};
use absa_scorer::bench::{self, BenchOptions};
use absa_scorer::engine::{self, EngineOptions, ScoreStats};
use absa_scorer::model::ScoringModel;
use absa_scorer::output::{self, ErrorLog};
use absa_scorer::rows::FieldNames;
use absa_scorer::runtime;
use absa_scorer::runtime::SessionOptions;
use absa_scorer::targets::{Lexicon, NamedTargets};
use absa_scorer_worker::settings::Settings;
use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

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
    /// Score a corpus without any server (local mode); prints a one-line JSON summary.
    Score(ScoreArgs),
    /// Throughput of the fp32 and int8 graphs over a repeated labelled corpus, and
    /// their accuracy on a test set; prints one JSON line.
    Bench(BenchArgs),
    /// Score shards from the queue until SIGTERM (the service's scoring worker).
    Work,
}

#[derive(Args)]
struct EngineArgs {
    /// Instances per model call.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Threads inside ONNX Runtime operators (default: `onnx.intra_threads`, the cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Threads that tokenize (default: the cores).
    #[arg(long)]
    tokenize_threads: Option<usize>,
}

#[derive(Args)]
struct ScoreArgs {
    /// Model directory written by the exporter (absa_model.json, model.onnx, tokenizer.json).
    #[arg(long)]
    model: PathBuf,
    /// Corpus: .jsonl, .csv (header row) or .parquet.
    #[arg(long)]
    input: PathBuf,
    /// Predictions: .jsonl or .parquet.
    #[arg(long)]
    output: PathBuf,
    /// Rejected rows with line and reason (JSONL; default: OUTPUT.errors.jsonl).
    #[arg(long)]
    errors: Option<PathBuf>,
    /// Target lexicon, one term per line, for rows without start/end or aspect.
    #[arg(long)]
    targets: Option<PathBuf>,
    /// A stance target to score in every row that names none of its own: one
    /// prediction per row and target, mentioned or not. `NAME` or
    /// `NAME=ALIAS|ALIAS` (words that also mention it). Repeatable.
    #[arg(long = "target", value_name = "NAME[=ALIASES]")]
    named_targets: Vec<String>,
    /// Run the int8 graph.
    #[arg(long)]
    int8: bool,
    /// Instances sorted by length together before batching.
    #[arg(long, default_value_t = 8192)]
    sort_window: usize,
    /// Longer JSONL/CSV lines are rejected.
    #[arg(long, default_value_t = DEFAULT_MAX_LINE_BYTES)]
    max_line_bytes: usize,
    #[arg(long, default_value = "id")]
    id_field: String,
    #[arg(long, default_value = "text")]
    text_field: String,
    #[arg(long, default_value = "aspect")]
    aspect_field: String,
    #[arg(long, default_value = "start")]
    start_field: String,
    #[arg(long, default_value = "end")]
    end_field: String,
    #[arg(long, default_value = "target")]
    target_field: String,
    #[command(flatten)]
    engine: EngineArgs,
}

#[derive(Args)]
struct BenchArgs {
    #[arg(long)]
    model: PathBuf,
    /// Labelled JSONL files repeated up to N instances (default: laptops train + test).
    #[arg(long, num_args = 1..)]
    corpus: Vec<PathBuf>,
    #[arg(long, default_value_t = 20_000)]
    n: usize,
    /// Labelled test set for accuracy (default: laptops test).
    #[arg(long)]
    test: Option<PathBuf>,
    /// Graphs to run.
    #[arg(long, value_delimiter = ',', default_value = "fp32,int8")]
    precisions: Vec<String>,
    /// Instances sorted together (default: all N, the batches hf_score.py builds).
    #[arg(long)]
    sort_window: Option<usize>,
    #[command(flatten)]
    engine: EngineArgs,
}

fn main() -> ExitCode {
    cli::report(run(Cli::parse()))
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let settings: Settings = config::load(cli.config.as_deref())?;
    let _telemetry = telemetry::init("absa-scorer", &settings.log);
    match cli.command {
        Command::Check => {
            let ort = runtime::version()?;
            println!("onnxruntime: {ort}");
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(cli::check_services(&settings.database, &settings.amqp)).context("service check failed")?;
            Ok(())
        }
        Command::Score(args) => score(&settings, args),
        Command::Bench(args) => bench_command(&settings, args),
        Command::Work => {
            runtime::version().context("ONNX Runtime")?;
            let engine = EngineOptions { tokenize_threads: settings.onnx.intra_threads, ..EngineOptions::default() };
            let session = SessionOptions::with_threads(settings.onnx.intra_threads);
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(async {
                absa_platform::metrics::start(absa_platform::metrics::Role::Scorer, &settings.metrics).await?;
                let pool = absa_platform::db::connect(&settings.database).await?;
                let shutdown = absa_store::worker::shutdown_flag();
                let topology = absa_platform::queue::Topology::new(&settings.amqp.prefix, 0);
                let worker = absa_scorer_worker::worker::ScoreWorker::new(pool, settings.worker.clone(), settings.onnx.precision, engine, session, shutdown);
                absa_scorer_worker::worker::run(&settings.amqp, &topology.score, worker).await
            })
        }
    }
}

fn engine_options(settings: &Settings, args: &EngineArgs) -> (EngineOptions, SessionOptions) {
    let mut engine = EngineOptions { batch_size: args.batch_size, ..Default::default() };
    if let Some(t) = args.tokenize_threads {
        engine.tokenize_threads = t;
    }
    let session = SessionOptions::with_threads(args.threads.unwrap_or(settings.onnx.intra_threads));
    (engine, session)
}

fn score(settings: &Settings, args: ScoreArgs) -> anyhow::Result<()> {
    runtime::environment()?; // a missing ONNX Runtime is reported before anything else
    let start = Instant::now();
    let (mut engine_options, session) = engine_options(settings, &args.engine);
    engine_options.sort_window = args.sort_window;
    let names = FieldNames {
        id: args.id_field,
        text: args.text_field,
        aspect: args.aspect_field,
        start: args.start_field,
        end: args.end_field,
        target: args.target_field,
    };
    if !args.named_targets.is_empty() {
        let pairs = args.named_targets.iter().map(|spec| match spec.split_once('=') {
            Some((name, aliases)) => (name.trim().to_owned(), aliases.split('|').map(|a| a.trim().to_owned()).filter(|a| !a.is_empty()).collect()),
            None => (spec.trim().to_owned(), Vec::new()),
        });
        engine_options.named_targets = Some(Arc::new(NamedTargets::new(pairs)?));
    }
    let precision = if args.int8 { Precision::Int8 } else { Precision::Fp32 };
    let mut model = ScoringModel::open(&args.model, precision, &session).with_context(|| format!("opening model {}", args.model.display()))?;
    let lexicon = match &args.targets {
        Some(path) => Some(Arc::new(Lexicon::from_file(path)?)),
        None => None,
    };
    let records = readers::open(&args.input, &ReaderOptions { max_line_bytes: args.max_line_bytes, ..ReaderOptions::default() })?;
    let documents = engine::documents(records, names);
    let errors_path = args.errors.unwrap_or_else(|| {
        let mut p = args.output.clone().into_os_string();
        p.push(".errors.jsonl");
        PathBuf::from(p)
    });
    let sink = output::create(&args.output, &model.labels)?;
    let errors = Box::new(ErrorLog::create(Some(&errors_path))?);

    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::new_spinner();
        bar.set_style(ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}").expect("a valid template"));
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    });
    let mut progress = |s: &ScoreStats| {
        if let Some(bar) = &bar {
            let secs = start.elapsed().as_secs_f64().max(1e-9);
            bar.set_message(format!(
                "rows {} | instances {} ({:.1}/s) | rejected rows {}",
                s.rows_read,
                s.instances_scored,
                s.instances_scored as f64 / secs,
                s.rows_rejected
            ));
        }
    };
    let stats = engine::run(&mut model, documents, lexicon, &engine_options, sink, errors, &mut progress)?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let wall = start.elapsed().as_secs_f64();
    let summary = Summary {
        rows_read: stats.rows_read,
        instances_scored: stats.instances_scored,
        rows_rejected: stats.rows_rejected,
        instances_rejected: stats.instances_rejected,
        rows_without_targets: stats.rows_without_targets,
        instances_windowed: stats.instances_windowed,
        instances_per_second: round(stats.instances_scored as f64 / wall, 1),
        wall_seconds: round(wall, 2),
        peak_rss_mib: round(absa_memory::peak_rss_mib(), 1),
        precision,
        output: args.output,
        errors: errors_path,
    };
    let summary = serde_json::to_string(&summary)?;
    println!("{summary}");
    Ok(())
}

/// The one-line summary `score` prints, in this field order.
#[derive(serde::Serialize)]
struct Summary {
    rows_read: u64,
    instances_scored: u64,
    rows_rejected: u64,
    instances_rejected: u64,
    rows_without_targets: u64,
    instances_windowed: u64,
    instances_per_second: f64,
    wall_seconds: f64,
    peak_rss_mib: f64,
    precision: Precision,
    output: PathBuf,
    errors: PathBuf,
}

fn round(v: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (v * f).round() / f
}

fn bench_command(settings: &Settings, args: BenchArgs) -> anyhow::Result<()> {
    runtime::environment()?;
    let laptops = absa_domain::reference::shared_dir().map_err(anyhow::Error::msg)?.join("data/semeval14_laptops");
    let corpus = if args.corpus.is_empty() { vec![laptops.join("train.jsonl"), laptops.join("test.jsonl")] } else { args.corpus };
    let test = args.test.unwrap_or_else(|| laptops.join("test.jsonl"));
    let (mut engine_options, session) = engine_options(settings, &args.engine);
    engine_options.sort_window = args.sort_window.unwrap_or(args.n);
    let options = BenchOptions { corpus, n: args.n, test: Some(test), engine: engine_options, session, warmup: 2 * args.engine.batch_size };
    let mut results = Vec::new();
    for name in &args.precisions {
        let precision: Precision = serde_json::from_value(json!(name)).with_context(|| format!("unknown precision {name:?} (fp32, int8)"))?;
        let r = bench::run(&args.model, precision, &options)?;
        eprintln!(
            "[{precision}] {:.1} inst/s ({:.1} s for {}), test acc {:.4} macro-F1 {:.4}, load {:.2} -> {:.2}",
            r.inst_per_s,
            r.wall_s,
            r.instances,
            r.test.as_ref().map_or(f64::NAN, |t| t.accuracy),
            r.test.as_ref().map_or(f64::NAN, |t| t.macro_f1),
            r.load_before[0],
            r.load_after[0]
        );
        results.push(r);
    }
    let fp32 = results.iter().find(|r| r.precision == Precision::Fp32);
    let int8 = results.iter().find(|r| r.precision == Precision::Int8);
    let comparison = match (fp32, int8) {
        (Some(f), Some(q)) => {
            let (ft, qt) = (f.test.as_ref(), q.test.as_ref());
            let agreement =
                ft.zip(qt).map(|(a, b)| a.predictions.iter().zip(&b.predictions).filter(|(x, y)| x == y).count() as f64 / a.predictions.len().max(1) as f64);
            json!({
                "int8_speedup": q.inst_per_s / f.inst_per_s,
                "int8_minus_fp32_accuracy": ft.zip(qt).map(|(a, b)| b.accuracy - a.accuracy),
                "int8_minus_fp32_macro_f1": ft.zip(qt).map(|(a, b)| b.macro_f1 - a.macro_f1),
                "prediction_agreement": agreement,
            })
        }
        _ => json!(null),
    };
    let line = json!({
        "command": "absa-scorer bench",
        "model": args.model,
        "n": args.n,
        "batch_size": options.engine.batch_size,
        "sort_window": options.engine.sort_window,
        "intra_threads": options.session.intra_threads,
        "tokenize_threads": options.engine.tokenize_threads,
        "results": results,
        "comparison": comparison,
        "peak_rss_mib": round(absa_memory::peak_rss_mib(), 1),
    });
    println!("{line}");
    Ok(())
}
