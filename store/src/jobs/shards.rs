//! Scoring work as child jobs: a queued `score` job fans out into `score_shard` jobs,
//! one per range of document seqs, and the parent finishes when its shards do.
//!
//! Shards are ordinary jobs (leases, retries with backoff, dispatch by priority, the
//! `score_shards` view for dashboards). A shard's parameters are its parent's plus
//! `shard` (numbered from 0), `seq_from` and `seq_to` (exclusive); ranges step by
//! `shard_size` from the corpus's smallest seq to its largest, so gaps in the seqs
//! only make some shards smaller. A job has at most `MAX_SHARDS` shards; the lexicon
//! and the stance targets stay in the parent.

use crate::jobs;
use absa_jobs::spec::score::MAX_SHARDS;
use absa_jobs::ScoreParams;
use absa_platform::metrics;
use serde_json::{json, Value};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// Fans out up to `limit` queued `score` jobs, each in its own transaction; returns
/// how many it fanned out (or rejected for bad parameters).
pub async fn fan_out_queued(pool: &PgPool, default_shard_size: i64, limit: i64) -> anyhow::Result<usize> {
    let mut done = 0;
    while (done as i64) < limit {
        // One transaction per parent: it goes to 'running' with all its shards, or (the
        // scheduler dies half-way) stays queued with none. SKIP LOCKED: a parent that a
        // cancellation holds is left for the next pass.
        let mut tx = pool.begin().await?;
        let parent = sqlx::query!(
            "SELECT id, team_id, parameters FROM jobs
             WHERE kind = 'score' AND state = 'queued' AND (not_before IS NULL OR not_before <= now())
             ORDER BY priority DESC, created_at LIMIT 1 FOR UPDATE SKIP LOCKED",
        )
        .fetch_optional(&mut *tx)
        .await?;
        let Some(parent) = parent else { break };
        let (id, team, parameters) = (parent.id, parent.team_id, parent.parameters);
        match plan(&mut tx, team, &parameters, default_shard_size).await? {
            Ok(plan) => fan_out(&mut tx, id, plan).await?,
            Err(why) => reject(&mut tx, id, &why).await?,
        }
        tx.commit().await?;
        done += 1;
    }
    Ok(done)
}

/// The seq ranges of one parent.
#[derive(Debug)]
struct Plan {
    seq_min: i64,
    shard_size: i64,
    /// Zero for an empty corpus.
    shards: i64,
    seq_end: i64,
}

/// Checks the parameters and the corpus; `Ok(Err(why))` when the job cannot run.
async fn plan(tx: &mut PgConnection, team: Uuid, parameters: &Value, default_shard_size: i64) -> anyhow::Result<Result<Plan, String>> {
    let params = match ScoreParams::from_value(parameters) {
        Ok(params) => params,
        Err(why) => return Ok(Err(why)),
    };
    let (corpus, model, shard_size) = (params.corpus_id, params.model_version_id, params.shard_size.unwrap_or(default_shard_size));
    // The team's own corpus and model only.
    let found = sqlx::query!(
        r#"SELECT EXISTS (SELECT 1 FROM corpora WHERE id = $1 AND team_id = $3) AS "corpus!",
                  EXISTS (SELECT 1 FROM model_versions WHERE id = $2 AND team_id = $3) AS "model!""#,
        corpus,
        model,
        team,
    )
    .fetch_one(&mut *tx)
    .await?;
    let (corpus_ok, model_ok) = (found.corpus, found.model);
    if !corpus_ok {
        return Ok(Err(format!("corpus {corpus} not found")));
    }
    if !model_ok {
        return Ok(Err(format!("model version {model} not found")));
    }
    let seqs = sqlx::query!("SELECT min(seq), max(seq) FROM documents WHERE corpus_id = $1", corpus).fetch_one(&mut *tx).await?;
    Ok(Ok(match (seqs.min, seqs.max) {
        (Some(min), Some(max)) => {
            let span = i128::from(max) - i128::from(min) + 1;
            // At most MAX_SHARDS shards: a larger corpus gets larger shards.
            let fewest_size = (span + i128::from(MAX_SHARDS) - 1) / i128::from(MAX_SHARDS);
            let shard_size = i64::try_from(i128::from(shard_size).max(fewest_size)).unwrap_or(i64::MAX);
            let shards = (span + i128::from(shard_size) - 1) / i128::from(shard_size);
            Plan { seq_min: min, shard_size, shards: shards as i64, seq_end: max.saturating_add(1) }
        }
        _ => Plan { seq_min: 0, shard_size, shards: 0, seq_end: 0 },
    }))
}

async fn fan_out(tx: &mut PgConnection, parent: Uuid, plan: Plan) -> anyhow::Result<()> {
    // Children inherit team, priority, attempts and every parameter but the lexicon and
    // the stance targets, which are stored once, in the parent (the scorer reads them there). The idempotency
    // key makes a repeated fan-out insert nothing new.
    let created = sqlx::query_scalar!(
        r#"WITH shard AS (
             INSERT INTO jobs (id, team_id, kind, priority, parameters, max_attempts, idempotency_key, parent_id)
             SELECT gen_random_uuid(), p.team_id, 'score_shard', p.priority,
                    (p.parameters - 'lexicon' - 'targets') || jsonb_build_object('shard', n, 'seq_from', $2 + n * $3,
                                                       'seq_to', least($2 + (n + 1) * $3, $5)),
                    p.max_attempts, 'shard:' || p.id || ':' || n, p.id
             FROM jobs p, generate_series(0::bigint, $4::bigint - 1) AS n
             WHERE p.id = $1
             ON CONFLICT (team_id, idempotency_key) DO NOTHING
             RETURNING id),
         logged AS (INSERT INTO job_events (job_id, kind, detail)
                    SELECT id, 'submitted', jsonb_build_object('parent', $1::uuid) FROM shard)
         SELECT count(*) AS "created!" FROM shard"#,
        parent,
        plan.seq_min,
        plan.shard_size,
        plan.shards,
        plan.seq_end,
    )
    .fetch_one(&mut *tx)
    .await?;
    metrics::job_events("submitted", created as u64);
    jobs::event(&mut *tx, parent, "fanned_out", json!({ "shards": plan.shards, "created": created, "shard_size": plan.shard_size })).await?;
    if plan.shards == 0 {
        // Nothing to score: done already.
        sqlx::query!(
            "UPDATE jobs SET state = 'succeeded', progress = 1, lease_owner = NULL, lease_expires_at = NULL, updated_at = now() WHERE id = $1",
            parent
        )
        .execute(&mut *tx)
        .await?;
        jobs::event(&mut *tx, parent, "completed", json!({ "shards": 0 })).await?;
        return Ok(());
    }
    // Running with no lease: nobody heartbeats a parent, so the reaper leaves it alone;
    // settle_parents finishes it.
    sqlx::query!("UPDATE jobs SET state = 'running', progress = 0, lease_owner = NULL, lease_expires_at = NULL, updated_at = now() WHERE id = $1", parent)
        .execute(&mut *tx)
        .await?;
    sqlx::query!("SELECT FROM pg_notify($1, 'score_shard')", jobs::NOTIFY_CHANNEL).execute(&mut *tx).await?;
    Ok(())
}

async fn reject(tx: &mut PgConnection, parent: Uuid, why: &str) -> anyhow::Result<()> {
    sqlx::query!(
        "UPDATE jobs SET state = 'failed', last_error = $2, lease_owner = NULL, lease_expires_at = NULL, updated_at = now() WHERE id = $1",
        parent,
        why
    )
    .execute(&mut *tx)
    .await?;
    jobs::event(&mut *tx, parent, "failed", json!({ "error": why })).await?;
    Ok(())
}

/// What [`settle_parents`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Settled {
    pub succeeded: usize,
    pub failed: usize,
}

/// Brings running `score` parents up to date with their shards: progress is the
/// fraction of shards succeeded; all succeeded → parent succeeded; a shard failed (or
/// was cancelled on its own) → parent failed with that shard's error, and its other
/// shards cancelled (their workers notice at their next heartbeat).
pub async fn settle_parents(pool: &PgPool) -> anyhow::Result<Settled> {
    // Per running parent: shards, shards succeeded, the first broken shard (failed ones
    // before cancelled ones, lowest number first) with its state and error, progress.
    type Row = (Uuid, i64, i64, Option<i32>, Option<String>, Option<String>, f64);
    let rows: Vec<Row> = sqlx::query!(
        r#"SELECT p.id, count(*) AS "total!", count(*) FILTER (WHERE c.state = 'succeeded') AS "succeeded!",
                b.shard AS "shard?", b.state AS "state?", b.last_error AS "last_error?", p.progress
         FROM jobs p
         JOIN jobs c ON c.parent_id = p.id
         LEFT JOIN LATERAL (
             SELECT (x.parameters->>'shard')::integer AS shard, x.state, x.last_error FROM jobs x
             WHERE x.parent_id = p.id AND x.state IN ('failed', 'cancelled')
             ORDER BY x.state = 'failed' DESC, (x.parameters->>'shard')::integer LIMIT 1) b ON true
         WHERE p.kind = 'score' AND p.state = 'running'
         GROUP BY p.id, b.shard, b.state, b.last_error, p.progress"#,
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|r| (r.id, r.total, r.succeeded, r.shard, r.state, r.last_error, r.progress))
    .collect();
    let mut settled = Settled::default();
    for (parent, total, succeeded, broken_shard, broken_state, broken_error, progress) in rows {
        let fraction = succeeded as f64 / total as f64;
        if let Some(shard) = broken_shard {
            let error = match broken_state.as_deref() {
                Some("cancelled") => "cancelled".to_owned(),
                _ => broken_error.unwrap_or_else(|| "unknown error".into()),
            };
            let message = format!("shard {shard}: {error}");
            let mut tx = pool.begin().await?;
            let done = sqlx::query!(
                "UPDATE jobs SET state = 'failed', last_error = $2, progress = $3, updated_at = now()
                 WHERE id = $1 AND state = 'running'",
                parent,
                &message,
                fraction,
            )
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() == 1 {
                let cancelled = sqlx::query!(
                    "UPDATE jobs SET state = 'cancelled', lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
                     WHERE parent_id = $1 AND state NOT IN ('succeeded', 'failed', 'cancelled')",
                    parent,
                )
                .execute(&mut *tx)
                .await?
                .rows_affected();
                jobs::event(&mut *tx, parent, "failed", json!({ "shard": shard, "error": error, "shards_cancelled": cancelled })).await?;
                settled.failed += 1;
            }
            tx.commit().await?;
        } else if succeeded == total {
            let mut tx = pool.begin().await?;
            let done = sqlx::query!("UPDATE jobs SET state = 'succeeded', progress = 1, updated_at = now() WHERE id = $1 AND state = 'running'", parent)
                .execute(&mut *tx)
                .await?;
            if done.rows_affected() == 1 {
                jobs::event(&mut *tx, parent, "completed", json!({ "shards": total })).await?;
                settled.succeeded += 1;
            }
            tx.commit().await?;
        } else if fraction != progress {
            sqlx::query!("UPDATE jobs SET progress = $2, updated_at = now() WHERE id = $1 AND state = 'running'", parent, fraction).execute(pool).await?;
        }
    }
    Ok(settled)
}
