//! A team's labelled datasets as trainers read them: the rows the API stored, each
//! split up to the line a job's snapshot ends at (an upload may append lines while
//! a job trains, and every rank of the job must read the same rows).

use serde::{Deserialize, Serialize};
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::Result;

/// One stored labelled row, as the upload checked it: `target` holds the target's
/// words, the span (when the row has one) where the text mentions it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRow {
    pub split: String,
    pub line: i32,
    pub text: String,
    pub target: String,
    pub span_start: Option<i32>,
    pub span_end: Option<i32>,
    pub label: String,
}

/// The last line of each split a job reads (0: none).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastLines {
    pub train: i32,
    pub validation: i32,
    pub test: i32,
}

impl LastLines {
    /// The last line of each split among `rows`.
    pub fn of(rows: &[StoredRow]) -> Self {
        let mut last = Self::default();
        for row in rows {
            let split = match row.split.as_str() {
                "train" => &mut last.train,
                "validation" => &mut last.validation,
                _ => &mut last.test,
            };
            *split = (*split).max(row.line);
        }
        last
    }
}

/// The dataset's rows in split and line order, each split up to its line in `upto`
/// (all of them without), when the dataset is `team_id`'s: a job trains on its own
/// team's data only (none otherwise).
pub async fn labelled_rows(executor: impl PgExecutor<'_>, team_id: Uuid, dataset_id: Uuid, upto: Option<LastLines>) -> Result<Vec<StoredRow>> {
    let upto = upto.map(|l| [l.train, l.validation, l.test]);
    let rows = sqlx::query_as!(
        StoredRow,
        r#"SELECT r.split, r.line, r.text, r.aspect AS target, r.span_start, r.span_end, r.label FROM dataset_rows r
           JOIN datasets d ON d.id = r.dataset_id
           WHERE r.dataset_id = $1 AND d.team_id = $2
             AND ($3::int[] IS NULL OR r.line <= ($3::int[])[CASE r.split WHEN 'train' THEN 1 WHEN 'validation' THEN 2 ELSE 3 END])
           ORDER BY r.split, r.line"#,
        dataset_id,
        team_id,
        upto.as_ref().map(|l| &l[..]),
    )
    .fetch_all(executor)
    .await?;
    Ok(rows)
}
