//! `GET /metrics` in the Prometheus text format: counters kept by this process
//! (requests, uploads, submissions) and gauges read from Postgres at scrape time (jobs
//! by kind and state, queue depth, shard throughput, scoring instances/s, training
//! samples/s and epoch time, lease expiries, retries, promotions, predictions). The
//! gauges are computed at most once per `api.metrics_cache_secs` whatever the scrape
//! rate (concurrent scrapes wait for one refresh), and `/metrics` can require a key
//! (`api.metrics_key`).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sqlx::PgPool;

/// Counters of this API process, and the last gauges read from Postgres.
#[derive(Default)]
pub struct ApiMetrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    submitted: Mutex<BTreeMap<String, u64>>,
    upload_bytes: AtomicU64,
    upload_rows: AtomicU64,
    gauges: tokio::sync::Mutex<Option<(Instant, String)>>,
}

impl ApiMetrics {
    pub fn request(&self, route: &str, status: u16) {
        *self.requests.lock().unwrap_or_else(|e| e.into_inner()).entry((route.to_owned(), status)).or_default() += 1;
    }

    pub fn submitted(&self, kind: &str) {
        *self.submitted.lock().unwrap_or_else(|e| e.into_inner()).entry(kind.to_owned()).or_default() += 1;
    }

    pub fn upload(&self, bytes: u64, rows: u64) {
        self.upload_bytes.fetch_add(bytes, Ordering::Relaxed);
        self.upload_rows.fetch_add(rows, Ordering::Relaxed);
    }

    /// The exposition text: these counters, then the service-wide gauges from Postgres
    /// (read again only when the cached ones are older than `max_age`).
    pub async fn render(&self, pool: &PgPool, max_age: Duration) -> Result<String, sqlx::Error> {
        let mut out = self.counters();
        let mut cached = self.gauges.lock().await;
        match &*cached {
            Some((at, text)) if at.elapsed() < max_age => out.push_str(text),
            _ => {
                let text = gauges(pool).await?;
                out.push_str(&text);
                *cached = Some((Instant::now(), text));
            }
        }
        Ok(out)
    }

    fn counters(&self) -> String {
        let mut out = String::new();
        macro_rules! header {
            ($name:expr, $kind:expr, $help:expr) => {
                let _ = writeln!(out, "# HELP {} {}\n# TYPE {} {}", $name, $help, $name, $kind);
            };
        }
        header!("absa_api_requests_total", "counter", "HTTP requests by route and status.");
        for ((route, status), n) in self.requests.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(out, "absa_api_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}");
        }
        header!("absa_api_jobs_submitted_total", "counter", "Jobs submitted through this API process, by kind.");
        for (kind, n) in self.submitted.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(out, "absa_api_jobs_submitted_total{{kind=\"{kind}\"}} {n}");
        }
        header!("absa_api_upload_bytes_total", "counter", "Bytes of accepted uploads.");
        let _ = writeln!(out, "absa_api_upload_bytes_total {}", self.upload_bytes.load(Ordering::Relaxed));
        header!("absa_api_upload_rows_total", "counter", "Rows stored from uploads.");
        let _ = writeln!(out, "absa_api_upload_rows_total {}", self.upload_rows.load(Ordering::Relaxed));
        out
    }
}

/// The service-wide gauges, from about nine aggregate queries.
async fn gauges(pool: &PgPool) -> Result<String, sqlx::Error> {
    let mut out = String::new();
    macro_rules! header {
        ($name:expr, $kind:expr, $help:expr) => {
            let _ = writeln!(out, "# HELP {} {}\n# TYPE {} {}", $name, $help, $name, $kind);
        };
    }
    let jobs: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT kind, state, count(*) FROM jobs GROUP BY kind, state ORDER BY kind, state").fetch_all(pool).await?;
    header!("absa_jobs", "gauge", "Jobs by kind and state (score_shard = one shard of a scoring job).");
    for (kind, state, n) in jobs {
        let _ = writeln!(out, "absa_jobs{{kind=\"{kind}\",state=\"{state}\"}} {n}");
    }
    let queued: Vec<(String, i64)> = sqlx::query_as(
        "SELECT kind, count(*) FROM jobs WHERE state IN ('queued', 'dispatched') AND kind IN ('train', 'score_shard') GROUP BY kind ORDER BY kind",
    )
    .fetch_all(pool)
    .await?;
    header!("absa_queue_depth", "gauge", "Work waiting for a worker: queued or dispatched but not yet claimed.");
    for (kind, n) in queued {
        let queue = if kind == "train" { "train" } else { "score" };
        let _ = writeln!(out, "absa_queue_depth{{queue=\"{queue}\"}} {n}");
    }
    let events: Vec<(String, i64)> = sqlx::query_as(
            "SELECT kind, count(*) FROM job_events WHERE kind IN ('lease_expired', 'attempt_failed', 'resumed', 'retrain_fired', 'promoted', 'promotion_refused') GROUP BY kind ORDER BY kind",
        )
        .fetch_all(pool)
        .await?;
    header!("absa_job_events_total", "counter", "Lease expiries, failed attempts (retries), resumes, retrains and promotions.");
    for (kind, n) in events {
        let _ = writeln!(out, "absa_job_events_total{{kind=\"{kind}\"}} {n}");
    }
    let predictions: i64 =
        sqlx::query_scalar("SELECT coalesce(sum(n_live_tup), 0)::bigint FROM pg_stat_user_tables WHERE relname = 'predictions'").fetch_one(pool).await?;
    header!("absa_predictions_rows", "gauge", "Rows in the predictions table (Postgres' live-tuple estimate).");
    let _ = writeln!(out, "absa_predictions_rows {predictions}");
    let scored: f64 = sqlx::query_scalar(
        "SELECT coalesce(sum((detail->>'predictions')::double precision), 0) FROM job_events WHERE kind = 'scored' AND at > now() - interval '5 minutes'",
    )
    .fetch_one(pool)
    .await?;
    header!("absa_scoring_instances_per_second", "gauge", "Instances scored per second, averaged over the last 5 minutes of finished shards.");
    let _ = writeln!(out, "absa_scoring_instances_per_second {}", scored / 300.0);
    let shards: i64 = sqlx::query_scalar("SELECT count(*) FROM job_events WHERE kind = 'scored' AND at > now() - interval '5 minutes'").fetch_one(pool).await?;
    header!("absa_shards_scored_5m", "gauge", "Scoring shards finished in the last 5 minutes.");
    let _ = writeln!(out, "absa_shards_scored_5m {shards}");
    // The training speed of the most recent epoch (any job): samples/s and seconds.
    let speed: Option<(Option<f64>, Option<f64>)> = sqlx::query_as(
        "SELECT (detail->>'train_samples_per_second')::double precision, (detail->>'train_seconds')::double precision
             FROM training_metrics ORDER BY recorded_at DESC LIMIT 1",
    )
    .fetch_optional(pool)
    .await?;
    if let Some((Some(samples), Some(seconds))) = speed {
        header!("absa_training_samples_per_second", "gauge", "Training samples per second in the most recent epoch.");
        let _ = writeln!(out, "absa_training_samples_per_second {samples}");
        header!("absa_training_epoch_seconds", "gauge", "Seconds the most recent training epoch took.");
        let _ = writeln!(out, "absa_training_epoch_seconds {seconds}");
    }
    let epochs: i64 = sqlx::query_scalar("SELECT count(*) FROM training_metrics").fetch_one(pool).await?;
    header!("absa_training_epochs_total", "counter", "Training epochs recorded.");
    let _ = writeln!(out, "absa_training_epochs_total {epochs}");
    Ok(out)
}
