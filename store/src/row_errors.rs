//! Row errors: the rows an upload, a training job or a scoring job could not use, each
//! with its line and why. Written in the transaction of what found them, listed a page
//! at a time by line.

use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::Result;

/// What found the errors, and whose rows they are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found {
    /// An upload to a dataset.
    DatasetUpload(Uuid),
    /// An upload to a corpus.
    CorpusUpload(Uuid),
    /// A training job, in its dataset's rows (by dataset line).
    Training { job: Uuid, dataset: Uuid },
    /// A scoring job (the parent of the shard that found them), in its corpus (by seq).
    Scoring { job: Uuid, corpus: Uuid },
}

/// Whose errors a listing shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listed {
    /// A dataset's uploads (not its training jobs').
    DatasetUploads(Uuid),
    /// A corpus's uploads (not its scoring jobs').
    CorpusUploads(Uuid),
    /// A job's, and its children's (a scoring job's shards).
    Job(Uuid),
}

/// One stored error; `id` orders errors of the same line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredError {
    pub id: i64,
    pub line: i64,
    pub reason: String,
}

/// Stores `errors` (line, reason) as found by `found`, a thousand rows a statement.
/// Postgres text cannot hold NUL: a reason's NULs are written as `\0`.
pub async fn record(conn: &mut PgConnection, found: Found, errors: &[(i64, String)]) -> Result<()> {
    let (job, dataset, corpus) = match found {
        Found::DatasetUpload(id) => (None, Some(id), None),
        Found::CorpusUpload(id) => (None, None, Some(id)),
        Found::Training { job, dataset } => (Some(job), Some(dataset), None),
        Found::Scoring { job, corpus } => (Some(job), None, Some(corpus)),
    };
    for chunk in errors.chunks(1000) {
        let lines: Vec<i64> = chunk.iter().map(|(line, _)| *line).collect();
        let reasons: Vec<String> = chunk.iter().map(|(_, reason)| reason.replace('\0', "\\0")).collect();
        sqlx::query!(
            "INSERT INTO row_errors (job_id, dataset_id, corpus_id, line, reason) SELECT $1, $2, $3, * FROM UNNEST($4::bigint[], $5::text[])",
            job,
            dataset,
            corpus,
            &lines,
            &reasons,
        )
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Up to `limit` errors of `listed` after `(line, id)`, by line.
pub async fn page(executor: impl PgExecutor<'_>, listed: Listed, after: (i64, i64), limit: i64) -> Result<Vec<StoredError>> {
    let (line, id) = after;
    let rows = match listed {
        Listed::DatasetUploads(dataset) => {
            sqlx::query_as!(
                StoredError,
                "SELECT id, line, reason FROM row_errors WHERE dataset_id = $1 AND job_id IS NULL AND (line, id) > ($2, $3) ORDER BY line, id LIMIT $4",
                dataset,
                line,
                id,
                limit,
            )
            .fetch_all(executor)
            .await?
        }
        Listed::CorpusUploads(corpus) => {
            sqlx::query_as!(
                StoredError,
                "SELECT id, line, reason FROM row_errors WHERE corpus_id = $1 AND job_id IS NULL AND (line, id) > ($2, $3) ORDER BY line, id LIMIT $4",
                corpus,
                line,
                id,
                limit,
            )
            .fetch_all(executor)
            .await?
        }
        Listed::Job(job) => {
            sqlx::query_as!(
                StoredError,
                "SELECT id, line, reason FROM row_errors WHERE (job_id = $1 OR job_id IN (SELECT id FROM jobs WHERE parent_id = $1))
                   AND (line, id) > ($2, $3) ORDER BY line, id LIMIT $4",
                job,
                line,
                id,
                limit,
            )
            .fetch_all(executor)
            .await?
        }
    };
    Ok(rows)
}
