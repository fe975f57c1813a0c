//! Live workers and what they offer. A trainer advertises its GPUs (how many, and the
//! memory of the smallest) every few seconds; the scheduler dispatches a training job
//! that asks for GPUs only while a live trainer has at least that many with enough
//! memory, and sends it to the queue of that GPU count, which every trainer with at
//! least that many GPUs consumes ([`absa_platform::queue::Topology::train_gpus`]).

use std::time::Duration;

use serde::Serialize;
use sqlx::PgPool;

use crate::Result;

/// A worker not seen for this long is gone (crashed, or cut off).
pub const LIVE_SECS: f64 = 30.0;
/// How often a worker refreshes its row: well inside [`LIVE_SECS`].
pub const ADVERTISE_EVERY: Duration = Duration::from_secs(5);

/// What a worker offers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Offer {
    pub gpus: u32,
    /// Memory of the smallest of those GPUs.
    pub gpu_memory_mib: u64,
}

/// Inserts or refreshes the worker's row.
pub async fn advertise(pool: &PgPool, name: &str, role: &str, offer: Offer) -> Result<()> {
    sqlx::query(
        "INSERT INTO workers (name, role, gpus, gpu_memory_mib) VALUES ($1, $2, $3, $4)
         ON CONFLICT (name) DO UPDATE SET gpus = EXCLUDED.gpus, gpu_memory_mib = EXCLUDED.gpu_memory_mib, last_seen = now()",
    )
    .bind(name)
    .bind(role)
    .bind(offer.gpus as i32)
    .bind(offer.gpu_memory_mib as i64)
    .execute(pool)
    .await?;
    Ok(())
}

/// Removes the worker's row (a clean shutdown) and rows of workers gone for a day.
pub async fn withdraw(pool: &PgPool, name: &str) -> Result<()> {
    sqlx::query("DELETE FROM workers WHERE name = $1 OR last_seen < now() - interval '1 day'").bind(name).execute(pool).await?;
    Ok(())
}

/// Keeps the worker's row fresh in the background until dropped; Postgres being away
/// for a while only logs (the row goes stale, and GPU jobs wait for it to come back).
pub struct Advertisement {
    task: tokio::task::JoinHandle<()>,
}

impl Advertisement {
    pub fn start(pool: PgPool, name: String, role: &'static str, offer: Offer) -> Self {
        let task = tokio::spawn(async move {
            loop {
                if let Err(e) = advertise(&pool, &name, role, offer).await {
                    tracing::warn!(error = %e, "advertising this worker failed");
                }
                tokio::time::sleep(ADVERTISE_EVERY).await;
            }
        });
        Self { task }
    }
}

impl Drop for Advertisement {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Runs `work` with this worker advertised, then withdraws the advertisement (a failed
/// withdrawal is only logged: the row goes stale by itself).
pub async fn while_advertised<T>(pool: PgPool, name: String, role: &'static str, offer: Offer, work: impl std::future::Future<Output = T>) -> T {
    let advertising = Advertisement::start(pool.clone(), name.clone(), role, offer);
    let out = work.await;
    drop(advertising);
    if let Err(e) = withdraw(&pool, &name).await {
        tracing::warn!(error = %e, "could not remove this worker's advertisement (it goes stale by itself)");
    }
    out
}

/// A live worker, as the scheduler and the API see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct LiveWorker {
    pub name: String,
    pub role: String,
    pub gpus: i32,
    pub gpu_memory_mib: i64,
}

pub async fn live(pool: &PgPool) -> Result<Vec<LiveWorker>> {
    Ok(sqlx::query_as("SELECT name, role, gpus, gpu_memory_mib FROM workers WHERE last_seen > now() - make_interval(secs => $1) ORDER BY role, name")
        .bind(LIVE_SECS)
        .fetch_all(pool)
        .await?)
}
