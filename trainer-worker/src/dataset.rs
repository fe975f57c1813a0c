//! A training job's dataset as the engine's typed rows, read from Postgres: by the
//! worker when it trains in its own process, and by every rank it launches, which
//! reads the same snapshot (the lines the worker saw) and checks it got the same rows.

use absa_domain::{AspectSpan, LabelledData, LabelledRow, RowError, Split};
use absa_store::datasets::{self, LastLines, StoredRow};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

/// Which rows a job trains on: the team's dataset up to the lines it had when the
/// attempt began, and what they hashed to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub team_id: Uuid,
    pub dataset_id: Uuid,
    pub last_lines: LastLines,
    /// [`LabelledData::sha256`] of the rows.
    pub sha256: String,
    /// Stored rows read, those the conversion refused included.
    pub rows: usize,
}

/// The dataset's rows now, and the snapshot that reads them again. A dataset that is
/// not the team's reads as no rows.
pub async fn read(pool: &PgPool, team_id: Uuid, dataset_id: Uuid) -> absa_store::Result<(LabelledData, Snapshot)> {
    let stored = datasets::labelled_rows(pool, team_id, dataset_id, None).await?;
    let last_lines = LastLines::of(&stored);
    let rows = stored.len();
    let data = labelled_data(stored);
    let snapshot = Snapshot { team_id, dataset_id, last_lines, sha256: data.sha256(), rows };
    Ok((data, snapshot))
}

/// The rows of `snapshot` (a launched rank's read), refused when they are no longer
/// those the worker read: a deleted or rewritten dataset would give the ranks
/// different batches.
pub async fn read_snapshot(pool: &PgPool, snapshot: &Snapshot) -> anyhow::Result<LabelledData> {
    let stored = datasets::labelled_rows(pool, snapshot.team_id, snapshot.dataset_id, Some(snapshot.last_lines)).await?;
    let data = labelled_data(stored);
    if data.sha256() != snapshot.sha256 {
        anyhow::bail!("dataset {}: its rows changed since the job's attempt began (reading {} rows)", snapshot.dataset_id, data.len());
    }
    Ok(data)
}

/// Stored rows as typed rows, each under its dataset line. A span its text cannot hold
/// (the upload checked it; the database does not) is refused with the line.
fn labelled_data(stored: Vec<StoredRow>) -> LabelledData {
    let mut data = LabelledData::default();
    for row in stored {
        let split: Split = row.split.parse().expect("the CHECK constraint keeps splits known");
        let line = usize::try_from(row.line).unwrap_or(0);
        let span = match (row.span_start, row.span_end) {
            (Some(start), Some(end)) => {
                match AspectSpan::parse(&row.text, None, usize::try_from(start).unwrap_or(usize::MAX), usize::try_from(end).unwrap_or(0)) {
                    Ok(span) => Some(span),
                    Err(e) => {
                        data.refused.push((split, RowError { line, reason: e.to_string() }));
                        continue;
                    }
                }
            }
            _ => None,
        };
        data.push(split, LabelledRow { line, text: row.text, target: row.target, span, label: row.label });
    }
    data
}

#[cfg(test)]
mod tests {
    use super::*;
    use absa_domain::records::{labelled_row, Columns};
    use serde_json::json;

    /// A row as the API stores it (`dataset_rows`: the target's words in `aspect`).
    fn stored(split: &str, line: i32, row: &LabelledRow) -> StoredRow {
        StoredRow {
            split: split.into(),
            line,
            text: row.text.clone(),
            target: row.target.clone(),
            span_start: row.span.map(|s| s.start() as i32),
            span_end: row.span.map(|s| s.end() as i32),
            label: row.label.clone(),
        }
    }

    #[test]
    fn stored_rows_with_and_without_spans_read_back_as_uploaded() {
        let uploaded = [
            json!({"text": "Der Lüfter ist laut", "aspect": "Lüfter", "start": 4, "end": 10, "label": "negative"}),
            json!({"text": "we must protect the unborn", "target": "legalization of abortion", "label": "against"}),
            json!({"text": "Merz said no", "target": "CDU", "aspect": "Merz", "start": 0, "end": 4, "label": "neither"}),
        ];
        let rows: Vec<LabelledRow> = uploaded.iter().map(|u| labelled_row(7, u.as_object().unwrap(), &Columns::default()).unwrap()).collect();
        let data = labelled_data(rows.iter().map(|r| stored("validation", 7, r)).collect());
        assert_eq!(data.validation.as_deref(), Some(&rows[..]));
        assert!(data.train.is_empty() && data.refused.is_empty());
    }

    #[test]
    fn a_stored_span_outside_its_text_is_refused_with_its_line_and_split() {
        let good = LabelledRow { line: 1, text: "good fan".into(), target: "fan".into(), span: None, label: "positive".into() };
        let mut bad = stored("test", 12, &good);
        (bad.span_start, bad.span_end) = (Some(5), Some(30));
        let data = labelled_data(vec![stored("train", 1, &good), bad]);
        assert_eq!(data.train, [good]);
        assert_eq!(data.test, None);
        assert_eq!(data.refused, [(Split::Test, RowError { line: 12, reason: "span 5..30 lies outside the text (8 characters)".into() })]);
    }
}
