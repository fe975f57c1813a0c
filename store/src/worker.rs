//! The worker side of the job system, shared by the trainer and the scorer: consume
//! notifications from a work queue, claim the job in Postgres, acknowledge, run it
//! under a lease kept alive by heartbeats, and survive broker restarts.
//!
//! The message is acknowledged as soon as the claim is committed, not when the work
//! ends: training outlasts RabbitMQ's consumer timeout, and from the claim on the
//! lease in Postgres (not the unacked message) is what brings the job back if this
//! worker dies.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::FieldTable;
use sqlx::PgPool;
use tokio::sync::watch;
use uuid::Uuid;

use crate::jobs::{self, LeaseLost};
use crate::Result;
use absa_platform::config::AmqpSettings;
use absa_platform::{metrics, queue};

/// Reconnection waits start here and double up to [`RECONNECT_MAX`].
const RECONNECT_MIN: Duration = Duration::from_millis(500);
const RECONNECT_MAX: Duration = Duration::from_secs(10);

/// What every worker is configured with (the `[worker]` table).
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(default)]
pub struct WorkerSettings {
    /// Seconds a claim holds without a heartbeat; heartbeats come every third of it.
    pub lease_secs: f64,
    /// Scratch space for the running job (deleted when it ends).
    pub work_dir: PathBuf,
    /// Artifacts fetched from the store, kept by content hash.
    pub cache_dir: PathBuf,
    /// Where new artifacts go: unset stores them in Postgres; a folder (a mounted
    /// volume shared by all workers) is for checkpoints too big for the database.
    pub artifacts_dir: Option<PathBuf>,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        let base = std::env::temp_dir().join("absa-worker");
        Self { lease_secs: 60.0, work_dir: base.join("work"), cache_dir: base.join("cache"), artifacts_dir: None }
    }
}

impl WorkerSettings {
    pub fn backend(&self) -> crate::artifacts::Backend {
        match &self.artifacts_dir {
            Some(dir) => crate::artifacts::Backend::Filesystem(dir.clone()),
            None => crate::artifacts::Backend::Postgres,
        }
    }
}

/// A name unique to this process, recorded as the lease owner.
pub fn worker_name(role: &str) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()).unwrap_or_else(|_| "host".into());
    format!("{role}-{host}-{}-{}", std::process::id(), &Uuid::new_v4().simple().to_string()[..8])
}

/// A flag that turns true on SIGTERM/SIGINT; workers check it between units of work.
pub fn shutdown_flag() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        absa_platform::cli::shutdown_signal().await;
        tracing::info!("shutdown requested: finishing or releasing the current job");
        let _ = tx.send(true);
    });
    rx
}

/// What a worker does with the jobs its queue announces.
#[allow(async_fn_in_trait)]
pub trait JobHandler {
    /// What a successful claim hands to [`JobHandler::run`].
    type Claim;
    /// Claims job `id` in Postgres; `None` when it is not (or no longer) waiting: a
    /// duplicate or stale message.
    async fn claim(&mut self, id: Uuid) -> Result<Option<Self::Claim>>;
    /// Runs a claimed job to its end: completed, failed, released or lost.
    async fn run(&mut self, claim: Self::Claim);
}

#[derive(serde::Deserialize)]
struct Notification {
    job_id: Uuid,
}

/// Consumes `queues` (one, or a trainer's several) one message at a time until
/// `shutdown` turns true, reconnecting with backoff whenever the broker goes away. The
/// scheduler declares the queues (it owns their arguments); until it has, consuming
/// fails and is retried the same way.
pub async fn consume<H: JobHandler>(amqp: &AmqpSettings, queues: &[String], handler: &mut H, mut shutdown: watch::Receiver<bool>) -> Result<()> {
    let mut wait = RECONNECT_MIN;
    while !*shutdown.borrow() {
        match consume_connection(amqp, queues, handler, &mut shutdown, &mut wait).await {
            Ok(()) => return Ok(()),
            Err(e) => tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "RabbitMQ connection lost; reconnecting"),
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => {}
        }
        wait = (wait * 2).min(RECONNECT_MAX);
    }
    Ok(())
}

/// One connection's worth of consuming: `Ok` on shutdown, `Err` when the connection
/// failed (the caller reconnects).
async fn consume_connection<H: JobHandler>(
    amqp: &AmqpSettings,
    queues: &[String],
    handler: &mut H,
    shutdown: &mut watch::Receiver<bool>,
    wait: &mut Duration,
) -> Result<()> {
    let connection = queue::connect(amqp).await?;
    let channel = connection.create_channel().await?;
    // One message at a time per queue: a worker runs one job, and a message waiting in
    // a busy worker's buffer is a job another worker could be running (the scheduler
    // sends a job again when nobody claims it for a while).
    channel.basic_qos(1, BasicQosOptions::default()).await?;
    let mut consumers = Vec::with_capacity(queues.len());
    for queue in queues {
        consumers.push(channel.basic_consume(queue.as_str().into(), "".into(), BasicConsumeOptions::default(), FieldTable::default()).await?);
    }
    let mut consumer = futures_util::stream::select_all(consumers);
    tracing::info!(?queues, "consuming");
    *wait = RECONNECT_MIN;
    // Ready (`/readyz`) while consuming; a lost connection clears it until the next one.
    metrics::set_ready(true);
    let _not_ready_on_exit = NotReadyOnDrop;
    loop {
        let delivery = tokio::select! {
            _ = shutdown.changed() => {
                let _ = connection.close(200, "shutting down".into()).await;
                return Ok(());
            }
            next = consumer.next() => next,
        };
        let delivery = match delivery {
            Some(d) => d?,
            None => return Err(crate::PlatformError::ConsumerClosed(queues.join(", "))),
        };
        let queue = delivery.routing_key.as_str().to_owned();
        let outcome = |what: &str| metrics::WORKER.messages.get_or_create(&metrics::labels(&[("queue", &queue), ("outcome", what)])).inc();
        let Ok(Notification { job_id }) = serde_json::from_slice(&delivery.data) else {
            tracing::error!(payload = %String::from_utf8_lossy(&delivery.data), "unreadable message: dead-lettered");
            outcome("unreadable");
            delivery.nack(BasicNackOptions { requeue: false, ..Default::default() }).await?;
            continue;
        };
        match handler.claim(job_id).await {
            Ok(Some(claim)) => {
                outcome("claimed");
                delivery.ack(BasicAckOptions::default()).await?;
                let started = std::time::Instant::now();
                handler.run(claim).await;
                metrics::WORKER.job_run_seconds.get_or_create(&metrics::labels(&[("queue", &queue)])).observe(started.elapsed().as_secs_f64());
            }
            Ok(None) => {
                tracing::debug!(%job_id, "not claimable (duplicate, running elsewhere, finished or cancelled)");
                outcome("not_claimable");
                delivery.ack(BasicAckOptions::default()).await?;
            }
            Err(e) => {
                // Postgres unreachable: leave the message for later (or another worker).
                tracing::warn!(%job_id, error = %e, "claim failed; message requeued");
                outcome("claim_failed");
                delivery.nack(BasicNackOptions { requeue: true, ..Default::default() }).await?;
                tokio::time::sleep(RECONNECT_MIN).await;
            }
        }
        if *shutdown.borrow() {
            let _ = connection.close(200, "shutting down".into()).await;
            return Ok(());
        }
    }
}

/// Clears readiness when a connection's consuming ends, however it ends.
struct NotReadyOnDrop;

impl Drop for NotReadyOnDrop {
    fn drop(&mut self) {
        metrics::set_ready(false);
    }
}

/// Counts a job this worker ended (`succeeded`, `failed`, `released`, `lost`) in
/// `absa_worker_jobs_finished_total`.
pub fn count_finished(kind: &str, outcome: &str) {
    metrics::WORKER.jobs_finished.get_or_create(&metrics::labels(&[("kind", kind), ("outcome", outcome)])).inc();
}

/// A held lease, kept alive in the background: heartbeats every third of the lease
/// carry the latest progress; a lost lease (cancelled, or expired and taken over)
/// raises [`Lease::lost`] for the work to stop at its next check.
pub struct Lease {
    progress: Arc<AtomicU64>,
    lost: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Lease {
    pub fn keep(pool: PgPool, job_id: Uuid, worker: String, lease_secs: f64) -> Self {
        let progress = Arc::new(AtomicU64::new(0f64.to_bits()));
        let lost = Arc::new(AtomicBool::new(false));
        let (p, l) = (progress.clone(), lost.clone());
        let task = tokio::spawn(async move {
            let every = Duration::from_secs_f64((lease_secs / 3.0).max(0.2));
            loop {
                tokio::time::sleep(every).await;
                let progress = f64::from_bits(p.load(Ordering::Relaxed));
                match jobs::heartbeat(&pool, job_id, &worker, lease_secs, progress).await {
                    Ok(Ok(())) => {}
                    Ok(Err(LeaseLost(_))) => {
                        tracing::warn!(%job_id, "lease lost (cancelled or taken over): stopping");
                        l.store(true, Ordering::Relaxed);
                        return;
                    }
                    // Postgres briefly away: the lease may still hold; try again.
                    Err(e) => tracing::warn!(%job_id, error = %e, "heartbeat failed"),
                }
            }
        });
        Self { progress, lost, task }
    }

    /// A handle the (blocking) work updates and checks.
    pub fn handle(&self) -> LeaseHandle {
        LeaseHandle { progress: self.progress.clone(), lost: self.lost.clone() }
    }

    pub fn lost(&self) -> bool {
        self.lost.load(Ordering::Relaxed)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Progress in, loss of the lease out; cheap to clone into the work's thread.
#[derive(Clone)]
pub struct LeaseHandle {
    progress: Arc<AtomicU64>,
    lost: Arc<AtomicBool>,
}

impl LeaseHandle {
    pub fn set_progress(&self, fraction: f64) {
        self.progress.store(fraction.clamp(0.0, 1.0).to_bits(), Ordering::Relaxed);
    }
    pub fn lost(&self) -> bool {
        self.lost.load(Ordering::Relaxed)
    }
}

/// An error no retry can fix (bad parameters, data or model that does not exist):
/// [`record_failure`] fails the job at once instead of re-queueing it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Permanent(pub String);

/// Records a failed attempt: at once and for good for a [`Permanent`] error, else
/// re-queued with backoff while attempts remain ([`jobs::fail`]).
pub async fn record_failure(pool: &PgPool, id: Uuid, worker: &str, error: &anyhow::Error) -> Result<()> {
    let message = format!("{error:#}");
    tracing::error!(job_id = %id, error = %message, "job failed");
    if error.is::<Permanent>() {
        jobs::fail_permanently(pool, id, worker, &message).await.map(drop)
    } else {
        jobs::fail(pool, id, worker, &message).await.map(drop)
    }
}
