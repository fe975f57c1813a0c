//! A corpus row as the scorer reads it: an id, a text, and its targets, found the
//! first of these ways that applies. A row with `start`/`end` has one target, checked
//! against the text (and against `aspect` when present; named by `target` when given).
//! A row with a `target` and no offsets has that one target, which the text need not
//! mention. A row with an `aspect` but no offsets has a target at every occurrence of
//! that string. Otherwise the job's named targets give one target each (spanned at
//! their first mention, if any), or the lexicon every match (possibly none). Anything
//! else is a row error.

use absa_domain::readers::RawRecord;
use absa_domain::{AspectSpan, RowError};
use serde_json::Value;

use crate::targets::{self, Lexicon, NamedTargets};

/// Which fields hold what (defaults: `id`, `text`, `aspect`, `start`, `end`).
#[derive(Clone, Debug)]
pub struct FieldNames {
    pub id: String,
    pub text: String,
    pub aspect: String,
    pub start: String,
    pub end: String,
    pub target: String,
}

impl Default for FieldNames {
    fn default() -> Self {
        Self { id: "id".into(), text: "text".into(), aspect: "aspect".into(), start: "start".into(), end: "end".into(), target: "target".into() }
    }
}

/// One target of a row: its words (the aspect as it appears in the text, or a named
/// target), and its span when the text mentions it.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    pub aspect: String,
    pub span: Option<AspectSpan>,
}

/// A row ready to encode.
#[derive(Clone, Debug, PartialEq)]
pub struct ScoreRow {
    pub line: usize,
    /// The row's `id` field as given, or its line number when it has none.
    pub id: Value,
    pub text: String,
    pub targets: Vec<Target>,
}

/// A field that is absent, null or an empty string counts as missing (CSV has no null).
fn present<'a>(fields: &'a serde_json::Map<String, Value>, name: &str) -> Option<&'a Value> {
    fields.get(name).filter(|v| !v.is_null() && v.as_str() != Some(""))
}

/// An offset given as a JSON number or, from CSV, as digits.
fn offset(value: &Value, name: &str) -> Result<usize, String> {
    let parsed = match value {
        Value::Number(n) => n.as_u64().map(|v| v as usize),
        Value::String(s) => s.trim().parse::<usize>().ok(),
        _ => None,
    };
    parsed.ok_or_else(|| format!("field {name:?} is not a non-negative integer: {value}"))
}

/// A corpus row's fields, typed: what a file's record holds ([`Document::from_record`])
/// or what the service stored at upload (the worker builds it from the table's row).
#[derive(Clone, Debug, PartialEq)]
pub struct Document {
    /// Where errors point: the 1-based line (or Parquet row) of a file, the seq of a
    /// stored document.
    pub line: usize,
    /// The row's id as given, or its line number when it has none.
    pub id: Value,
    pub text: String,
    pub aspect: Option<String>,
    /// The target's character offsets (start, end), when given.
    pub span: Option<(usize, usize)>,
    /// A named target, which the text need not mention.
    pub target: Option<String>,
}

impl Document {
    /// The fields `names` names, each checked for its type; a missing `text`, a field of
    /// the wrong type, or one offset without the other is a row error.
    pub fn from_record(record: RawRecord, names: &FieldNames) -> Result<Self, RowError> {
        let line = record.line;
        let err = |reason: String| RowError { line, reason };
        let mut fields = record.fields;
        let id = present(&fields, &names.id).cloned().unwrap_or_else(|| Value::from(line));
        let text = match fields.remove(&names.text) {
            Some(Value::String(s)) if !s.is_empty() => s,
            Some(Value::String(_)) | Some(Value::Null) | None => return Err(err(format!("missing field {:?}", names.text))),
            Some(other) => return Err(err(format!("field {:?} is not a string: {other}", names.text))),
        };
        let aspect = match present(&fields, &names.aspect) {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => return Err(err(format!("field {:?} is not a string: {other}", names.aspect))),
        };
        let target = match present(&fields, &names.target) {
            None => None,
            Some(Value::String(s)) if !s.trim().is_empty() => Some(s.clone()),
            Some(other) => return Err(err(format!("field {:?} is not a non-blank string: {other}", names.target))),
        };
        let span = match (present(&fields, &names.start), present(&fields, &names.end)) {
            (Some(s), Some(e)) => Some((offset(s, &names.start).map_err(&err)?, offset(e, &names.end).map_err(&err)?)),
            (Some(_), None) => return Err(err(format!("field {:?} without {:?}", names.start, names.end))),
            (None, Some(_)) => return Err(err(format!("field {:?} without {:?}", names.end, names.start))),
            (None, None) => None,
        };
        Ok(Self { line, id, text, aspect, span, target })
    }
}

impl ScoreRow {
    /// `document` with its targets found (see the module's comment for the order).
    pub fn new(document: Document, lexicon: Option<&Lexicon>, named: Option<&NamedTargets>) -> Result<Self, RowError> {
        let Document { line, id, text, aspect, span, target } = document;
        let err = |reason: String| RowError { line, reason };
        let aspect = aspect.as_deref();
        let targets = match span {
            Some((s, e)) => {
                let span = AspectSpan::parse(&text, aspect, s, e).map_err(|e| err(e.to_string()))?;
                let surface = target.or_else(|| aspect.map(str::to_owned)).unwrap_or_else(|| text.chars().skip(s).take(e - s).collect());
                vec![Target { aspect: surface, span: Some(span) }]
            }
            None if target.is_some() => vec![Target { aspect: target.expect("checked"), span: None }],
            None => match (aspect, lexicon) {
                (None, _) if named.is_some() => named
                    .into_iter()
                    .flat_map(NamedTargets::iter)
                    .map(|t| Target { aspect: t.name.clone(), span: t.first_mention(&text).map(|f| to_target(&text, f).span.expect("found spans exist")) })
                    .collect(),
                (Some(aspect), _) => {
                    let found = targets::occurrences(&text, aspect);
                    if found.is_empty() {
                        return Err(err(format!("aspect {aspect:?} does not occur in the text")));
                    }
                    found.into_iter().map(|f| to_target(&text, f)).collect()
                }
                (None, Some(lexicon)) => lexicon.find(&text).into_iter().map(|f| to_target(&text, f)).collect(),
                (None, None) => return Err(err("no target: the row has no span, aspect or target, and the job names no targets and no lexicon".into())),
            },
        };
        Ok(Self { line, id, text, targets })
    }

    /// A file's record read by `names`, then [`ScoreRow::new`].
    pub fn parse(record: RawRecord, names: &FieldNames, lexicon: Option<&Lexicon>, named: Option<&NamedTargets>) -> Result<Self, RowError> {
        Self::new(Document::from_record(record, names)?, lexicon, named)
    }
}

fn to_target(text: &str, found: targets::Found) -> Target {
    let aspect: String = text.chars().skip(found.start).take(found.end - found.start).collect();
    let span = AspectSpan::parse(text, None, found.start, found.end).expect("found spans lie inside the text");
    Target { aspect, span: Some(span) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(value: Value) -> RawRecord {
        RawRecord { line: 7, fields: value.as_object().unwrap().clone() }
    }

    fn parse(value: Value, lexicon: Option<&Lexicon>) -> Result<ScoreRow, RowError> {
        ScoreRow::parse(record(value), &FieldNames::default(), lexicon, None)
    }

    fn spans(row: &ScoreRow) -> Vec<(String, usize, usize)> {
        row.targets.iter().map(|t| (t.aspect.clone(), t.span.unwrap().start(), t.span.unwrap().end())).collect()
    }

    #[test]
    fn a_stored_document_is_scored_as_the_record_it_was_uploaded_from() {
        let text = "The screen is dim, the screen cracked";
        let cases = [
            (json!({"id": "d1", "text": text, "aspect": "screen", "start": 4, "end": 10}), Some("screen"), Some((4, 10)), None),
            (json!({"id": "d1", "text": text, "aspect": "screen"}), Some("screen"), None, None),
            (json!({"id": "d1", "text": text, "target": "Apple"}), None, None, Some("Apple")),
        ];
        for (value, aspect, span, target) in cases {
            let stored = Document { line: 7, id: json!("d1"), text: text.into(), aspect: aspect.map(Into::into), span, target: target.map(Into::into) };
            assert_eq!(Document::from_record(record(value.clone()), &FieldNames::default()).unwrap(), stored, "{value}");
            assert_eq!(ScoreRow::new(stored, None, None).unwrap(), parse(value.clone(), None).unwrap(), "{value}");
        }
        let no_target = Document { line: 9, id: json!(9), text: text.into(), aspect: None, span: None, target: None };
        let err = ScoreRow::new(no_target, None, None).unwrap_err();
        assert_eq!(err.line, 9);
        assert!(err.reason.starts_with("no target"), "{err}");
    }

    #[test]
    fn a_row_target_or_the_jobs_named_targets_give_targets_the_text_need_not_mention() {
        let own = parse(json!({"text": "we must protect life", "target": "legalization of abortion"}), None).unwrap();
        assert_eq!(own.targets, vec![Target { aspect: "legalization of abortion".into(), span: None }]);
        let named = NamedTargets::new([("CDU".to_string(), vec!["Merz".to_string()]), ("climate".to_string(), vec![])]).unwrap();
        let row = ScoreRow::parse(record(json!({"text": "Merz spoke"})), &FieldNames::default(), None, Some(&named)).unwrap();
        let seen: Vec<(String, Option<(usize, usize)>)> = row.targets.iter().map(|t| (t.aspect.clone(), t.span.map(|s| (s.start(), s.end())))).collect();
        assert_eq!(seen, vec![("CDU".into(), Some((0, 4))), ("climate".into(), None)]);
        let spanned = parse(json!({"text": "Merz spoke", "target": "CDU", "start": 0, "end": 4}), None).unwrap();
        assert_eq!(spans(&spanned), vec![("CDU".into(), 0, 4)]);
        assert!(parse(json!({"text": "x", "target": 3}), None).unwrap_err().reason.contains("not a non-blank string"));
    }

    #[test]
    fn a_given_span_is_checked_against_text_and_aspect() {
        let row = parse(json!({"id": "r1", "text": "great fan", "aspect": "fan", "start": 6, "end": 9}), None).unwrap();
        assert_eq!((row.id.clone(), spans(&row)), (json!("r1"), vec![("fan".into(), 6, 9)]));
        let csv = parse(json!({"text": "great fan", "start": "6", "end": "9"}), None).unwrap();
        assert_eq!((csv.id.clone(), spans(&csv)), (json!(7), vec![("fan".into(), 6, 9)]));
        let mismatch = parse(json!({"text": "great fan", "aspect": "fan", "start": 0, "end": 5}), None).unwrap_err();
        assert!(mismatch.reason.contains("not the aspect"), "{mismatch}");
        let outside = parse(json!({"text": "great fan", "start": 6, "end": 12}), None).unwrap_err();
        assert!(outside.reason.contains("outside the text"), "{outside}");
        assert_eq!(outside.line, 7);
    }

    #[test]
    fn an_aspect_without_offsets_targets_every_occurrence() {
        let row = parse(json!({"text": "fan noise, fan speed", "aspect": "fan"}), None).unwrap();
        assert_eq!(spans(&row), vec![("fan".into(), 0, 3), ("fan".into(), 11, 14)]);
        let absent = parse(json!({"text": "quiet", "aspect": "fan"}), None).unwrap_err();
        assert!(absent.reason.contains("does not occur"), "{absent}");
    }

    #[test]
    fn rows_without_targets_use_the_lexicon_or_are_rejected() {
        let lexicon = Lexicon::new(["battery life", "screen"]).unwrap();
        let row = parse(json!({"text": "Battery life and SCREEN."}), Some(&lexicon)).unwrap();
        assert_eq!(spans(&row), vec![("Battery life".into(), 0, 12), ("SCREEN".into(), 17, 23)]);
        let none = parse(json!({"text": "nothing to see"}), Some(&lexicon)).unwrap();
        assert!(none.targets.is_empty());
        let err = parse(json!({"text": "nothing to see"}), None).unwrap_err();
        assert!(err.reason.starts_with("no target"), "{err}");
    }

    #[test]
    fn missing_or_malformed_fields_are_row_errors() {
        assert!(parse(json!({"aspect": "x"}), None).unwrap_err().reason.contains("missing field \"text\""));
        assert!(parse(json!({"text": "", "aspect": "x"}), None).unwrap_err().reason.contains("missing field \"text\""));
        assert!(parse(json!({"text": 5}), None).unwrap_err().reason.contains("not a string"));
        assert!(parse(json!({"text": "a b", "start": 0}), None).unwrap_err().reason.contains("without"));
        assert!(parse(json!({"text": "a b", "start": -1, "end": 1}), None).unwrap_err().reason.contains("non-negative"));
    }
}
