//! Streamed uploads of labelled datasets and corpora. The body goes to a temporary file
//! (never whole into memory, capped at `max_upload_bytes`), a blocking thread reads it
//! with the domain's JSONL/CSV/Parquet readers and checks each row, and batches of good
//! rows are inserted as they come, all in one transaction: an upload lands whole or not
//! at all. Every bad row is reported with its line and reason (and stored in
//! `row_errors`); every good row is kept.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use absa_domain::readers::{self, Format, ReaderOptions};
use absa_domain::records::{labelled_row, Columns, RowError};
use absa_domain::span::AspectSpan;
use axum::body::Body;
use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde::Serialize;
use serde_json::{Map, Value};
use tokio::sync::mpsc;

use crate::error::{ApiError, ApiResult};

/// Rows per insert statement.
const BATCH_ROWS: usize = 2_000;
/// Row errors listed in an upload's answer (all are stored).
pub const LISTED_ERRORS: usize = 1_000;

/// Characters of a row error's reason: reasons quote the bad value, which can be a
/// megabyte line; the quote is cut, the line number says where the rest is.
pub const MAX_REASON_CHARS: usize = 300;

/// A row error as the API reports it: the line (1-based; a Parquet file's row) and why.
#[derive(Clone, Debug, Serialize, PartialEq, utoipa::ToSchema)]
pub struct ReportedError {
    pub line: i64,
    pub reason: String,
}

impl ReportedError {
    pub fn new(line: i64, reason: &str) -> Self {
        Self { line, reason: absa_jobs::spec::truncate(reason, MAX_REASON_CHARS) }
    }
}

impl From<RowError> for ReportedError {
    fn from(e: RowError) -> Self {
        Self::new(e.line as i64, &e.reason)
    }
}

/// An upload's row errors: all counted, the first `cap` kept (to store and list).
pub struct RowErrors {
    pub kept: Vec<ReportedError>,
    pub count: usize,
    cap: usize,
}

impl RowErrors {
    pub fn new(cap: usize) -> Self {
        Self { kept: Vec::new(), count: 0, cap }
    }

    pub fn push(&mut self, error: ReportedError) {
        self.count += 1;
        if self.kept.len() < self.cap {
            self.kept.push(error);
        }
    }
}

/// The `format` query parameter.
pub fn parse_format(format: Option<&str>) -> ApiResult<Format> {
    match format.unwrap_or("jsonl") {
        "jsonl" | "ndjson" | "json" => Ok(Format::Jsonl),
        "csv" => Ok(Format::Csv),
        "parquet" => Ok(Format::Parquet),
        other => Err(ApiError::BadRequest(format!("format {other:?}: expected jsonl, csv or parquet"))),
    }
}

/// A temporary file without a name (O_TMPFILE on Linux): the kernel frees it when its
/// last handle closes, so an API killed mid-upload or mid-export leaves nothing behind.
/// Readers that take a path get `/proc/self/fd/N`, which opens the same file.
pub struct SpoolFile {
    file: std::fs::File,
}

impl SpoolFile {
    pub fn new_in(dir: &Path) -> std::io::Result<Self> {
        Ok(Self { file: tempfile::tempfile_in(dir)? })
    }

    pub fn file_mut(&mut self) -> &mut std::fs::File {
        &mut self.file
    }

    /// A path that opens this file (with its own offset) while `self` is alive.
    pub fn path(&self) -> PathBuf {
        fd_path(&self.file)
    }

    /// A second handle, for a thread that must keep the file open on its own.
    pub fn handle(&self) -> std::io::Result<std::fs::File> {
        self.file.try_clone()
    }
}

fn fd_path(file: &std::fs::File) -> PathBuf {
    use std::os::fd::AsRawFd;
    PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()))
}

/// A spooled upload: its size and the SHA-256 of its bytes.
pub struct Spooled {
    pub bytes: u64,
    pub sha256: [u8; 32],
}

/// Streams the request body into `file`, failing with 413 past `limit` bytes, or at
/// once when the declared `Content-Length` is already over it (so the client gets the
/// answer instead of a connection closed mid-upload).
pub async fn spool(headers: &HeaderMap, body: Body, file: &mut std::fs::File, limit: u64) -> ApiResult<Spooled> {
    use sha2::Digest;
    crate::error::refuse_declared_over(headers, limit)?;
    let mut stream = body.into_data_stream();
    let mut total = 0u64;
    let mut hasher = sha2::Sha256::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::BadRequest(format!("reading the upload: {e}")))?;
        total += chunk.len() as u64;
        if total > limit {
            return Err(ApiError::TooLarge { limit });
        }
        hasher.update(&chunk);
        file.write_all(&chunk)?;
    }
    file.flush()?;
    if total == 0 {
        return Err(ApiError::BadRequest("the upload is empty".into()));
    }
    Ok(Spooled { bytes: total, sha256: hasher.finalize().into() })
}

/// What the reading thread sends: good rows in batches, and row errors.
pub enum Parsed<T> {
    Rows(Vec<T>),
    Error(RowError),
    /// The file as a whole could not be read (bad Parquet footer, I/O): nothing lands.
    Failed(String),
}

/// Reads the spooled upload on a blocking thread, checking each record with `check`;
/// good rows come back in batches, bad ones as errors naming their line.
pub fn read_rows<T: Send + 'static>(
    spooled: &SpoolFile,
    format: Format,
    options: ReaderOptions,
    check: impl Fn(usize, &Map<String, Value>) -> Result<T, RowError> + Send + 'static,
) -> std::io::Result<mpsc::Receiver<Parsed<T>>> {
    let (tx, rx) = mpsc::channel(4);
    // The thread holds its own handle, so the path stays this file's even when the
    // request is dropped before the thread opens it.
    let handle = spooled.handle()?;
    tokio::task::spawn_blocking(move || {
        let path = fd_path(&handle);
        let records = match readers::open_as(&path, format, &options) {
            Ok(r) => r,
            Err(e) => {
                let _ = tx.blocking_send(Parsed::Failed(e.to_string().replace(&path.display().to_string(), "upload")));
                return;
            }
        };
        let mut batch = Vec::with_capacity(BATCH_ROWS);
        for item in records {
            let sent = match item {
                Err(e) => tx.blocking_send(Parsed::Failed(e.to_string().replace(&path.display().to_string(), "upload"))),
                Ok(Err(row_error)) => tx.blocking_send(Parsed::Error(row_error)),
                Ok(Ok(record)) => match check(record.line, &record.fields) {
                    Ok(row) => {
                        batch.push(row);
                        if batch.len() < BATCH_ROWS {
                            continue;
                        }
                        tx.blocking_send(Parsed::Rows(std::mem::replace(&mut batch, Vec::with_capacity(BATCH_ROWS))))
                    }
                    Err(e) => tx.blocking_send(Parsed::Error(e)),
                },
            };
            if sent.is_err() {
                return; // the request went away
            }
        }
        if !batch.is_empty() {
            let _ = tx.blocking_send(Parsed::Rows(batch));
        }
    });
    Ok(rx)
}

/// Postgres text cannot hold NUL characters.
fn no_nul(line: usize, value: &str, field: &str) -> Result<(), RowError> {
    if value.contains('\0') {
        return Err(RowError { line, reason: format!("field {field:?} contains a NUL character") });
    }
    Ok(())
}

/// A labelled row checked for the database, and against the allowed labels if given.
pub fn check_labelled(
    line: usize,
    fields: &Map<String, Value>,
    columns: &Columns,
    allowed: Option<&HashSet<String>>,
) -> Result<absa_domain::records::LabelledRow, RowError> {
    let row = labelled_row(line, fields, columns)?;
    no_nul(line, &row.text, &columns.text)?;
    // The target is the target field or the aspect; an aspect is a span of the text,
    // checked above, so a NUL there is the text's.
    no_nul(line, &row.target, &columns.target)?;
    no_nul(line, &row.label, &columns.label)?;
    if let Some(allowed) = allowed {
        if !allowed.contains(&row.label) {
            let mut names: Vec<&String> = allowed.iter().collect();
            names.sort();
            return Err(RowError { line, reason: format!("unknown label {:?} (expected one of {names:?})", row.label) });
        }
    }
    Ok(row)
}

/// A document to score, checked at the edge.
#[derive(Clone, Debug, PartialEq)]
pub struct DocumentRow {
    pub line: usize,
    pub external_id: String,
    pub text: String,
    pub aspect: Option<String>,
    pub span: Option<(i32, i32)>,
    /// A target the uploader named, which need not occur in the text.
    pub target: Option<String>,
    pub published_at: Option<DateTime<Utc>>,
    pub metadata: Value,
}

const DOCUMENT_FIELDS: [&str; 7] = ["id", "text", "aspect", "start", "end", "target", "published_at"];

fn optional_offset(fields: &Map<String, Value>, name: &str) -> Result<Option<usize>, String> {
    match fields.get(name) {
        // CSV has no null: an empty field is an absent one.
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(v) if v >= 0 => Ok(Some(v as usize)),
            Some(_) => Err(format!("{name} is negative")),
            None => Err(format!("field {name:?} is not an integer")),
        },
        Some(Value::String(s)) => match s.trim().parse::<i64>() {
            Ok(v) if v >= 0 => Ok(Some(v as usize)),
            Ok(_) => Err(format!("{name} is negative")),
            Err(_) => Err(format!("field {name:?} is not an integer")),
        },
        Some(_) => Err(format!("field {name:?} is not an integer")),
    }
}

/// Checks one corpus record: `text` required; `id` (default: the line), an optional
/// aspect (`aspect`, with `start`/`end` checked against the text), an optional named
/// `target` (any words, not necessarily in the text), `published_at`; everything else
/// is kept as metadata.
pub fn check_document(line: usize, fields: &Map<String, Value>) -> Result<DocumentRow, RowError> {
    let fail = |reason: String| RowError { line, reason };
    let text = match fields.get("text") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        Some(Value::String(_)) => return Err(fail("field \"text\" is empty".into())),
        None | Some(Value::Null) => return Err(fail("missing field \"text\"".into())),
        Some(_) => return Err(fail("field \"text\" is not a string".into())),
    };
    let external_id = match fields.get("id") {
        None | Some(Value::Null) => line.to_string(),
        Some(Value::String(s)) if s.is_empty() => line.to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(_) => return Err(fail("field \"id\" is not a string or number".into())),
    };
    let aspect = match fields.get("aspect") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.clone()),
        Some(Value::String(_)) => None,
        Some(_) => return Err(fail("field \"aspect\" is not a string".into())),
    };
    let target = match fields.get("target") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.clone()),
        Some(Value::String(_)) => None,
        Some(_) => return Err(fail("field \"target\" is not a string".into())),
    };
    let start = optional_offset(fields, "start").map_err(fail)?;
    let end = optional_offset(fields, "end").map_err(fail)?;
    let span = match (start, end) {
        (None, None) => None,
        (Some(s), Some(e)) => {
            AspectSpan::parse(&text, aspect.as_deref(), s, e).map_err(|e| fail(e.to_string()))?;
            Some((i32::try_from(s).map_err(|_| fail("start is too large".into()))?, i32::try_from(e).map_err(|_| fail("end is too large".into()))?))
        }
        _ => return Err(fail("start and end must be given together".into())),
    };
    if span.is_some() && aspect.is_none() {
        return Err(fail("a span (start, end) needs its aspect".into()));
    }
    let published_at = match fields.get("published_at") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.trim().is_empty() => None,
        Some(Value::String(s)) => {
            Some(DateTime::parse_from_rfc3339(s.trim()).map_err(|e| fail(format!("published_at {s:?} is not an RFC 3339 time: {e}")))?.with_timezone(&Utc))
        }
        Some(_) => return Err(fail("field \"published_at\" is not a string".into())),
    };
    let metadata: Map<String, Value> = fields.iter().filter(|(k, _)| !DOCUMENT_FIELDS.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect();
    no_nul(line, &text, "text")?;
    no_nul(line, &external_id, "id")?;
    if let Some(a) = &aspect {
        no_nul(line, a, "aspect")?;
    }
    if let Some(t) = &target {
        no_nul(line, t, "target")?;
    }
    let metadata = Value::Object(metadata);
    if metadata.to_string().contains("\\u0000") {
        return Err(fail("metadata contains a NUL character".into()));
    }
    Ok(DocumentRow { line, external_id, text, aspect, span, target, published_at, metadata })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn documents_are_checked_field_by_field() {
        let d = check_document(3, &fields(json!({"id": 7, "text": "Great battery", "aspect": "battery", "start": 6, "end": 13, "stars": 5}))).unwrap();
        assert_eq!((d.external_id.as_str(), d.span, d.metadata.clone()), ("7", Some((6, 13)), json!({"stars": 5})));
        let d = check_document(4, &fields(json!({"text": "no target"}))).unwrap();
        assert_eq!((d.external_id.as_str(), d.aspect.clone(), d.span, d.target.clone()), ("4", None, None, None));
        // A named target need not occur in the text; it is not metadata.
        let d = check_document(5, &fields(json!({"text": "we must protect the unborn", "target": "legalization of abortion", "src": "x"}))).unwrap();
        assert_eq!((d.target.as_deref(), d.span, d.metadata.clone()), (Some("legalization of abortion"), None, json!({"src": "x"})));
        let d = check_document(6, &fields(json!({"text": "Merz said no", "target": "CDU", "aspect": "Merz", "start": 0, "end": 4}))).unwrap();
        assert_eq!((d.target.as_deref(), d.aspect.as_deref(), d.span), (Some("CDU"), Some("Merz"), Some((0, 4))));
        assert_eq!(check_document(7, &fields(json!({"text": "x", "target": ""}))).unwrap().target, None, "CSV's empty cell");
        let cases = [
            (json!({"text": ""}), "empty"),
            (json!({"txt": "x"}), "missing field \"text\""),
            (json!({"text": 5}), "not a string"),
            (json!({"text": "abc", "aspect": "bc", "start": 2, "end": 1}), ""),
            (json!({"text": "abc", "aspect": "bc", "start": -1, "end": 3}), "negative"),
            (json!({"text": "abc", "aspect": "bc", "start": 1}), "together"),
            (json!({"text": "a\u{0}b"}), "NUL"),
            (json!({"text": "abc", "published_at": "yesterday"}), "RFC 3339"),
            (json!({"text": "abc", "aspect": "zz", "start": 1, "end": 3}), ""),
            (json!({"text": "abc", "target": 7}), "field \"target\" is not a string"),
            (json!({"text": "abc", "target": "a\u{0}b"}), "field \"target\" contains a NUL"),
        ];
        for (value, reason) in cases {
            let e = check_document(9, &fields(value.clone())).unwrap_err();
            assert_eq!(e.line, 9);
            assert!(e.reason.contains(reason), "{value}: {}", e.reason);
        }
    }

    #[test]
    fn labelled_rows_can_be_limited_to_known_labels() {
        let allowed: HashSet<String> = ["positive", "negative"].iter().map(|s| s.to_string()).collect();
        let row = json!({"text": "Great battery", "aspect": "battery", "start": 6, "end": 13, "label": "positive"});
        assert!(check_labelled(1, &fields(row.clone()), &Columns::default(), Some(&allowed)).is_ok());
        let mut bad = row.clone();
        bad["label"] = json!("conflict");
        let e = check_labelled(2, &fields(bad), &Columns::default(), Some(&allowed)).unwrap_err();
        assert!(e.reason.contains("unknown label \"conflict\""), "{}", e.reason);
    }

    #[test]
    fn labelled_rows_name_a_target_with_or_without_a_span() {
        let named = json!({"text": "we must protect the unborn", "target": "legalization of abortion", "label": "against"});
        let row = check_labelled(1, &fields(named), &Columns::default(), None).unwrap();
        assert_eq!((row.target.as_str(), row.span), ("legalization of abortion", None));
        let nul = json!({"text": "x", "target": "a\u{0}b", "label": "favor"});
        let e = check_labelled(2, &fields(nul), &Columns::default(), None).unwrap_err();
        assert_eq!((e.line, e.reason.as_str()), (2, "field \"target\" contains a NUL character"));
        let e = check_labelled(3, &fields(json!({"text": "x", "label": "favor"})), &Columns::default(), None).unwrap_err();
        assert!(e.reason.starts_with("no target"), "{}", e.reason);
    }
}
