//! One scheduler pass: re-queue jobs whose lease expired, then publish queued jobs
//! (highest priority first) to their work queue. Only the leader (holder of a Postgres
//! advisory lock) runs passes, so several replicas are safe.

use std::time::Duration;

use absa_platform::jobs;
use absa_platform::queue::{publish_confirmed, Topology};
use lapin::Channel;
use sqlx::postgres::PgConnection;
use sqlx::{Connection, PgPool};

/// Arbitrary, fixed: the advisory lock that makes one scheduler the leader.
const LEADER_LOCK_KEY: i64 = 0x4142_5341_5343_4844; // "ABSASCHD"

/// What one pass did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PassReport {
    pub requeued: usize,
    pub dispatched: usize,
}

pub struct Dispatcher {
    pool: PgPool,
    channel: Channel,
    topology: Topology,
    batch: i64,
}

impl Dispatcher {
    /// `channel` must be in confirm mode ([`absa_platform::queue::confirmed_channel`]).
    pub fn new(pool: PgPool, channel: Channel, topology: Topology) -> Self {
        Self { pool, channel, topology, batch: 100 }
    }

    /// Reaps expired leases, then dispatches until nothing dispatchable is left.
    pub async fn pass(&self) -> anyhow::Result<PassReport> {
        let requeued = jobs::reap_expired(&self.pool).await?.len();
        let mut dispatched = 0;
        loop {
            let mut tx = self.pool.begin().await?;
            let batch = jobs::take_dispatchable(&mut tx, &["train", "score_shard"], self.batch).await?;
            if batch.is_empty() {
                break;
            }
            for (id, kind) in &batch {
                let queue = if kind == "train" { &self.topology.train } else { &self.topology.score };
                let message = serde_json::json!({ "job_id": id, "kind": kind });
                publish_confirmed(&self.channel, queue, message.to_string().as_bytes()).await?;
            }
            // Committed only after every message was confirmed: on any failure the jobs
            // stay queued and the next pass sends them again (a duplicate message is
            // harmless, a missing one would strand the job).
            tx.commit().await?;
            dispatched += batch.len();
        }
        Ok(PassReport { requeued, dispatched })
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

/// Runs passes every `interval` while leading, until `shutdown` resolves.
pub async fn run_until_stopped(
    dispatcher: Dispatcher,
    database_url: String,
    interval: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    tokio::pin!(shutdown);
    let mut leadership: Option<Leadership> = None;
    loop {
        if leadership.is_none() {
            leadership = Leadership::try_acquire(&database_url).await?;
            if leadership.is_some() {
                tracing::info!("leading: this scheduler dispatches");
            }
        }
        if let Some(lead) = &mut leadership {
            if lead.check().await {
                match dispatcher.pass().await {
                    Ok(r) if r != PassReport::default() => tracing::info!(requeued = r.requeued, dispatched = r.dispatched, "pass"),
                    Ok(_) => {}
                    // One failed pass (broker restarting, say) is logged; the next retries.
                    Err(e) => tracing::warn!(error = %e, "dispatch pass failed"),
                }
            } else {
                tracing::warn!("lost the leader lock's connection");
                leadership = None;
            }
        }
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            _ = tokio::time::sleep(interval) => {}
        }
    }
}
