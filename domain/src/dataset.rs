//! A labelled dataset as a training run reads it: typed rows by split, and the rows
//! refused on the way in, with their lines. Local mode fills it from files, the
//! trainer worker from the rows stored in Postgres; the engine takes it as it is.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{LabelledRow, RowError};

/// The part of a dataset a row belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    Train,
    Validation,
    Test,
}

impl Split {
    pub const ALL: [Split; 3] = [Split::Train, Split::Validation, Split::Test];

    /// The name the API, the database and the files use.
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Validation => "validation",
            Split::Test => "test",
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Split {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Split::ALL.into_iter().find(|split| split.as_str() == s).ok_or_else(|| format!("unknown split {s:?} (train, validation, test)"))
    }
}

/// A run's rows. `validation` and `test` are `None` when the dataset has no such split
/// (the engine then holds a share of train out for validation); `refused` holds rows
/// that never became rows (a file's unreadable line), reported with the engine's own.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LabelledData {
    pub train: Vec<LabelledRow>,
    pub validation: Option<Vec<LabelledRow>>,
    pub test: Option<Vec<LabelledRow>>,
    pub refused: Vec<(Split, RowError)>,
}

impl LabelledData {
    /// The rows of `split`, when the dataset has it.
    pub fn rows(&self, split: Split) -> Option<&[LabelledRow]> {
        match split {
            Split::Train => Some(&self.train),
            Split::Validation => self.validation.as_deref(),
            Split::Test => self.test.as_deref(),
        }
    }

    /// Adds `row` to `split` (creating the split).
    pub fn push(&mut self, split: Split, row: LabelledRow) {
        match split {
            Split::Train => self.train.push(row),
            Split::Validation => self.validation.get_or_insert_with(Vec::new).push(row),
            Split::Test => self.test.get_or_insert_with(Vec::new).push(row),
        }
    }

    /// Rows of every split.
    pub fn len(&self) -> usize {
        Split::ALL.into_iter().filter_map(|s| self.rows(s)).map(<[LabelledRow]>::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// SHA-256 of every split's rows, train then validation then test: the snapshot a
    /// model version names in its lineage.
    pub fn sha256(&self) -> String {
        let mut hasher = Sha256::new();
        for split in Split::ALL {
            if let Some(rows) = self.rows(split) {
                hasher.update(split.as_str());
                hash_rows(&mut hasher, rows);
            }
        }
        format!("{:x}", hasher.finalize())
    }
}

/// SHA-256 of `rows` as rows (line, text, target, span, label), not of the bytes they
/// were read from: the same rows from JSONL, CSV, Parquet or Postgres hash alike.
pub fn rows_sha256(rows: &[LabelledRow]) -> String {
    let mut hasher = Sha256::new();
    hash_rows(&mut hasher, rows);
    format!("{:x}", hasher.finalize())
}

fn hash_rows(hasher: &mut Sha256, rows: &[LabelledRow]) {
    // Lengths before strings: no two different rows hash the same bytes.
    let field = |hasher: &mut Sha256, s: &str| {
        hasher.update((s.len() as u64).to_le_bytes());
        hasher.update(s);
    };
    for row in rows {
        hasher.update((row.line as u64).to_le_bytes());
        field(hasher, &row.text);
        field(hasher, &row.target);
        match row.span {
            Some(span) => {
                hasher.update([1]);
                hasher.update((span.start() as u64).to_le_bytes());
                hasher.update((span.end() as u64).to_le_bytes());
            }
            None => hasher.update([0]),
        }
        field(hasher, &row.label);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AspectSpan;

    fn row(line: usize, text: &str, target: &str, span: Option<(usize, usize)>, label: &str) -> LabelledRow {
        let span = span.map(|(s, e)| AspectSpan::parse(text, None, s, e).unwrap());
        LabelledRow { line, text: text.into(), target: target.into(), span, label: label.into() }
    }

    #[test]
    fn split_names_read_back() {
        for split in Split::ALL {
            assert_eq!(split.as_str().parse::<Split>(), Ok(split));
        }
        assert!("dev".parse::<Split>().unwrap_err().contains("\"dev\""));
    }

    #[test]
    fn the_rows_hash_changes_with_any_field_and_not_with_the_source() {
        let base = vec![row(1, "good fan", "fan", Some((5, 8)), "positive"), row(2, "loud", "fan", None, "negative")];
        let hash = rows_sha256(&base);
        assert_eq!(hash, rows_sha256(&base.clone()), "the same rows, the same hash");
        let changed = [
            vec![row(3, "good fan", "fan", Some((5, 8)), "positive"), base[1].clone()],
            vec![row(1, "good fan", "fan", Some((5, 7)), "positive"), base[1].clone()],
            vec![row(1, "good fan", "fan", None, "positive"), base[1].clone()],
            vec![base[0].clone(), row(2, "loud", "fan", None, "neutral")],
            vec![base[0].clone(), row(2, "lou", "dfan", None, "negative")],
            vec![base[0].clone()],
        ];
        for rows in changed {
            assert_ne!(rows_sha256(&rows), hash, "{rows:?}");
        }
    }

    #[test]
    fn the_snapshot_hash_tells_the_splits_apart() {
        let rows = vec![row(1, "good fan", "fan", Some((5, 8)), "positive")];
        let as_train = LabelledData { train: rows.clone(), ..LabelledData::default() };
        let as_test = LabelledData { test: Some(rows.clone()), ..LabelledData::default() };
        assert_ne!(as_train.sha256(), as_test.sha256());
        let mut pushed = LabelledData::default();
        pushed.push(Split::Train, rows[0].clone());
        assert_eq!(pushed, as_train);
        assert_eq!((pushed.len(), pushed.rows(Split::Validation)), (1, None));
    }
}
