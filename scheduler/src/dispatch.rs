//! One scheduler pass: re-queue jobs whose lease expired (and dispatched jobs nobody
//! claimed for a while), fan queued scoring jobs out
//! into shards, settle parents whose shards finished, then publish queued jobs
//! (highest priority first) to their work queue. Only the leader (holder of a Postgres
//! advisory lock) runs passes, so several replicas are safe.
//!
//! The loop runs a pass as soon as a job is submitted (Postgres NOTIFY on
//! [`jobs::NOTIFY_CHANNEL`]) or when its interval runs out, whichever comes first.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use absa_jobs::JobStatus;
use absa_platform::metrics;
use absa_platform::queue::{publish_confirmed, Reconnecting, Topology};
use absa_store::jobs::{self, shards, sweeps};
use absa_store::webhooks::WebhookSettings;
use absa_store::{retrains, workers};
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use sqlx::postgres::{PgConnection, PgListener};
use sqlx::{Connection, PgPool};
use tokio::sync::{Mutex, MutexGuard, Notify};

/// How often the leader samples queue depths and live workers for its gauges.
const OBSERVE_EVERY: Duration = Duration::from_secs(5);

/// Arbitrary, fixed: the advisory lock that makes one scheduler the leader.
const LEADER_LOCK_KEY: i64 = 0x4142_5341_5343_4844; // "ABSASCHD"

/// What one pass did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PassReport {
    pub requeued: usize,
    /// `score` jobs fanned out into shards (or rejected for bad parameters).
    pub fanned_out: usize,
    /// `score` jobs finished because their shards did.
    pub settled: usize,
    pub dispatched: usize,
    /// Training jobs submitted by retrain schedules.
    pub retrains_fired: usize,
}

pub struct Dispatcher {
    pool: PgPool,
    /// Survives broker restarts: a pass that finds the connection dead reconnects
    /// (with backoff) and redeclares the queues.
    amqp: Mutex<Reconnecting>,
    topology: Topology,
    batch: i64,
    shard_size: i64,
    redispatch_after_secs: f64,
    quotas: jobs::TeamQuotas,
    /// Job kinds the `absa_jobs` gauge has shown: a kind whose jobs are all gone
    /// reads 0 in every state rather than its last counts.
    kinds_shown: std::sync::Mutex<BTreeSet<String>>,
    webhooks: WebhookSettings,
}

impl Dispatcher {
    pub fn new(pool: PgPool, amqp: Reconnecting) -> Self {
        let topology = amqp.topology().clone();
        Self {
            pool,
            amqp: Mutex::new(amqp),
            topology,
            batch: 100,
            shard_size: 5000,
            redispatch_after_secs: 30.0,
            quotas: jobs::TeamQuotas::default(),
            kinds_shown: Default::default(),
            webhooks: WebhookSettings::default(),
        }
    }

    /// Documents per shard for `score` jobs that do not say (`shard_size` parameter).
    pub fn with_shard_size(mut self, shard_size: i64) -> Self {
        self.shard_size = shard_size.max(1);
        self
    }

    /// How much of the workers one team may hold at once.
    pub fn with_quotas(mut self, quotas: jobs::TeamQuotas) -> Self {
        self.quotas = quotas;
        self
    }

    /// How webhook deliveries are retried and timed out.
    pub fn with_webhooks(mut self, webhooks: WebhookSettings) -> Self {
        self.webhooks = webhooks;
        self
    }

    /// Seconds a dispatched job may stay unclaimed before its message is sent again.
    pub fn with_redispatch_after(mut self, secs: f64) -> Self {
        self.redispatch_after_secs = secs.max(0.0);
        self
    }

    /// The broker connection (tests close it to check reconnection).
    pub async fn amqp(&self) -> MutexGuard<'_, Reconnecting> {
        self.amqp.lock().await
    }

    /// Fires due retrain schedules, advances sweeps, reaps expired leases, fans out and
    /// settles scoring jobs, then dispatches until nothing dispatchable is left. The
    /// Postgres steps run even while the broker is down; only dispatching waits for it.
    pub async fn pass(&self) -> anyhow::Result<PassReport> {
        let retrains = retrains::fire_due(&self.pool).await?;
        for fired in &retrains {
            tracing::info!(schedule_id = %fired.schedule_id, job_id = %fired.job_id, reason = fired.reason, "retrain fired");
        }
        let sweeps = sweeps::advance(&self.pool).await?;
        if sweeps != sweeps::Advanced::default() {
            tracing::info!(started = sweeps.children_started, stopped = sweeps.children_stopped, finished = sweeps.sweeps_finished, "sweeps advanced");
        }
        let requeued = jobs::reap_expired(&self.pool).await?.len() + jobs::requeue_unclaimed(&self.pool, self.redispatch_after_secs).await?.len();
        let fanned_out = shards::fan_out_queued(&self.pool, self.shard_size, self.batch).await?;
        let settled = shards::settle_parents(&self.pool).await?;
        let settled = settled.succeeded + settled.failed;
        let mut dispatched = 0;
        loop {
            let mut tx = self.pool.begin().await?;
            let batch = jobs::take_dispatchable(&mut tx, &["train", "score_shard"], self.batch, &self.quotas).await?;
            if batch.is_empty() {
                break;
            }
            let channel = self.amqp.lock().await.try_channel().await?;
            for job in &batch {
                let queue = if job.kind == "train" { self.topology.train_queue_of(job.gpus) } else { &self.topology.score };
                let message = serde_json::json!({ "job_id": job.id, "kind": job.kind });
                publish_confirmed(&channel, queue, message.to_string().as_bytes()).await?;
            }
            // Committed only after every message was confirmed: on any failure the jobs
            // stay queued and the next pass sends them again (a duplicate message is
            // harmless, a missing one would strand the job).
            tx.commit().await?;
            dispatched += batch.len();
            for job in &batch {
                metrics::SCHEDULER.dispatched.get_or_create(&metrics::labels(&[("kind", &job.kind)])).inc();
            }
        }
        jobs::note_waiting_for_gpus(&self.pool).await?;
        Ok(PassReport { retrains_fired: retrains.len(), requeued, fanned_out, settled, dispatched })
    }
}

impl Dispatcher {
    /// Samples what the scheduler's gauges show: jobs by kind and state, the
    /// predictions table's size, ready messages in every queue of the topology
    /// (dead-letter queues included, by a passive declare) and the live workers by
    /// role with their GPUs. Only the leader samples, so each figure has one source.
    pub async fn observe(&self) -> anyhow::Result<()> {
        let m = &*metrics::SCHEDULER;
        let jobs = jobs::counts(&self.pool).await?;
        let mut counts: BTreeMap<(&str, &str), i64> = jobs.iter().map(|(kind, state, n)| ((kind.as_str(), state.as_str()), *n)).collect();
        {
            let mut kinds = self.kinds_shown.lock().unwrap_or_else(|e| e.into_inner());
            kinds.extend(jobs.iter().map(|j| j.0.clone()));
            for kind in kinds.iter() {
                for state in JobStatus::ALL {
                    let n = counts.remove(&(kind.as_str(), state.as_str())).unwrap_or(0);
                    m.jobs.get_or_create(&metrics::labels(&[("kind", kind), ("state", state.as_str())])).set(n);
                }
            }
        }
        let rows: i64 = sqlx::query_scalar("SELECT coalesce(sum(n_live_tup), 0)::bigint FROM pg_stat_user_tables WHERE relname = 'predictions'")
            .fetch_one(&self.pool)
            .await?;
        m.predictions_rows.set(rows);
        let live = workers::live(&self.pool).await?;
        for role in ["trainer", "scorer"] {
            m.live_workers.get_or_create(&metrics::labels(&[("role", role)])).set(live.iter().filter(|w| w.role == role).count() as i64);
        }
        m.live_gpus.set(live.iter().map(|w| i64::from(w.gpus)).sum());
        let channel = self.amqp.lock().await.try_channel().await?;
        for queue in self.topology.all_queues() {
            let options = QueueDeclareOptions { passive: true, ..Default::default() };
            let declared = channel.queue_declare(queue.as_str().into(), options, FieldTable::default()).await?;
            m.queue_depth.get_or_create(&metrics::labels(&[("queue", &queue)])).set(i64::from(declared.message_count()));
        }
        Ok(())
    }
}

/// Leadership: a session-level advisory lock on a connection kept open while leading.
pub struct Leadership {
    connection: PgConnection,
}

impl Leadership {
    /// Tries to become the leader; `None` when another scheduler leads.
    pub async fn try_acquire(database_url: &str) -> anyhow::Result<Option<Self>> {
        let mut connection = PgConnection::connect(database_url).await?;
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)").bind(LEADER_LOCK_KEY).fetch_one(&mut connection).await?;
        Ok(got.then_some(Self { connection }))
    }

    /// Still leading (the connection, and with it the lock, is alive).
    pub async fn check(&mut self) -> bool {
        self.connection.ping().await.is_ok()
    }
}

/// Runs passes while leading, until `shutdown` resolves: right after a job is
/// submitted (NOTIFY), and every `interval` in any case (the fallback when a
/// notification is lost, and the clock for leases and backoff). Neither Postgres nor
/// RabbitMQ going away stops the loop: it logs, and tries again.
pub async fn run_until_stopped(
    dispatcher: Dispatcher,
    database_url: String,
    interval: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    tokio::pin!(shutdown);
    let wake = Arc::new(Notify::new());
    let listener = AbortOnDrop(tokio::spawn(listen_for_jobs(database_url.clone(), wake.clone())));
    // Webhooks go out beside the passes, so a slow receiver never delays a dispatch.
    let leading = Arc::new(AtomicBool::new(false));
    let deliveries = AbortOnDrop(tokio::spawn(deliver_webhooks(dispatcher.pool.clone(), dispatcher.webhooks.clone(), leading.clone())));
    let mut leadership: Option<Leadership> = None;
    // The gauges are sampled every few seconds, not on every pass.
    let mut observed_at: Option<std::time::Instant> = None;
    metrics::set_ready(true);
    loop {
        if leadership.is_none() {
            match Leadership::try_acquire(&database_url).await {
                Ok(Some(lead)) => {
                    tracing::info!("leading: this scheduler dispatches");
                    metrics::SCHEDULER.leader.set(1);
                    leading.store(true, Ordering::Relaxed);
                    leadership = Some(lead);
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "cannot reach Postgres for the leader lock"),
            }
        }
        if let Some(lead) = &mut leadership {
            if lead.check().await {
                match dispatcher.pass().await {
                    Ok(r) if r != PassReport::default() => {
                        tracing::info!(requeued = r.requeued, fanned_out = r.fanned_out, settled = r.settled, dispatched = r.dispatched, "pass")
                    }
                    Ok(_) => {}
                    // One failed pass (broker restarting, say) is logged; the next retries.
                    Err(e) => tracing::warn!(error = %e, "dispatch pass failed"),
                }
            } else {
                tracing::warn!("lost the leader lock's connection");
                metrics::SCHEDULER.forget_leader_samples();
                leading.store(false, Ordering::Relaxed);
                leadership = None;
            }
        }
        if leadership.is_some() && observed_at.is_none_or(|at| at.elapsed() >= OBSERVE_EVERY) {
            if let Err(e) = dispatcher.observe().await {
                tracing::warn!(error = %e, "sampling queue depths and live workers failed");
            }
            observed_at = Some(std::time::Instant::now());
        }
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tokio::time::sleep(interval) => {}
            // A permit stored while a pass ran wakes at once: bursts cost one pass more.
            // Replicas that do not lead wait for the interval: no connection per job.
            _ = wake.notified(), if leadership.is_some() => {}
        }
    }
    drop(listener);
    drop(deliveries);
    Ok(())
}

/// Sends due webhook deliveries while this replica leads, until aborted.
async fn deliver_webhooks(pool: PgPool, settings: WebhookSettings, leading: Arc<AtomicBool>) {
    loop {
        let mut busy = false;
        if leading.load(Ordering::Relaxed) {
            match absa_store::webhooks::deliver_due(&pool, &settings, 100).await {
                Ok(report) => busy = report != absa_store::webhooks::DeliveryReport::default(),
                Err(e) => tracing::warn!(error = %e, "webhook deliveries failed"),
            }
        }
        if !busy {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// Wakes `wake` on every notification on [`jobs::NOTIFY_CHANNEL`], forever. A lost
/// connection is logged and re-established (with backoff), and wakes the loop too,
/// since notifications sent meanwhile are gone.
async fn listen_for_jobs(database_url: String, wake: Arc<Notify>) {
    let mut backoff = Duration::from_millis(500);
    loop {
        match PgListener::connect(&database_url).await {
            Ok(mut listener) => match listener.listen(jobs::NOTIFY_CHANNEL).await {
                Ok(()) => {
                    backoff = Duration::from_millis(500);
                    wake.notify_one();
                    loop {
                        match listener.try_recv().await {
                            Ok(Some(_)) => wake.notify_one(),
                            Ok(None) => {
                                // sqlx reconnects (and listens again) on the next call.
                                tracing::warn!("job notification listener lost its connection: reconnecting");
                                wake.notify_one();
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "job notification listener failed: reconnecting");
                                break;
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot listen for job notifications"),
            },
            Err(e) => tracing::warn!(error = %e, "cannot connect the job notification listener"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

/// Stops the listener task when the loop ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
