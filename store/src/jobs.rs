//! The job lifecycle in Postgres: submission (idempotent), claims with leases,
//! heartbeats, completion, failure, and the reaper for expired leases.
//!
//! A worker owns a job only while its lease holds: every write after the claim runs
//! `WHERE lease_owner = $me`, and zero rows affected means the lease was lost (it
//! expired and the job went to someone else), so the worker must stop.
//!
//! Every query on `jobs` and `job_events` lives under this module, compile-checked: the
//! lifecycle here, a sweep's children in [`sweeps`], a scoring job's shards in
//! [`shards`], and what clients see of a team's jobs in [`views`].

pub mod shards;
pub mod sweeps;
pub mod views;

use absa_jobs::{JobKind, JobStatus};
use serde_json::Value;
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

use crate::Result;

/// A kind or state column read back: the table's CHECK constraints allow no other text
/// (`store/tests/jobs.rs` reads them back).
pub(crate) fn known<T: std::str::FromStr<Err = String>>(text: &str) -> T {
    text.parse().unwrap_or_else(|e| panic!("the jobs table's CHECK constraints allow {text:?}: {e}"))
}

/// First retry waits this long; each further one twice as long ...
pub const BACKOFF_BASE_SECS: f64 = 1.0;
/// ... up to this.
pub const BACKOFF_MAX_SECS: f64 = 300.0;

/// A job to submit.
#[derive(Clone, Debug)]
pub struct NewJob {
    pub team_id: Uuid,
    pub kind: JobKind,
    pub priority: i32,
    pub parameters: Value,
    pub max_attempts: i32,
    pub idempotency_key: Option<String>,
    pub parent_id: Option<Uuid>,
    /// A digest of the request behind an idempotency key: the same key with another
    /// request is [`Submitted::KeyReused`], not the old job.
    pub request_hash: Option<String>,
    /// The submitter's `key: value` tags (a JSON object; null for none).
    pub tags: Value,
}

impl NewJob {
    /// A job of `kind` for `team_id`: priority 0, 3 attempts, no idempotency key, parent
    /// or tags (struct update syntax sets the rest).
    pub fn new(team_id: Uuid, kind: JobKind, parameters: Value) -> Self {
        Self { team_id, kind, priority: 0, parameters, max_attempts: 3, idempotency_key: None, parent_id: None, request_hash: None, tags: Value::Null }
    }
}

/// What a submission did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Submitted {
    Created(Uuid),
    /// The team already submitted this idempotency key: the existing job.
    Existing(Uuid),
    /// The key was used before for another request (the job it names): nothing submitted.
    KeyReused(Uuid),
}

impl Submitted {
    pub fn id(self) -> Uuid {
        match self {
            Self::Created(id) | Self::Existing(id) | Self::KeyReused(id) => id,
        }
    }
}

/// A job a worker holds.
#[derive(Clone, Debug)]
pub struct ClaimedJob {
    pub id: Uuid,
    pub team_id: Uuid,
    pub kind: String,
    pub parameters: Value,
    /// 1 on the first claim; more when a previous holder's lease expired.
    pub attempt: i32,
}

/// The lease was lost: the job expired to the reaper, or was cancelled.
#[derive(Debug, thiserror::Error)]
#[error("lease on job {0} lost")]
pub struct LeaseLost(pub Uuid);

/// The Postgres NOTIFY channel on which submissions (payload: the job's kind) wake the
/// scheduler, so a job does not wait for its next timed pass.
pub const NOTIFY_CHANNEL: &str = "absa_jobs";

/// Inserts a job, or returns the team's existing job with the same idempotency key.
pub async fn submit(pool: &PgPool, job: &NewJob) -> Result<Submitted> {
    let mut conn = pool.acquire().await?;
    submit_in(&mut conn, job).await
}

/// [`submit`] on a connection the caller holds (inside its transaction, say).
pub async fn submit_in(conn: &mut sqlx::PgConnection, job: &NewJob) -> Result<Submitted> {
    let id = Uuid::new_v4();
    // One statement, so one implicit transaction: the job, its 'submitted' event and the
    // scheduler's wake-up (delivered at commit) all happen, or none does.
    let inserted = sqlx::query_scalar!(
        r#"WITH job AS (
             INSERT INTO jobs (id, team_id, kind, priority, parameters, max_attempts, idempotency_key, parent_id, request_hash, tags)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $10, coalesce($11, '{}'::jsonb))
             ON CONFLICT (team_id, idempotency_key) DO NOTHING RETURNING id, kind),
         logged AS (INSERT INTO job_events (job_id, kind) SELECT id, 'submitted' FROM job)
         SELECT job.id AS "id!" FROM job, pg_notify($9, job.kind)"#,
        id,
        job.team_id,
        job.kind.as_str(),
        job.priority,
        &job.parameters,
        job.max_attempts,
        job.idempotency_key.as_deref(),
        job.parent_id,
        NOTIFY_CHANNEL,
        job.request_hash.as_deref(),
        if job.tags.is_null() { None } else { Some(&job.tags) },
    )
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(id) = inserted {
        absa_platform::metrics::job_events("submitted", 1);
        return Ok(Submitted::Created(id));
    }
    let existing = sqlx::query!("SELECT id, request_hash FROM jobs WHERE team_id = $1 AND idempotency_key = $2", job.team_id, job.idempotency_key.as_deref())
        .fetch_one(&mut *conn)
        .await?;
    if job.request_hash.is_some() && existing.request_hash != job.request_hash {
        return Ok(Submitted::KeyReused(existing.id));
    }
    Ok(Submitted::Existing(existing.id))
}

/// Claims job `id` for `worker` for `lease_secs`, if it is waiting to run. A message
/// for a job already held, finished or cancelled claims nothing: that is what makes
/// redelivered messages harmless.
pub async fn claim(pool: &PgPool, id: Uuid, worker: &str, lease_secs: f64) -> Result<Option<ClaimedJob>> {
    let row = sqlx::query!(
        r#"UPDATE jobs SET state = 'running', lease_owner = $2,
                lease_expires_at = now() + make_interval(secs => $3), attempts = attempts + 1, updated_at = now()
         WHERE id = $1 AND state IN ('queued', 'dispatched')
         RETURNING id, team_id, kind, parameters, attempts, extract(epoch FROM now() - created_at)::float8 AS "waited_secs!""#,
        id,
        worker,
        lease_secs,
    )
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let (id, team_id, kind, parameters, attempt, waited_secs) = (row.id, row.team_id, row.kind, row.parameters, row.attempts, row.waited_secs);
    absa_platform::metrics::WORKER.queue_wait_seconds.get_or_create(&absa_platform::metrics::labels(&[("kind", &kind)])).observe(waited_secs);
    event(pool, id, "claimed", serde_json::json!({ "worker": worker, "attempt": attempt })).await?;
    Ok(Some(ClaimedJob { id, team_id, kind, parameters, attempt }))
}

/// Extends the lease and records progress (0..1). `Err(LeaseLost)` tells the worker to
/// stop: the job was cancelled or handed to another worker.
pub async fn heartbeat(pool: &PgPool, id: Uuid, worker: &str, lease_secs: f64, progress: f64) -> Result<std::result::Result<(), LeaseLost>> {
    let done = sqlx::query!(
        "UPDATE jobs SET lease_expires_at = now() + make_interval(secs => $3), progress = $4, updated_at = now()
         WHERE id = $1 AND lease_owner = $2 AND state = 'running'",
        id,
        worker,
        lease_secs,
        progress,
    )
    .execute(pool)
    .await?;
    Ok(if done.rows_affected() == 1 { Ok(()) } else { Err(LeaseLost(id)) })
}

/// Marks the job succeeded, inside the caller's transaction (the one that wrote its
/// results), if `worker` still holds it.
pub async fn complete(executor: impl PgExecutor<'_>, id: Uuid, worker: &str) -> Result<std::result::Result<(), LeaseLost>> {
    let done = sqlx::query!(
        "UPDATE jobs SET state = 'succeeded', progress = 1, lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
         WHERE id = $1 AND lease_owner = $2 AND state = 'running'",
        id,
        worker,
    )
    .execute(executor)
    .await?;
    Ok(if done.rows_affected() == 1 { Ok(()) } else { Err(LeaseLost(id)) })
}

/// Records a failed attempt: back to `queued` while attempts remain, else `failed`
/// with the error kept.
pub async fn fail(pool: &PgPool, id: Uuid, worker: &str, error: &str) -> Result<Option<JobStatus>> {
    let state = sqlx::query_scalar!(
        "UPDATE jobs SET state = CASE WHEN attempts >= max_attempts THEN 'failed' ELSE 'queued' END,
                last_error = $3, lease_owner = NULL, lease_expires_at = NULL, updated_at = now(),
                not_before = now() + make_interval(secs => least($4 * power(2, attempts - 1), $5))
         WHERE id = $1 AND lease_owner = $2 AND state = 'running' RETURNING state",
        id,
        worker,
        error,
        BACKOFF_BASE_SECS,
        BACKOFF_MAX_SECS,
    )
    .fetch_optional(pool)
    .await?;
    if state.is_some() {
        event(pool, id, "attempt_failed", serde_json::json!({ "worker": worker, "error": error })).await?;
    }
    Ok(state.as_deref().map(known))
}

/// Gives a running job back without counting the attempt (its worker is shutting
/// down, not failing): it returns to `queued` for the scheduler to send again.
pub async fn release(pool: &PgPool, id: Uuid, worker: &str, why: &str) -> Result<bool> {
    let done = sqlx::query!(
        "UPDATE jobs SET state = 'queued', attempts = greatest(attempts - 1, 0), lease_owner = NULL,
                lease_expires_at = NULL, not_before = NULL, updated_at = now()
         WHERE id = $1 AND lease_owner = $2 AND state = 'running'",
        id,
        worker,
    )
    .execute(pool)
    .await?;
    if done.rows_affected() == 1 {
        event(pool, id, "released", serde_json::json!({ "worker": worker, "reason": why })).await?;
    }
    Ok(done.rows_affected() == 1)
}

/// Fails a running job at once, whatever attempts remain: for errors no retry fixes
/// (bad parameters, data that does not exist).
pub async fn fail_permanently(pool: &PgPool, id: Uuid, worker: &str, error: &str) -> Result<bool> {
    let done = sqlx::query!(
        "UPDATE jobs SET state = 'failed', last_error = $3, lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
         WHERE id = $1 AND lease_owner = $2 AND state = 'running'",
        id,
        worker,
        error,
    )
    .execute(pool)
    .await?;
    if done.rows_affected() == 1 {
        event(pool, id, "failed", serde_json::json!({ "worker": worker, "error": error, "permanent": true })).await?;
    }
    Ok(done.rows_affected() == 1)
}

/// Cancels a job that has not finished. A running worker notices at its next heartbeat.
pub async fn cancel(pool: &PgPool, id: Uuid) -> Result<bool> {
    let mut conn = pool.acquire().await?;
    cancel_in(&mut conn, id).await
}

/// [`cancel`] on a connection the caller holds. A sweep's children are jobs too, so
/// the job, its children and their children (a sweep's, a score job's shards) go.
pub async fn cancel_in(conn: &mut sqlx::PgConnection, id: Uuid) -> Result<bool> {
    let done = sqlx::query!(
        "UPDATE jobs SET state = 'cancelled', lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
         WHERE (id = $1 OR parent_id = $1 OR parent_id IN (SELECT c.id FROM jobs c WHERE c.parent_id = $1))
           AND state NOT IN ('succeeded', 'failed', 'cancelled')",
        id,
    )
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() > 0 {
        event(&mut *conn, id, "cancelled", serde_json::json!({})).await?;
    }
    Ok(done.rows_affected() > 0)
}

/// Jobs whose lease expired (their worker died or hung) go back to `queued`, or to
/// `failed` once they used all attempts. Returns the ids re-queued, to re-dispatch.
pub async fn reap_expired(pool: &PgPool) -> Result<Vec<Uuid>> {
    let rows = sqlx::query!(
        "UPDATE jobs SET state = CASE WHEN attempts >= max_attempts THEN 'failed' ELSE 'queued' END,
                last_error = coalesce(last_error, 'lease expired'), lease_owner = NULL, lease_expires_at = NULL,
                updated_at = now(), not_before = now() + make_interval(secs => least($1 * power(2, attempts - 1), $2))
         WHERE state = 'running' AND lease_expires_at < now()
         RETURNING id, state",
        BACKOFF_BASE_SECS,
        BACKOFF_MAX_SECS,
    )
    .fetch_all(pool)
    .await?;
    let mut requeued = Vec::new();
    for row in rows {
        let (id, state) = (row.id, row.state);
        event(pool, id, "lease_expired", serde_json::json!({ "now": state })).await?;
        if state == "queued" {
            requeued.push(id);
        }
    }
    Ok(requeued)
}

/// Jobs dispatched more than `after_secs` ago and still unclaimed go back to `queued`,
/// to be published again. Their message may wait in a busy worker's prefetch buffer
/// (a worker acks at the claim, so the broker hands it the next message while it
/// works), or may have been lost with a broker that went down; a second message is
/// harmless because only one claim can succeed.
pub async fn requeue_unclaimed(pool: &PgPool, after_secs: f64) -> Result<Vec<Uuid>> {
    let ids = sqlx::query_scalar!(
        "UPDATE jobs SET state = 'queued', updated_at = now()
         WHERE state = 'dispatched' AND updated_at < now() - make_interval(secs => $1) RETURNING id",
        after_secs,
    )
    .fetch_all(pool)
    .await?;
    for id in &ids {
        event(pool, *id, "redispatched", serde_json::json!({ "unclaimed_for_secs": after_secs })).await?;
    }
    Ok(ids)
}

/// A job taken for dispatch: where to send it follows from its kind and GPUs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dispatchable {
    pub id: Uuid,
    pub kind: String,
    /// GPUs a training job asks for (0 for everything else).
    pub gpus: u32,
}

/// How much of the workers one team may hold at once, so that one team's backlog does
/// not starve the others; 0 means no limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(default)]
pub struct TeamQuotas {
    /// A team's messages of one kind waiting in the broker: another team's job queues
    /// behind at most this many of the first team's, whatever its backlog.
    pub max_waiting: i64,
    /// A team's jobs dispatched or running, all kinds together.
    pub max_active: i64,
    /// GPUs of a team's dispatched and running training jobs.
    pub max_gpus: i64,
}

impl Default for TeamQuotas {
    fn default() -> Self {
        Self { max_waiting: 16, max_active: 64, max_gpus: 16 }
    }
}

/// Moves up to `limit` queued jobs of `kinds` whose backoff has passed to
/// `dispatched`, inside `tx`; the caller publishes their messages and commits only once
/// the broker confirmed them, so a job is never marked dispatched without a message on
/// its way. Teams take turns: each team's queued jobs are ranked by its own priorities
/// (then age), and the batch goes by rank across teams (then age), within each team's
/// [`TeamQuotas`]; the returned order is the publishing order. A training job asking
/// for GPUs is taken only while a live trainer advertises at least that many with at
/// least `parameters.min_gpu_memory_mib` each ([`crate::workers`]); until then it
/// stays queued.
pub async fn take_dispatchable(tx: &mut sqlx::PgConnection, kinds: &[&str], limit: i64, quotas: &TeamQuotas) -> Result<Vec<Dispatchable>> {
    let kinds: Vec<String> = kinds.iter().map(|k| k.to_string()).collect();
    type Taken = (Uuid, String, i32, chrono::DateTime<chrono::Utc>, i32, Uuid);
    let rows = sqlx::query!(
        r#"WITH held AS (
             SELECT team_id, kind, count(*) FILTER (WHERE state = 'dispatched') AS waiting, count(*) AS active,
                    coalesce(sum(job_gpus(parameters)), 0) AS gpus
             FROM jobs WHERE state IN ('dispatched', 'running') AND kind = ANY($1) GROUP BY team_id, kind),
         team AS (SELECT team_id, sum(active) AS active, sum(gpus) AS gpus FROM held GROUP BY team_id),
         candidates AS (
             SELECT j.id, j.team_id, j.kind, j.created_at,
                    row_number() OVER (PARTITION BY j.team_id, j.kind ORDER BY j.priority DESC, j.created_at) AS turn,
                    row_number() OVER (PARTITION BY j.team_id ORDER BY j.priority DESC, j.created_at) AS team_turn,
                    sum(job_gpus(j.parameters)) OVER (PARTITION BY j.team_id ORDER BY j.priority DESC, j.created_at) AS gpus_so_far
             FROM jobs j WHERE j.state = 'queued' AND j.kind = ANY($1)
               AND (j.not_before IS NULL OR j.not_before <= now())
               AND (job_gpus(j.parameters) = 0 OR trainer_offers(j.parameters, $3)))
         UPDATE jobs SET state = 'dispatched', updated_at = now()
         WHERE state = 'queued' AND id IN (
             SELECT c.id FROM candidates c
             LEFT JOIN held h ON h.team_id = c.team_id AND h.kind = c.kind
             LEFT JOIN team t ON t.team_id = c.team_id
             WHERE ($4::bigint = 0 OR c.turn + coalesce(h.waiting, 0) <= $4)
               AND ($5::bigint = 0 OR c.team_turn + coalesce(t.active, 0) <= $5)
               AND ($6::bigint = 0 OR c.gpus_so_far + coalesce(t.gpus, 0) <= $6)
             ORDER BY c.turn, c.created_at LIMIT $2)
         RETURNING id, kind, priority, created_at, job_gpus(parameters) AS "gpus!", team_id"#,
        &kinds,
        limit,
        crate::workers::LIVE_SECS,
        quotas.max_waiting,
        quotas.max_active,
        quotas.max_gpus,
    )
    .fetch_all(&mut *tx)
    .await?;
    let mut rows: Vec<Taken> = rows.into_iter().map(|r| (r.id, r.kind, r.priority, r.created_at, r.gpus, r.team_id)).collect();
    // RETURNING keeps no order: rank each team's jobs again (its priority, then age),
    // then publish by rank across teams, then age.
    rows.sort_by(|a, b| (a.5, &a.1).cmp(&(b.5, &b.1)).then(b.2.cmp(&a.2)).then(a.3.cmp(&b.3)));
    let mut turns = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        let same_group = i > 0 && rows[i - 1].5 == row.5 && rows[i - 1].1 == row.1;
        turns.push(if same_group { turns[i - 1] + 1 } else { 0usize });
    }
    let mut ranked: Vec<(usize, Taken)> = turns.into_iter().zip(rows).collect();
    ranked.sort_by(|a, b| a.0.cmp(&b.0).then(a.1 .3.cmp(&b.1 .3)));
    Ok(ranked.into_iter().map(|(_, (id, kind, _, _, gpus, _))| Dispatchable { id, kind, gpus: gpus.max(0) as u32 }).collect())
}

/// Records that job `id` needs GPUs of at least `mib` MiB each (a trainer with
/// smaller ones worked it out from the device plan); the scheduler then sends it only
/// to trainers that have them.
pub async fn require_gpu_memory(pool: &PgPool, id: Uuid, mib: u64) -> Result<()> {
    sqlx::query!(
        "UPDATE jobs SET parameters = parameters || jsonb_build_object('min_gpu_memory_mib', $2::bigint), updated_at = now() WHERE id = $1",
        id,
        mib as i64,
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Records, once per job, why queued GPU training jobs are not dispatched: no live
/// trainer has what they ask for. Returns how many jobs got the event.
pub async fn note_waiting_for_gpus(pool: &PgPool) -> Result<u64> {
    let done = sqlx::query!(
        "INSERT INTO job_events (job_id, kind, detail)
         SELECT j.id, 'waiting_for_gpus',
                jsonb_build_object('gpus', job_gpus(j.parameters), 'min_gpu_memory_mib', j.parameters -> 'min_gpu_memory_mib',
                                   'message', format('no live trainer offers %s GPU(s) with enough memory; the job waits for one', job_gpus(j.parameters)))
         FROM jobs j
         WHERE j.state = 'queued' AND j.kind = 'train' AND job_gpus(j.parameters) > 0
           AND NOT trainer_offers(j.parameters, $1)
           AND NOT EXISTS (SELECT 1 FROM job_events e WHERE e.job_id = j.id AND e.kind = 'waiting_for_gpus')",
        crate::workers::LIVE_SECS,
    )
    .execute(pool)
    .await?;
    absa_platform::metrics::job_events("waiting_for_gpus", done.rows_affected());
    Ok(done.rows_affected())
}

/// The job's parent (a shard's score job, a sweep child's sweep) and its parameters.
pub async fn parent(executor: impl PgExecutor<'_>, id: Uuid) -> Result<Option<(Uuid, Value)>> {
    let row = sqlx::query!("SELECT p.id, p.parameters FROM jobs c JOIN jobs p ON p.id = c.parent_id WHERE c.id = $1", id).fetch_optional(executor).await?;
    Ok(row.map(|r| (r.id, r.parameters)))
}

/// The job's newest complete checkpoint (of `epoch` when given) and its epoch, from
/// its `checkpoint_saved` events.
pub async fn last_checkpoint(executor: impl PgExecutor<'_>, id: Uuid, epoch: Option<i64>) -> Result<Option<(Uuid, i64)>> {
    let row = sqlx::query!(
        r#"SELECT (e.detail->>'artifact_id')::uuid AS "artifact_id!", (e.detail->>'epoch')::bigint AS "epoch!" FROM job_events e
           JOIN artifacts a ON a.id = (e.detail->>'artifact_id')::uuid AND a.complete
           WHERE e.job_id = $1 AND e.kind = 'checkpoint_saved' AND ($2::bigint IS NULL OR (e.detail->>'epoch')::bigint = $2)
           ORDER BY e.id DESC LIMIT 1"#,
        id,
        epoch,
    )
    .fetch_optional(executor)
    .await?;
    Ok(row.map(|r| (r.artifact_id, r.epoch)))
}

/// How many jobs there are of each kind in each state.
pub async fn counts(executor: impl PgExecutor<'_>) -> Result<Vec<(String, String, i64)>> {
    let rows = sqlx::query!(r#"SELECT kind, state, count(*) AS "count!" FROM jobs GROUP BY kind, state"#).fetch_all(executor).await?;
    Ok(rows.into_iter().map(|r| (r.kind, r.state, r.count)).collect())
}

/// The job's current state.
pub async fn status(pool: &PgPool, id: Uuid) -> Result<Option<JobStatus>> {
    let state = sqlx::query_scalar!("SELECT state FROM jobs WHERE id = $1", id).fetch_optional(pool).await?;
    Ok(state.as_deref().map(known))
}

/// Appends to the job's event log (and counts it in `absa_job_events_total`; inside
/// a transaction that later rolls back, the count is one ahead of the log).
pub async fn event(executor: impl PgExecutor<'_>, id: Uuid, kind: &str, detail: Value) -> Result<()> {
    sqlx::query!("INSERT INTO job_events (job_id, kind, detail) VALUES ($1, $2, $3)", id, kind, detail).execute(executor).await?;
    absa_platform::metrics::job_events(kind, 1);
    Ok(())
}
