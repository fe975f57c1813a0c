//! Benchmarks the job system against the real Postgres and RabbitMQ, in a throwaway
//! database and under a throwaway queue prefix (both removed at the end):
//!
//! 1. predictions write rate through `copy_predictions`: `--rows` rows in batches of
//!    `--batch` (a shard's size), one transaction per batch, as a scorer writes them;
//! 2. submit-to-start latency: with the scheduler loop running (woken by NOTIFY) and a
//!    consumer that claims jobs as a worker would (consume, `jobs::claim`, ack), `--jobs`
//!    jobs are submitted at `--rate` per second; latency is the job's `claimed` event
//!    time minus its `submitted` event time (both Postgres clocks).
//!
//! Prints one line per figure and a JSON summary as the last stdout line.

use std::time::{Duration, Instant};

use absa_platform::config::{AmqpSettings, DatabaseSettings, LogSettings, Secret};
use absa_platform::queue::{Reconnecting, Topology};
use absa_platform::{db, telemetry};
use absa_scheduler::dispatch::{run_until_stopped, Dispatcher};
use absa_store::jobs::{self, NewJob};
use absa_store::predictions::{copy_predictions, PredictionRow};
use clap::Parser;
use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use sqlx::PgPool;
use uuid::Uuid;

/// Measures the predictions write rate and the job submit-to-start latency.
#[derive(Parser)]
#[command(name = "absa-jobs-bench")]
struct Args {
    /// Any existing database on the server; the bench creates and drops its own beside it.
    #[arg(long, env = "ABSA_BENCH_DATABASE_URL", default_value = absa_platform::config::DEFAULT_DATABASE_URL)]
    database_url: String,
    #[arg(long, env = "ABSA_BENCH_AMQP_URL", default_value = absa_platform::config::DEFAULT_AMQP_URL)]
    amqp_url: String,
    /// Prediction rows to write.
    #[arg(long, default_value_t = 1_000_000)]
    rows: usize,
    /// Rows per transaction (a shard's worth).
    #[arg(long, default_value_t = 5000)]
    batch: usize,
    /// Jobs to submit for the latency figures.
    #[arg(long, default_value_t = 1000)]
    jobs: usize,
    /// Submissions per second.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Seconds between scheduler passes when no notification comes (the fallback).
    #[arg(long, default_value_t = 1.0)]
    interval: f64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // sqlx reports the final DROP DATABASE as a slow statement: not news here.
    let _telemetry = telemetry::init("absa-jobs-bench", &LogSettings { filter: "warn,sqlx=error".into(), ..LogSettings::default() });
    let name = format!("absa_bench_{}", Uuid::new_v4().simple());
    let url = db::create_database(&args.database_url, &name).await?;
    let topology = Topology::new(&name, 5);
    let result = bench(&args, &url, &topology).await;
    // Clean up whatever happened.
    if let Err(e) = delete_topology(&args.amqp_url, &topology).await {
        eprintln!("could not delete the bench queues {}.*: {e}", name);
    }
    db::drop_database(&args.database_url, &name).await?;
    let summary = result?;
    println!("{summary}");
    Ok(())
}

async fn bench(args: &Args, url: &str, topology: &Topology) -> anyhow::Result<serde_json::Value> {
    let settings = DatabaseSettings { url: Secret::new(url), max_connections: 4, ..Default::default() };
    let pool = db::connect(&settings).await?;
    db::migrate(&pool).await?;
    let team = Uuid::new_v4();
    sqlx::query("INSERT INTO teams (id, name) VALUES ($1, 'bench')").bind(team).execute(&pool).await?;

    let write = write_rate(&pool, team, args.rows, args.batch.max(1)).await?;
    println!(
        "predictions: {} rows in {:.2} s = {:.0} rows/s ({} transactions of {} rows, median {:.1} ms each)",
        write.rows,
        write.seconds,
        write.rows as f64 / write.seconds,
        write.batches,
        args.batch,
        write.median_batch_ms
    );
    // Leave the latency phase a table of the usual size, not one being vacuumed.
    sqlx::query("TRUNCATE predictions").execute(&pool).await?;

    let latency = start_latency(args, url, &pool, team, topology).await?;
    println!(
        "submit to claim: {} jobs at {}/s: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        args.jobs, args.rate, latency.p50_ms, latency.p99_ms, latency.max_ms
    );
    pool.close().await;
    Ok(serde_json::json!({
        "predictions_rows": write.rows,
        "predictions_seconds": write.seconds,
        "predictions_rows_per_s": write.rows as f64 / write.seconds,
        "predictions_batch": args.batch,
        "latency_jobs": args.jobs,
        "latency_rate_per_s": args.rate,
        "latency_p50_ms": latency.p50_ms,
        "latency_p99_ms": latency.p99_ms,
        "latency_max_ms": latency.max_ms,
    }))
}

struct WriteRate {
    rows: usize,
    seconds: f64,
    batches: usize,
    median_batch_ms: f64,
}

async fn write_rate(pool: &PgPool, team: Uuid, rows: usize, batch: usize) -> anyhow::Result<WriteRate> {
    let (job, corpus, model) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    sqlx::query("INSERT INTO jobs (id, team_id, kind, state) VALUES ($1, $2, 'score', 'running')").bind(job).bind(team).execute(pool).await?;
    sqlx::query("INSERT INTO corpora (id, team_id, name) VALUES ($1, $2, 'bench')").bind(corpus).bind(team).execute(pool).await?;
    sqlx::query("INSERT INTO model_versions (id, team_id, base_model, label_names) VALUES ($1, $2, 'bench', '{negative,neutral,positive}')")
        .bind(model)
        .bind(team)
        .execute(pool)
        .await?;
    let aspects = ["battery life", "screen", "keyboard\ttab", "price", "customer service", "écran", "trackpad"];
    let labels = ["negative", "neutral", "positive"];
    let mut times = Vec::new();
    let mut written = 0usize;
    let mut total = Duration::ZERO;
    while written < rows {
        let n = batch.min(rows - written);
        // Built outside the timed part: a scorer has its rows in memory already.
        let chunk: Vec<PredictionRow> = (written..written + n)
            .map(|i| {
                let p = [(i % 7) as f32 / 10.0, (i % 5) as f32 / 10.0, 0.0];
                let probabilities = vec![p[0], p[1], 1.0 - p[0] - p[1]];
                PredictionRow {
                    job_id: job,
                    corpus_id: corpus,
                    seq: (i / 2) as i64,
                    target_index: (i % 2) as i32,
                    model_version_id: model,
                    aspect: aspects[i % aspects.len()].into(),
                    span_start: Some((i % 40) as i32),
                    span_end: Some((i % 40) as i32 + 6),
                    label: labels[i % 3].into(),
                    confidence: probabilities.iter().copied().fold(0.0, f32::max),
                    probabilities,
                }
            })
            .collect();
        let start = Instant::now();
        let mut tx = pool.begin().await?;
        copy_predictions(&mut tx, &chunk).await?;
        tx.commit().await?;
        let took = start.elapsed();
        total += took;
        times.push(took.as_secs_f64() * 1000.0);
        written += n;
    }
    times.sort_by(f64::total_cmp);
    Ok(WriteRate { rows: written, seconds: total.as_secs_f64(), batches: times.len(), median_batch_ms: times[times.len() / 2] })
}

struct Latency {
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

async fn start_latency(args: &Args, url: &str, pool: &PgPool, team: Uuid, topology: &Topology) -> anyhow::Result<Latency> {
    let amqp_settings = AmqpSettings { url: Secret::new(args.amqp_url.clone()), prefix: String::new() };
    // The scheduler, as `absa-scheduler run` has it, with its own pool.
    let scheduler_pool = db::connect(&DatabaseSettings { url: Secret::new(url), ..Default::default() }).await?;
    let dispatcher = Dispatcher::new(scheduler_pool.clone(), Reconnecting::connect(amqp_settings.clone(), topology.clone()).await?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let scheduler = tokio::spawn(run_until_stopped(dispatcher, url.to_owned(), Duration::from_secs_f64(args.interval), async {
        let _ = stopped.await;
    }));

    // The worker: consume, claim, ack, finish at once.
    let worker_pool = db::connect(&DatabaseSettings { url: Secret::new(url), max_connections: 2, ..Default::default() }).await?;
    let connection = absa_platform::queue::connect(&amqp_settings).await?;
    let channel = connection.create_channel().await?;
    channel.basic_qos(16, BasicQosOptions::default()).await?;
    let mut deliveries =
        channel.basic_consume(topology.train.as_str().into(), "bench-worker".into(), BasicConsumeOptions::default(), FieldTable::default()).await?;
    let expected = args.jobs;
    let worker = tokio::spawn(async move {
        let mut claimed = 0;
        while claimed < expected {
            let Some(delivery) = deliveries.next().await else { anyhow::bail!("the consumer stream ended") };
            let delivery = delivery?;
            let message: serde_json::Value = serde_json::from_slice(&delivery.data)?;
            let id: Uuid = message["job_id"].as_str().unwrap_or_default().parse()?;
            if jobs::claim(&worker_pool, id, "bench-worker", 30.0).await?.is_some() {
                delivery.ack(BasicAckOptions::default()).await?;
                let mut tx = worker_pool.begin().await?;
                jobs::complete(&mut *tx, id, "bench-worker").await??;
                tx.commit().await?;
                claimed += 1;
            } else {
                delivery.ack(BasicAckOptions::default()).await?;
            }
        }
        anyhow::Ok(())
    });
    tokio::time::sleep(Duration::from_millis(500)).await; // leading and listening

    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for _ in 0..args.jobs {
        ticker.tick().await;
        let job = NewJob {
            team_id: team,
            kind: absa_jobs::JobKind::Train,
            priority: 0,
            parameters: serde_json::json!({}),
            max_attempts: 3,
            idempotency_key: None,
            parent_id: None,
            request_hash: None,
            tags: serde_json::Value::Null,
        };
        jobs::submit(pool, &job).await?;
    }
    tokio::time::timeout(Duration::from_secs(120), worker).await.map_err(|_| anyhow::anyhow!("jobs still unclaimed after 120 s"))???;
    let _ = stop.send(());
    scheduler.await??;
    connection.close(200, "bench done".into()).await?;
    scheduler_pool.close().await;

    let (p50, p99, max): (f64, f64, f64) = sqlx::query_as(
        "WITH l AS (
             SELECT (extract(epoch FROM c.at - s.at) * 1000)::float8 AS ms
             FROM job_events s JOIN job_events c ON c.job_id = s.job_id AND c.kind = 'claimed'
             WHERE s.kind = 'submitted')
         SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms), percentile_cont(0.99) WITHIN GROUP (ORDER BY ms), max(ms) FROM l",
    )
    .fetch_one(pool)
    .await?;
    Ok(Latency { p50_ms: p50, p99_ms: p99, max_ms: max })
}

async fn delete_topology(amqp_url: &str, topology: &Topology) -> anyhow::Result<()> {
    let connection = absa_platform::queue::connect(&AmqpSettings { url: Secret::new(amqp_url), prefix: String::new() }).await?;
    let channel = connection.create_channel().await?;
    topology.delete(&channel).await?;
    connection.close(200, "bench done".into()).await?;
    Ok(())
}
