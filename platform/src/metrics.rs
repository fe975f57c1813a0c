//! Prometheus metrics of this process, with the maintained `prometheus-client`: one
//! registry per process, `/metrics` (OpenMetrics text), `/healthz` and `/readyz` on the
//! port of `[metrics] bind`.
//!
//! Every process exports `absa_build_info`; [`install`] adds the families of its role.
//! Counters end in `_total` (the client appends it) so that `rate()` works on them;
//! durations are histograms in seconds. Figures of one job (its loss, its throughput)
//! go to the job's own metrics in Postgres, not here.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{LazyLock, Mutex, OnceLock};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use serde::Deserialize;

/// `[metrics]`: where this process serves `/metrics`, `/healthz` and `/readyz`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct MetricsSettings {
    /// `host:port` (`0.0.0.0:9090` in the chart); unset: no metrics server.
    pub bind: Option<String>,
}

/// Label sets are plain name/value pairs.
pub type Labels = Vec<(&'static str, String)>;

/// The roles whose families a process registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Api,
    Scheduler,
    Scorer,
    Trainer,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Api => "api",
            Role::Scheduler => "scheduler",
            Role::Scorer => "scorer",
            Role::Trainer => "trainer",
        }
    }
}

fn seconds_histogram() -> Histogram {
    // 5 ms to about 11 hours: request latencies up to training runs.
    Histogram::new(exponential_buckets(0.005, 2.5, 16))
}

/// What a worker (trainer or scorer) does with the messages of its queues.
pub struct WorkerMetrics {
    /// Messages by queue and what came of them: `claimed`, `not_claimable` (a
    /// duplicate, or finished elsewhere), `claim_failed` (Postgres away, requeued),
    /// `unreadable` (dead-lettered).
    pub messages: Family<Labels, Counter>,
    /// From a job's submission to its claim, by kind.
    pub queue_wait_seconds: Family<Labels, Histogram, fn() -> Histogram>,
    /// From claim to the end of the run, by queue.
    pub job_run_seconds: Family<Labels, Histogram, fn() -> Histogram>,
    /// Jobs this worker ended, by kind and outcome (`succeeded`, `failed`, `released`, `lost`).
    pub jobs_finished: Family<Labels, Counter>,
}

/// The scorer's throughput.
pub struct ScorerMetrics {
    /// Documents read from the shards this process committed.
    pub documents: Counter,
    /// Predictions written.
    pub predictions: Counter,
    /// Rows refused with a reason (stored as row errors).
    pub rows_rejected: Counter,
    /// One model call on one batch.
    pub batch_seconds: Histogram,
}

/// The trainer's steps.
pub struct TrainerMetrics {
    /// One optimiser step (forward, backward, update) as the worker sees it.
    pub step_seconds: Histogram,
    pub steps: Counter,
    /// Training examples those steps took (`rate()` of it is samples per second).
    pub samples: Counter,
    pub epochs: Counter,
}

/// The scheduler's view of the queues and the workers.
pub struct SchedulerMetrics {
    /// Jobs published to a work queue, by kind.
    pub dispatched: Family<Labels, Counter>,
    /// Ready messages per queue, dead-letter queues included.
    pub queue_depth: Family<Labels, Gauge>,
    /// Workers advertising themselves, by role.
    pub live_workers: Family<Labels, Gauge>,
    /// GPUs those workers offer.
    pub live_gpus: Gauge,
    /// 1 on the replica holding the leader lock.
    pub leader: Gauge,
    /// Jobs by kind and state, from Postgres (sampled by the leader only, so a
    /// service-wide figure comes from one process).
    pub jobs: Family<Labels, Gauge>,
    /// Rows of the predictions table (Postgres' live-tuple estimate), by the leader.
    pub predictions_rows: Gauge,
}

/// Events appended to a job's log by this process, by kind.
pub struct JobEventMetrics {
    pub events: Family<Labels, Counter>,
}

/// The API's requests.
pub struct ApiMetrics {
    /// Request latency by route template, method and status (its `_count` counts
    /// the requests).
    pub request_seconds: Family<Labels, Histogram, fn() -> Histogram>,
    /// Jobs submitted through this process, by kind.
    pub jobs_submitted: Family<Labels, Counter>,
    /// Bytes and rows of accepted uploads.
    pub upload_bytes: Counter,
    pub upload_rows: Counter,
}

pub static WORKER: LazyLock<WorkerMetrics> = LazyLock::new(|| WorkerMetrics {
    messages: Family::default(),
    queue_wait_seconds: Family::new_with_constructor(seconds_histogram),
    job_run_seconds: Family::new_with_constructor(seconds_histogram),
    jobs_finished: Family::default(),
});

pub static SCORER: LazyLock<ScorerMetrics> = LazyLock::new(|| ScorerMetrics {
    documents: Counter::default(),
    predictions: Counter::default(),
    rows_rejected: Counter::default(),
    batch_seconds: seconds_histogram(),
});

pub static TRAINER: LazyLock<TrainerMetrics> =
    LazyLock::new(|| TrainerMetrics { step_seconds: seconds_histogram(), steps: Counter::default(), samples: Counter::default(), epochs: Counter::default() });

pub static SCHEDULER: LazyLock<SchedulerMetrics> = LazyLock::new(|| SchedulerMetrics {
    dispatched: Family::default(),
    queue_depth: Family::default(),
    live_workers: Family::default(),
    live_gpus: Gauge::default(),
    leader: Gauge::default(),
    jobs: Family::default(),
    predictions_rows: Gauge::default(),
});

impl SchedulerMetrics {
    /// A replica that stops leading stops reporting the leader's samples (another
    /// replica reports them now): the gauges go, `leader` reads 0.
    pub fn forget_leader_samples(&self) {
        self.leader.set(0);
        self.jobs.clear();
        self.queue_depth.clear();
        self.live_workers.clear();
        self.live_gpus.set(0);
        self.predictions_rows.set(0);
    }
}

pub static JOB_EVENTS: LazyLock<JobEventMetrics> = LazyLock::new(|| JobEventMetrics { events: Family::default() });

pub static API: LazyLock<ApiMetrics> = LazyLock::new(|| ApiMetrics {
    request_seconds: Family::new_with_constructor(seconds_histogram),
    jobs_submitted: Family::default(),
    upload_bytes: Counter::default(),
    upload_rows: Counter::default(),
});

static REGISTRY: OnceLock<Mutex<Registry>> = OnceLock::new();
static READY: AtomicBool = AtomicBool::new(false);

/// Registers `absa_build_info` and `role`'s families (once per process; later calls
/// are no-ops).
pub fn install(role: Role) {
    REGISTRY.get_or_init(|| {
        let mut r = Registry::default();
        let info: Family<Labels, Gauge> = Family::default();
        info.get_or_create(&vec![("version", env!("CARGO_PKG_VERSION").to_owned()), ("role", role.name().to_owned())]).set(1);
        r.register("absa_build_info", "The running build: version and role (value 1).", info);
        r.register("absa_job_events", "Events this process appended to jobs' logs, by kind.", JOB_EVENTS.events.clone());
        match role {
            Role::Api => {
                let a = &*API;
                r.register("absa_api_request_duration_seconds", "HTTP request latency by route, method and status.", a.request_seconds.clone());
                r.register("absa_api_jobs_submitted", "Jobs submitted through this API process, by kind.", a.jobs_submitted.clone());
                r.register("absa_api_upload_bytes", "Bytes of accepted uploads.", a.upload_bytes.clone());
                r.register("absa_api_upload_rows", "Rows stored from uploads.", a.upload_rows.clone());
            }
            Role::Scheduler => {
                let s = &*SCHEDULER;
                r.register("absa_scheduler_jobs_dispatched", "Jobs published to a work queue, by kind.", s.dispatched.clone());
                r.register("absa_queue_depth_messages", "Ready messages per RabbitMQ queue, dead-letter queues included.", s.queue_depth.clone());
                r.register("absa_live_workers", "Workers advertising themselves, by role.", s.live_workers.clone());
                r.register("absa_live_gpus", "GPUs the live trainers offer.", s.live_gpus.clone());
                r.register("absa_scheduler_leader", "1 on the scheduler replica that leads.", s.leader.clone());
                r.register("absa_jobs", "Jobs by kind and state (score_shard: one shard of a scoring job); served by the leader.", s.jobs.clone());
                r.register("absa_predictions_rows", "Rows in the predictions table (Postgres' estimate); served by the leader.", s.predictions_rows.clone());
            }
            Role::Scorer | Role::Trainer => {
                let w = &*WORKER;
                r.register("absa_worker_messages", "Work-queue messages by queue and outcome.", w.messages.clone());
                r.register("absa_job_queue_wait_seconds", "Seconds from a job's submission to its claim, by kind.", w.queue_wait_seconds.clone());
                r.register("absa_job_run_seconds", "Seconds from claim to the end of a job's run, by queue.", w.job_run_seconds.clone());
                r.register("absa_worker_jobs_finished", "Jobs this worker ended, by kind and outcome.", w.jobs_finished.clone());
                if role == Role::Scorer {
                    let s = &*SCORER;
                    r.register("absa_scorer_documents", "Documents of committed shards.", s.documents.clone());
                    r.register("absa_scorer_predictions", "Predictions written.", s.predictions.clone());
                    r.register("absa_scorer_rows_rejected", "Rows refused with a reason.", s.rows_rejected.clone());
                    r.register("absa_scorer_batch_duration_seconds", "Seconds of one model call on one batch.", s.batch_seconds.clone());
                } else {
                    let t = &*TRAINER;
                    r.register("absa_trainer_step_duration_seconds", "Seconds of one optimiser step.", t.step_seconds.clone());
                    r.register("absa_trainer_steps", "Optimiser steps taken.", t.steps.clone());
                    r.register("absa_trainer_samples", "Training examples those steps took.", t.samples.clone());
                    r.register("absa_trainer_epochs", "Epochs completed.", t.epochs.clone());
                }
            }
        }
        Mutex::new(r)
    });
}

/// The OpenMetrics text of this process's registry (empty before [`install`]).
pub fn render() -> String {
    let mut out = String::new();
    if let Some(registry) = REGISTRY.get() {
        let registry = registry.lock().unwrap_or_else(|e| e.into_inner());
        encode(&mut out, &registry).expect("writing to a String cannot fail");
    }
    out
}

/// The content type of [`render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Whether `/readyz` answers 200: a worker is ready while it consumes its queues, the
/// scheduler once it runs.
pub fn set_ready(ready: bool) {
    READY.store(ready, Ordering::Relaxed);
}

pub fn ready() -> bool {
    READY.load(Ordering::Relaxed)
}

/// Serves `/metrics`, `/healthz` (the process answers) and `/readyz` ([`ready`]) on
/// `bind` in the background; returns the bound address (port 0 picks a free one).
pub async fn serve(bind: &str) -> anyhow::Result<SocketAddr> {
    use axum::http::{header, StatusCode};
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind(bind).await.map_err(|e| anyhow::anyhow!("metrics.bind {bind}: {e}"))?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new()
        .route("/metrics", get(|| async { ([(header::CONTENT_TYPE, CONTENT_TYPE)], render()) }))
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|| async {
                if ready() {
                    (StatusCode::OK, "ready")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "not ready")
                }
            }),
        );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the metrics server stopped");
        }
    });
    tracing::info!(%addr, "metrics, health and readiness served");
    Ok(addr)
}

/// [`install`], then [`serve`] when `settings.bind` is set.
pub async fn start(role: Role, settings: &MetricsSettings) -> anyhow::Result<Option<SocketAddr>> {
    install(role);
    match &settings.bind {
        Some(bind) => Ok(Some(serve(bind).await?)),
        None => Ok(None),
    }
}

/// Counts `n` events of `kind` appended to jobs' logs.
pub fn job_events(kind: &str, n: u64) {
    JOB_EVENTS.events.get_or_create(&labels(&[("kind", kind)])).inc_by(n);
}

/// A label set from pairs.
pub fn labels(pairs: &[(&'static str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
}
