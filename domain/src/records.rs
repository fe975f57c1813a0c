//! Labelled rows as they come from files, and the JSONL reader.

use std::io::BufRead;

use serde::Deserialize;
use thiserror::Error;

use crate::span::{AspectSpan, SpanError};

/// One aspect instance with its gold label, checked at the edge.
#[derive(Clone, Debug, PartialEq)]
pub struct LabelledRow {
    /// 1-based line in the source file, for error reports.
    pub line: usize,
    pub text: String,
    pub aspect: String,
    pub span: AspectSpan,
    pub label: String,
}

/// Why a row was not used, with its line.
#[derive(Debug, Error, PartialEq)]
#[error("line {line}: {reason}")]
pub struct RowError {
    pub line: usize,
    pub reason: String,
}

#[derive(Deserialize)]
struct RawRow {
    text: Option<String>,
    aspect: Option<String>,
    start: Option<i64>,
    end: Option<i64>,
    label: Option<String>,
}

#[derive(Debug, Error)]
enum RowProblem {
    #[error("missing field {0:?}")]
    Missing(&'static str),
    #[error("{0} is negative")]
    Negative(&'static str),
    #[error(transparent)]
    Span(#[from] SpanError),
}

/// Reads JSONL labelled rows (`text`, `aspect`, `start`, `end`, `label`). Every bad row
/// becomes a [`RowError`] naming its line; every good row is returned. Blank lines
/// are skipped. I/O errors stop the read.
pub fn read_labelled_jsonl(reader: impl BufRead) -> std::io::Result<(Vec<LabelledRow>, Vec<RowError>)> {
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    for (i, line) in reader.split(b'\n').enumerate() {
        let line_no = i + 1;
        let bytes = line?;
        let Ok(text) = std::str::from_utf8(&bytes) else {
            errors.push(RowError { line: line_no, reason: "invalid UTF-8".into() });
            continue;
        };
        let text = text.trim_end_matches('\r').trim_start_matches('\u{feff}');
        if text.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<RawRow>(text) {
            Err(e) => errors.push(RowError { line: line_no, reason: format!("not a JSON row: {e}") }),
            Ok(raw) => match check(raw, line_no) {
                Ok(row) => rows.push(row),
                Err(p) => errors.push(RowError { line: line_no, reason: p.to_string() }),
            },
        }
    }
    Ok((rows, errors))
}

fn check(raw: RawRow, line: usize) -> Result<LabelledRow, RowProblem> {
    let text = raw.text.ok_or(RowProblem::Missing("text"))?;
    let aspect = raw.aspect.ok_or(RowProblem::Missing("aspect"))?;
    let start = raw.start.ok_or(RowProblem::Missing("start"))?;
    let end = raw.end.ok_or(RowProblem::Missing("end"))?;
    let label = raw.label.filter(|l| !l.trim().is_empty()).ok_or(RowProblem::Missing("label"))?;
    let start = usize::try_from(start).map_err(|_| RowProblem::Negative("start"))?;
    let end = usize::try_from(end).map_err(|_| RowProblem::Negative("end"))?;
    let span = AspectSpan::parse(&text, Some(&aspect), start, end)?;
    Ok(LabelledRow { line, text, aspect, span, label })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_rows_are_reported_by_line_and_good_rows_kept() {
        let data = concat!(
            r#"{"text":"good screen","aspect":"screen","start":5,"end":11,"label":"positive"}"#,
            "\n",
            r#"{"text":"bad keys","aspect":"keys","start":0,"end":3,"label":"negative"}"#,
            "\n\n",
            r#"{"text":"no label","aspect":"label","start":3,"end":8}"#,
            "\n",
            "not json\n",
            r#"{"text":"","aspect":"x","start":0,"end":1,"label":"neutral"}"#,
            "\n",
            r#"{"text":"ok fan","aspect":"fan","start":-1,"end":6,"label":"neutral"}"#,
            "\r\n",
        );
        let (rows, errors) = read_labelled_jsonl(data.as_bytes()).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].line, 1);
        let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![2, 4, 5, 6, 7]);
        assert!(errors[0].reason.contains("not the aspect"), "{}", errors[0]);
        assert!(errors[1].reason.contains("missing field \"label\""), "{}", errors[1]);
        assert!(errors[3].reason.contains("empty text"), "{}", errors[3]);
        assert!(errors[4].reason.contains("start is negative"), "{}", errors[4]);
    }

    #[test]
    fn invalid_utf8_is_a_row_error() {
        let mut data = b"\xff\xfe\n".to_vec();
        data.extend_from_slice(br#"{"text":"a b","aspect":"b","start":2,"end":3,"label":"x"}"#);
        let (rows, errors) = read_labelled_jsonl(&data[..]).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(errors, vec![RowError { line: 1, reason: "invalid UTF-8".into() }]);
    }
}
