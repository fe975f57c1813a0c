//! Labelled rows as they come from files, and the JSONL reader.

use std::io::BufRead;
use std::path::Path;

use crate::readers::{self, ReadError, ReaderOptions, Records};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use thiserror::Error;

use crate::span::{AspectSpan, SpanError};

/// One labelled instance, checked at the edge: a text, what the label is about and
/// the label. The target is either mentioned in the text at a span (an aspect, or a
/// stance target the text names) or only named (a stance target the text may never
/// mention); one dataset may mix both.
#[derive(Clone, Debug, PartialEq)]
pub struct LabelledRow {
    /// 1-based line in its source (a file's line, a stored dataset's line), for error
    /// reports.
    pub line: usize,
    pub text: String,
    /// The target's words: the row's `target` field, else the aspect as written.
    pub target: String,
    /// Where the text mentions the target, when the row gives offsets.
    pub span: Option<AspectSpan>,
    pub label: String,
}

/// Why a row was not used, with its line.
#[derive(Clone, Debug, Error, PartialEq, Serialize, Deserialize)]
#[error("line {line}: {reason}")]
pub struct RowError {
    pub line: usize,
    pub reason: String,
}

/// Which field of a record holds what (configurable for CSV and Parquet sources).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Columns {
    pub text: String,
    pub aspect: String,
    pub start: String,
    pub end: String,
    /// A target that need not occur in the text (stance toward a party, a policy).
    pub target: String,
    pub label: String,
}

impl Default for Columns {
    fn default() -> Self {
        Self { text: "text".into(), aspect: "aspect".into(), start: "start".into(), end: "end".into(), target: "target".into(), label: "label".into() }
    }
}

#[derive(Debug, Error)]
enum RowProblem {
    #[error("missing field {0:?}")]
    Missing(String),
    #[error("field {0:?} is not {1}")]
    WrongType(String, &'static str),
    #[error("{0} is negative")]
    Negative(String),
    #[error("no target: give {target:?}, or {aspect:?} with {start:?}/{end:?}")]
    NoTarget { target: String, aspect: String, start: String, end: String },
    #[error("field {0:?} without {1:?}")]
    HalfSpan(String, String),
    #[error(transparent)]
    Span(#[from] SpanError),
}

/// A field that is absent, null or (as CSV writes a missing cell) an empty string.
fn absent(fields: &Map<String, Value>, name: &str) -> bool {
    matches!(fields.get(name), None | Some(Value::Null)) || fields.get(name).and_then(Value::as_str).is_some_and(|s| s.trim().is_empty())
}

fn string_field(fields: &Map<String, Value>, name: &str) -> Result<String, RowProblem> {
    match fields.get(name) {
        None | Some(Value::Null) => Err(RowProblem::Missing(name.into())),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        Some(_) => Err(RowProblem::WrongType(name.into(), "a string")),
    }
}

fn offset_field(fields: &Map<String, Value>, name: &str) -> Result<usize, RowProblem> {
    let value = match fields.get(name) {
        None | Some(Value::Null) => return Err(RowProblem::Missing(name.into())),
        Some(Value::Number(n)) => n.as_i64().ok_or_else(|| RowProblem::WrongType(name.into(), "an integer"))?,
        Some(Value::String(s)) => s.trim().parse::<i64>().map_err(|_| RowProblem::WrongType(name.into(), "an integer"))?,
        Some(_) => return Err(RowProblem::WrongType(name.into(), "an integer")),
    };
    usize::try_from(value).map_err(|_| RowProblem::Negative(name.into()))
}

/// Checks one record's fields and builds the row, or says why not.
pub fn labelled_row(line: usize, fields: &Map<String, Value>, columns: &Columns) -> Result<LabelledRow, RowError> {
    let build = || -> Result<LabelledRow, RowProblem> {
        let text = string_field(fields, &columns.text)?;
        let label = string_field(fields, &columns.label)?;
        if label.trim().is_empty() {
            return Err(RowProblem::Missing(columns.label.clone()));
        }
        let target = (!absent(fields, &columns.target)).then(|| string_field(fields, &columns.target)).transpose()?;
        let (span, mention) = match (absent(fields, &columns.start), absent(fields, &columns.end)) {
            (false, false) => {
                let aspect = string_field(fields, &columns.aspect)?;
                let span = AspectSpan::parse(&text, Some(&aspect), offset_field(fields, &columns.start)?, offset_field(fields, &columns.end)?)?;
                (Some(span), Some(aspect))
            }
            (false, true) => return Err(RowProblem::HalfSpan(columns.start.clone(), columns.end.clone())),
            (true, false) => return Err(RowProblem::HalfSpan(columns.end.clone(), columns.start.clone())),
            (true, true) if target.is_some() => (None, None),
            (true, true) if !absent(fields, &columns.aspect) => return Err(RowProblem::Missing(columns.start.clone())),
            (true, true) => {
                let c = columns.clone();
                return Err(RowProblem::NoTarget { target: c.target, aspect: c.aspect, start: c.start, end: c.end });
            }
        };
        if text.trim().is_empty() {
            return Err(RowProblem::Span(SpanError::EmptyText));
        }
        let target = target.or(mention).expect("a row without a span has a target");
        Ok(LabelledRow { line, text, target, span, label })
    };
    build().map_err(|p| RowError { line, reason: p.to_string() })
}

/// Labelled rows from a record stream: every bad row becomes a [`RowError`] naming its
/// line, every good row is returned; a file-level failure stops the read.
pub fn collect_labelled(records: Records, columns: &Columns) -> Result<(Vec<LabelledRow>, Vec<RowError>), ReadError> {
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    for item in records {
        match item? {
            Ok(record) => match labelled_row(record.line, &record.fields, columns) {
                Ok(row) => rows.push(row),
                Err(e) => errors.push(e),
            },
            Err(e) => errors.push(e),
        }
    }
    Ok((rows, errors))
}

/// Labelled rows from a JSONL, CSV or Parquet file (format by extension).
pub fn read_labelled_file(path: &Path, columns: &Columns) -> Result<(Vec<LabelledRow>, Vec<RowError>), ReadError> {
    collect_labelled(readers::open(path, &ReaderOptions::default())?, columns)
}

/// Labelled rows from JSONL text.
pub fn read_labelled_jsonl(reader: impl BufRead + Send + 'static, columns: &Columns) -> Result<(Vec<LabelledRow>, Vec<RowError>), ReadError> {
    collect_labelled(readers::jsonl(reader, &ReaderOptions::default()), columns)
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
        let (rows, errors) = read_labelled_jsonl(std::io::Cursor::new(data.as_bytes().to_vec()), &Columns::default()).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].line, 1);
        let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![2, 4, 5, 6, 7]);
        assert!(errors[0].reason.contains("not the aspect"), "{}", errors[0]);
        assert!(errors[1].reason.contains("missing field \"label\""), "{}", errors[1]);
        assert!(errors[2].reason.contains("not JSON"), "{}", errors[2]);
        assert!(errors[3].reason.contains("empty text"), "{}", errors[3]);
        assert!(errors[4].reason.contains("start is negative"), "{}", errors[4]);
    }

    #[test]
    fn invalid_utf8_is_a_row_error() {
        let mut data = b"\xff\xfe\n".to_vec();
        data.extend_from_slice(br#"{"text":"a b","aspect":"b","start":2,"end":3,"label":"x"}"#);
        let (rows, errors) = read_labelled_jsonl(std::io::Cursor::new(data), &Columns::default()).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(errors, vec![RowError { line: 1, reason: "invalid UTF-8".into() }]);
    }
}

#[cfg(test)]
mod target_tests {
    use super::*;

    fn read(data: &str) -> (Vec<LabelledRow>, Vec<RowError>) {
        read_labelled_jsonl(std::io::Cursor::new(data.as_bytes().to_vec()), &Columns::default()).unwrap()
    }

    #[test]
    fn named_and_spanned_targets_mix_in_one_file() {
        let (rows, errors) = read(concat!(
            r#"{"text":"we must protect the unborn","target":"legalization of abortion","label":"against"}"#,
            "\n",
            r#"{"text":"Merz said no","target":"CDU","aspect":"Merz","start":0,"end":4,"label":"neither"}"#,
            "\n",
            r#"{"text":"good fan","aspect":"fan","start":5,"end":8,"label":"positive"}"#,
            "\n",
        ));
        assert!(errors.is_empty(), "{errors:?}");
        let seen: Vec<(&str, Option<(usize, usize)>)> = rows.iter().map(|r| (r.target.as_str(), r.span.map(|s| (s.start(), s.end())))).collect();
        assert_eq!(seen, vec![("legalization of abortion", None), ("CDU", Some((0, 4))), ("fan", Some((5, 8)))]);
    }

    #[test]
    fn a_row_without_any_target_or_with_half_a_span_is_an_error_naming_the_fields() {
        let (rows, errors) = read(concat!(
            r#"{"text":"no target here","label":"favor"}"#,
            "\n",
            r#"{"text":"fan","target":"x","start":0,"label":"favor"}"#,
            "\n",
            r#"{"text":"fan","aspect":"fan","label":"favor"}"#,
            "\n",
            r#"{"text":"","target":"x","label":"favor"}"#,
            "\n",
        ));
        assert!(rows.is_empty());
        let reasons: Vec<&str> = errors.iter().map(|e| e.reason.as_str()).collect();
        assert_eq!(
            reasons,
            vec![
                "no target: give \"target\", or \"aspect\" with \"start\"/\"end\"",
                "field \"start\" without \"end\"",
                "missing field \"start\"",
                "empty text"
            ]
        );
    }
}

#[cfg(test)]
mod column_tests {
    use super::*;

    #[test]
    fn configured_columns_and_string_offsets_are_read() {
        let columns = Columns { text: "sentence".into(), label: "polarity".into(), ..Default::default() };
        let data = r#"{"sentence":"nice fan","aspect":"fan","start":"5","end":"8","polarity":"positive"}"#;
        let (rows, errors) = read_labelled_jsonl(std::io::Cursor::new(data.as_bytes().to_vec()), &columns).unwrap();
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!((rows[0].span.unwrap().start(), rows[0].label.as_str()), (5, "positive"));
    }

    #[test]
    fn a_wrong_type_is_named() {
        let data = r#"{"text":"nice fan","aspect":"fan","start":[5],"end":8,"label":"positive"}"#;
        let (_, errors) = read_labelled_jsonl(std::io::Cursor::new(data.as_bytes().to_vec()), &Columns::default()).unwrap();
        assert_eq!(errors[0].reason, "field \"start\" is not an integer");
    }
}

#[cfg(test)]
mod file_tests {
    use super::*;

    #[test]
    fn labelled_rows_are_read_from_csv_with_configured_columns() {
        let path = std::env::temp_dir().join(format!("absa-labelled-{}.csv", std::process::id()));
        std::fs::write(&path, "sentence,aspect,from,to,polarity\n\"Great, quiet fan\",fan,13,16,positive\nbad row,x,0,99,negative\n").unwrap();
        let columns = Columns { text: "sentence".into(), start: "from".into(), end: "to".into(), label: "polarity".into(), ..Default::default() };
        let (rows, errors) = read_labelled_file(&path, &columns).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].target.as_str(), rows[0].span.unwrap().start(), rows[0].line), ("fan", 13, 2));
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].line, 3);
        assert!(errors[0].reason.contains("outside the text"), "{}", errors[0]);
        std::fs::remove_file(path).unwrap();
    }
}
