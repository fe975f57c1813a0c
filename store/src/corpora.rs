//! A team's corpora as scorers read them: a shard's documents, by seq.

use std::ops::Range;

use sqlx::PgExecutor;
use uuid::Uuid;

use crate::Result;

/// One stored document: its seq in the corpus, the uploader's id and text, and the
/// target the uploader gave (an aspect with or without its span, or a named target).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredDocument {
    pub seq: i64,
    pub external_id: String,
    pub text: String,
    pub aspect: Option<String>,
    pub span_start: Option<i32>,
    pub span_end: Option<i32>,
    pub target: Option<String>,
}

/// The documents of `corpus` with a seq in `seqs`, by seq, when the corpus is `team`'s
/// (none otherwise: a job scores its own team's data only).
pub async fn documents(executor: impl PgExecutor<'_>, team: Uuid, corpus: Uuid, seqs: Range<i64>) -> Result<Vec<StoredDocument>> {
    Ok(sqlx::query_as!(
        StoredDocument,
        "SELECT d.seq, d.external_id, d.text, d.aspect, d.span_start, d.span_end, d.target FROM documents d
         JOIN corpora c ON c.id = d.corpus_id
         WHERE d.corpus_id = $1 AND c.team_id = $2 AND d.seq >= $3 AND d.seq < $4 ORDER BY d.seq",
        corpus,
        team,
        seqs.start,
        seqs.end,
    )
    .fetch_all(executor)
    .await?)
}
