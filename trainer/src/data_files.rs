//! Local mode's data: a run's files (JSONL, CSV or Parquet, one per split) read into
//! the typed rows the engine takes. A file's unreadable lines come along as refused
//! rows of their split; [`crate::progress::TerminalProgress`] writes every rejected
//! row back as `file:line N: reason`.

use std::path::{Path, PathBuf};

use absa_domain::records::{read_labelled_file, Columns};
use absa_domain::{LabelledData, Split};
use serde::{Deserialize, Serialize};

use crate::TrainError;

/// The files of a local run, and which field holds what.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataFiles {
    pub train: PathBuf,
    /// Validation file; without one, `validation_fraction` of train is held out.
    pub validation: Option<PathBuf>,
    /// Evaluated once, at the end, on the selected model.
    pub test: Option<PathBuf>,
    pub columns: Columns,
}

impl DataFiles {
    /// The files of `train`, `validation` and `test`, read with the default columns.
    pub fn new(train: impl Into<PathBuf>, validation: Option<PathBuf>, test: Option<PathBuf>) -> Self {
        Self { train: train.into(), validation, test, columns: Columns::default() }
    }

    /// The file of `split` (`None`: the run has none, e.g. validation held out of train).
    pub fn file(&self, split: Split) -> Option<&Path> {
        match split {
            Split::Train => Some(&self.train),
            Split::Validation => self.validation.as_deref(),
            Split::Test => self.test.as_deref(),
        }
    }

    /// Every file's rows; a file that cannot be opened or read fails the run, a line
    /// that cannot be a row is refused with its line while the others are read.
    pub fn read(&self) -> Result<LabelledData, TrainError> {
        let mut data = LabelledData::default();
        for split in Split::ALL {
            let Some(path) = self.file(split) else { continue };
            let (rows, errors) =
                read_labelled_file(path, &self.columns).map_err(|e| TrainError::Data { path: path.display().to_string(), reason: e.to_string() })?;
            match split {
                Split::Train => data.train = rows,
                Split::Validation => data.validation = Some(rows),
                Split::Test => data.test = Some(rows),
            }
            data.refused.extend(errors.into_iter().map(|e| (split, e)));
        }
        Ok(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_files_rows_and_refused_lines_land_in_its_split() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let train = write("train.jsonl", "{\"text\":\"good fan\",\"aspect\":\"fan\",\"start\":5,\"end\":8,\"label\":\"positive\"}\nnot json\n");
        let test = write("test.jsonl", "{\"text\":\"we must act\",\"target\":\"climate policy\",\"label\":\"favor\"}\n");
        let data = DataFiles::new(train, None, Some(test)).read().unwrap();
        assert_eq!((data.train.len(), data.validation.as_ref(), data.test.as_ref().map(Vec::len)), (1, None, Some(1)));
        assert_eq!(data.refused.len(), 1);
        assert_eq!((data.refused[0].0, data.refused[0].1.line), (Split::Train, 2));
        let missing = DataFiles::new(dir.path().join("absent.jsonl"), None, None).read().unwrap_err();
        assert!(missing.to_string().contains("absent.jsonl"), "{missing}");
    }
}
