//! A team's jobs as clients see them: one job with its latest events and, by kind, its
//! model version, its sweep children or its shards; the event log a page at a time; the
//! listing. Read-only; the API serves these types as they are.

use absa_jobs::{JobKind, JobStatus};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;
use utoipa::ToSchema;
use uuid::Uuid;

use super::known;
use crate::Result;

/// One entry of a job's event log.
#[derive(Serialize, ToSchema)]
pub struct JobEvent {
    /// Its place in the log (the `after` cursor of `/events`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    pub at: DateTime<Utc>,
    /// submitted, dispatched, epoch_end, checkpoint_saved, promoted, failed, ...
    pub kind: String,
    pub detail: Value,
}

/// A sweep child: its trial's values, its last validation figures and its version.
#[derive(Serialize, ToSchema)]
pub struct SweepChild {
    pub job_id: Uuid,
    pub state: String,
    pub trial: Value,
    pub values: Value,
    pub epoch: Option<i32>,
    pub train_loss: Option<f64>,
    pub validation_loss: Option<f64>,
    pub validation_accuracy: Option<f64>,
    pub validation_macro_f1: Option<f64>,
    /// Stance's F_avg, where the labels have against and favor.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validation_f_avg: Option<f64>,
    pub model_version_id: Option<Uuid>,
    /// Shown, never used for the choice.
    pub test_accuracy: Option<f64>,
    pub test_macro_f1: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_f_avg: Option<f64>,
}

/// A score job's shards by state.
#[derive(Default, Serialize, ToSchema)]
pub struct ShardCounts {
    pub total: i64,
    pub queued: i64,
    pub dispatched: i64,
    pub running: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub cancelled: i64,
}

/// A job: its state, progress and latest events, and by kind its model version
/// (train), its children (sweep) or its shards and predictions (score).
#[derive(Serialize, ToSchema)]
pub struct Job {
    pub id: Uuid,
    pub kind: JobKind,
    pub state: JobStatus,
    /// 0 to 1.
    pub progress: f64,
    pub attempts: i32,
    pub max_attempts: i32,
    /// The job's checked parameters as stored.
    pub parameters: Value,
    /// The submitter's `key: value` tags.
    pub tags: Value,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The parent of a sweep child.
    pub parent_id: Option<Uuid>,
    /// The latest 50 events, oldest first (`/events` pages them all).
    pub events: Vec<JobEvent>,
    /// Train jobs: the version registered (null until then).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Uuid>)]
    pub model_version_id: Option<Option<Uuid>>,
    /// Sweeps: their children by trial.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub children: Option<Vec<SweepChild>>,
    /// Sweeps: the version chosen, once chosen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chosen_model_version_id: Option<Value>,
    /// Sweeps: each setting's mean validation figure over its succeeded children, once chosen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settings: Option<Value>,
    /// Score jobs: shards by state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shards: Option<ShardCounts>,
    /// Score jobs: predictions stored so far.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub predictions: Option<i64>,
    /// The answer to a sweep's submission: how many trials it expands to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trials: Option<usize>,
}

/// A job in a listing.
#[derive(Serialize, ToSchema)]
pub struct JobSummary {
    pub id: Uuid,
    pub kind: JobKind,
    pub state: JobStatus,
    pub progress: f64,
    pub attempts: i32,
    pub tags: Value,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Which of a team's jobs a listing shows, newest first (shards never: they are listed
/// with their scoring job).
#[derive(Default)]
pub struct JobFilter {
    pub state: Option<JobStatus>,
    pub kind: Option<JobKind>,
    /// Only jobs older than this (created_at, id): the previous page's last.
    pub before: Option<(DateTime<Utc>, Uuid)>,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
    /// Only jobs whose tags contain this object.
    pub tag: Option<Value>,
    pub limit: i64,
}

/// How many of `team`'s jobs (shards excepted) wait in the queue: the submission quota.
pub async fn queued(pool: &PgPool, team: Uuid) -> Result<i64> {
    let queued = sqlx::query_scalar!(r#"SELECT count(*) AS "queued!" FROM jobs WHERE team_id = $1 AND state = 'queued' AND parent_id IS NULL"#, team)
        .fetch_one(pool)
        .await?;
    Ok(queued)
}

/// The kind of `team`'s job `id`; None for unknown ids and for other teams' jobs alike.
pub async fn kind_of(pool: &PgPool, team: Uuid, id: Uuid) -> Result<Option<JobKind>> {
    let kind = sqlx::query_scalar!("SELECT kind FROM jobs WHERE id = $1 AND team_id = $2", id, team).fetch_optional(pool).await?;
    Ok(kind.as_deref().map(known))
}

/// `team`'s job `id` with its latest 50 events and what its kind adds; None for unknown
/// ids and for other teams' jobs alike.
pub async fn job(pool: &PgPool, team: Uuid, id: Uuid) -> Result<Option<Job>> {
    let Some(row) = sqlx::query!(
        "SELECT kind, state, progress, attempts, max_attempts, parameters, tags, last_error, created_at, updated_at, parent_id FROM jobs WHERE id = $1 AND team_id = $2",
        id,
        team,
    )
    .fetch_optional(pool)
    .await?
    else {
        return Ok(None);
    };
    let mut job = Job {
        id,
        kind: known(&row.kind),
        state: known(&row.state),
        progress: row.progress,
        attempts: row.attempts,
        max_attempts: row.max_attempts,
        parameters: row.parameters,
        tags: row.tags,
        last_error: row.last_error,
        created_at: row.created_at,
        updated_at: row.updated_at,
        parent_id: row.parent_id,
        events: latest_events(pool, id, 50).await?,
        model_version_id: None,
        children: None,
        chosen_model_version_id: None,
        settings: None,
        shards: None,
        predictions: None,
        trials: None,
    };
    match job.kind {
        JobKind::Train => {
            let version = sqlx::query_scalar!("SELECT id FROM model_versions WHERE training_job_id = $1", id).fetch_optional(pool).await?;
            job.model_version_id = Some(version);
        }
        JobKind::Sweep => {
            job.children = Some(sweep_children(pool, id).await?);
            let chosen = sqlx::query_scalar!("SELECT detail FROM job_events WHERE job_id = $1 AND kind = 'sweep_chosen' ORDER BY id DESC LIMIT 1", id)
                .fetch_optional(pool)
                .await?;
            job.chosen_model_version_id = Some(chosen.as_ref().map(|d| d["model_version_id"].clone()).unwrap_or(Value::Null));
            job.settings = Some(chosen.map(|d| d["settings"].clone()).unwrap_or(Value::Null));
        }
        JobKind::Score => {
            job.shards = Some(shard_counts(pool, id).await?);
            job.predictions = Some(sqlx::query_scalar!(r#"SELECT count(*) AS "n!" FROM predictions WHERE job_id = $1"#, id).fetch_one(pool).await?);
        }
        JobKind::ScoreShard => {}
    }
    Ok(Some(job))
}

async fn shard_counts(pool: &PgPool, parent: Uuid) -> Result<ShardCounts> {
    let rows = sqlx::query!(r#"SELECT state, count(*) AS "n!" FROM jobs WHERE parent_id = $1 GROUP BY state"#, parent).fetch_all(pool).await?;
    let mut shards = ShardCounts::default();
    for row in rows {
        shards.total += row.n;
        let count = match known::<JobStatus>(&row.state) {
            JobStatus::Queued => &mut shards.queued,
            JobStatus::Dispatched => &mut shards.dispatched,
            JobStatus::Running => &mut shards.running,
            JobStatus::Succeeded => &mut shards.succeeded,
            JobStatus::Failed => &mut shards.failed,
            JobStatus::Cancelled => &mut shards.cancelled,
        };
        *count = row.n;
    }
    Ok(shards)
}

/// A sweep's children: trial values, state, the last point of each validation curve,
/// the version they registered (test figures are shown, never used for the choice).
async fn sweep_children(pool: &PgPool, sweep: Uuid) -> Result<Vec<SweepChild>> {
    let rows = sqlx::query!(
        r#"SELECT c.id, c.state, c.parameters->'sweep' AS "sweep!", m.epoch AS "epoch?", m.train_loss AS "train_loss?",
                m.validation_loss AS "validation_loss?", m.accuracy AS "accuracy?", m.macro_f1 AS "macro_f1?", v.id AS "version?",
                (v.metrics->>'test_accuracy')::double precision AS test_accuracy, (v.metrics->>'test_macro_f1')::double precision AS test_macro_f1,
                (m.detail->'report'->>'f_avg')::double precision AS f_avg, (v.metrics->>'test_f_avg')::double precision AS test_f_avg
         FROM jobs c
         LEFT JOIN LATERAL (SELECT * FROM training_metrics t WHERE t.job_id = c.id ORDER BY t.epoch DESC LIMIT 1) m ON true
         LEFT JOIN model_versions v ON v.training_job_id = c.id
         WHERE c.parent_id = $1 ORDER BY (c.parameters->'sweep'->>'trial')::int"#,
        sweep,
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| SweepChild {
            job_id: r.id,
            state: r.state,
            trial: r.sweep["trial"].clone(),
            values: r.sweep["values"].clone(),
            epoch: r.epoch,
            train_loss: r.train_loss,
            validation_loss: r.validation_loss,
            validation_accuracy: r.accuracy,
            validation_macro_f1: r.macro_f1,
            validation_f_avg: r.f_avg,
            model_version_id: r.version,
            test_accuracy: r.test_accuracy,
            test_macro_f1: r.test_macro_f1,
            test_f_avg: r.test_f_avg,
        })
        .collect())
}

/// The job's latest `limit` events, oldest first.
async fn latest_events(pool: &PgPool, id: Uuid, limit: i64) -> Result<Vec<JobEvent>> {
    let rows = sqlx::query!(
        r#"SELECT at AS "at!", kind AS "kind!", detail AS "detail!"
           FROM (SELECT id, at, kind, detail FROM job_events WHERE job_id = $1 ORDER BY id DESC LIMIT $2) e ORDER BY id"#,
        id,
        limit,
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|e| JobEvent { id: None, at: e.at, kind: e.kind, detail: e.detail }).collect())
}

/// Up to `limit` of the job's events after event `after`, oldest first, with their ids.
pub async fn events(pool: &PgPool, id: Uuid, after: i64, limit: i64) -> Result<Vec<JobEvent>> {
    let rows = sqlx::query!("SELECT id, at, kind, detail FROM job_events WHERE job_id = $1 AND id > $2 ORDER BY id LIMIT $3", id, after, limit)
        .fetch_all(pool)
        .await?;
    Ok(rows.into_iter().map(|e| JobEvent { id: Some(e.id), at: e.at, kind: e.kind, detail: e.detail }).collect())
}

/// Up to `filter.limit` of `team`'s jobs that pass `filter`, newest first.
pub async fn list(pool: &PgPool, team: Uuid, filter: &JobFilter) -> Result<Vec<JobSummary>> {
    // Postgres keeps microseconds, the cursor's precision: a boundary is exact.
    let rows = sqlx::query!(
        "SELECT id, kind, state, progress, attempts, tags, last_error, created_at, updated_at FROM jobs
         WHERE team_id = $1 AND parent_id IS NULL AND ($2::text IS NULL OR state = $2) AND ($3::text IS NULL OR kind = $3)
           AND ($4::timestamptz IS NULL OR (created_at, id) < ($4, $5::uuid))
           AND ($6::timestamptz IS NULL OR created_at >= $6) AND ($7::timestamptz IS NULL OR created_at < $7)
           AND ($8::jsonb IS NULL OR tags @> $8)
         ORDER BY created_at DESC, id DESC LIMIT $9",
        team,
        filter.state.map(JobStatus::as_str),
        filter.kind.map(JobKind::as_str),
        filter.before.map(|b| b.0),
        filter.before.map(|b| b.1),
        filter.created_after,
        filter.created_before,
        filter.tag.as_ref(),
        filter.limit,
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| JobSummary {
            id: r.id,
            kind: known(&r.kind),
            state: known(&r.state),
            progress: r.progress,
            attempts: r.attempts,
            tags: r.tags,
            last_error: r.last_error,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
        .collect())
}

/// The classes of the model version a score job ran, in the order of its
/// probabilities (empty for a job that names none).
pub async fn score_labels(pool: &PgPool, id: Uuid) -> Result<Vec<String>> {
    let labels =
        sqlx::query_scalar!("SELECT m.label_names FROM jobs j JOIN model_versions m ON m.id = (j.parameters->>'model_version_id')::uuid WHERE j.id = $1", id)
            .fetch_optional(pool)
            .await?;
    Ok(labels.unwrap_or_default())
}
