//! Writing predictions in bulk with `COPY ... FROM STDIN (FORMAT binary)`.
//!
//! Binary rather than text: no escaping of tabs, newlines or backslashes in aspects and
//! labels, no float formatting and parsing (confidences round-trip bit for bit), and
//! less work for the server per row.
//!
//! [`copy_predictions`] runs on the caller's connection, normally inside the transaction
//! that also completes the shard (`jobs::complete`): predictions' primary key is
//! `(job_id, seq, target_index)`, and writing and completing together means a
//! redelivered shard never writes twice.

use sqlx::PgConnection;
use uuid::Uuid;

use crate::{PlatformError, Result};

/// One scored target, as stored in `predictions`.
#[derive(Clone, Debug, PartialEq)]
pub struct PredictionRow {
    /// The parent `score` job (not the shard), so a corpus run's predictions share one id.
    pub job_id: Uuid,
    pub corpus_id: Uuid,
    pub seq: i64,
    /// n-th target found in the document.
    pub target_index: i32,
    pub model_version_id: Uuid,
    /// The target: the aspect as written, or a named target.
    pub aspect: String,
    /// Where the document mentions the target; `None` (NULL) for a target it does not
    /// mention. Both or neither.
    pub span_start: Option<i32>,
    pub span_end: Option<i32>,
    pub label: String,
    pub confidence: f32,
    pub probabilities: Vec<f32>,
}

const COPY_STATEMENT: &str = "COPY predictions (job_id, corpus_id, seq, target_index, model_version_id, aspect, \
     span_start, span_end, label, confidence, probabilities) FROM STDIN (FORMAT binary)";
const FIELDS: i16 = 11;
/// `float4`'s type oid, which binary arrays carry for their elements.
const FLOAT4_OID: i32 = 700;
/// Buffered bytes sent per `CopyData` message: bounded memory, few round trips.
const FLUSH_BYTES: usize = 1 << 20;

/// Writes `rows` with one `COPY` on `conn` and returns how many were written. Fails
/// before sending anything when a string holds a NUL character, which Postgres text
/// cannot store, or a span has one offset without the other. A duplicate `(job_id, seq, target_index)` fails the whole `COPY` (and
/// the caller's transaction).
pub async fn copy_predictions(conn: &mut PgConnection, rows: &[PredictionRow]) -> Result<u64> {
    if rows.is_empty() {
        return Ok(0);
    }
    // Checked up front so a bad row never leaves a half-sent COPY behind.
    for row in rows {
        for (field, value) in [("aspect", &row.aspect), ("label", &row.label)] {
            if value.contains('\0') {
                return Err(PlatformError::InvalidData(format!(
                    "prediction (seq {}, target {}): {field} contains a NUL character, which Postgres text cannot store",
                    row.seq, row.target_index
                )));
            }
        }
        if row.span_start.is_some() != row.span_end.is_some() {
            return Err(PlatformError::InvalidData(format!(
                "prediction (seq {}, target {}): span {:?}..{:?}: give both offsets or neither",
                row.seq, row.target_index, row.span_start, row.span_end
            )));
        }
    }
    let mut copy = conn.copy_in_raw(COPY_STATEMENT).await?;
    let mut buf = Vec::with_capacity(FLUSH_BYTES + 4096);
    // Header: signature, flags, header-extension length.
    buf.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    buf.extend_from_slice(&0i32.to_be_bytes());
    buf.extend_from_slice(&0i32.to_be_bytes());
    for row in rows {
        encode_row(&mut buf, row);
        if buf.len() >= FLUSH_BYTES {
            // On error, dropping `copy` sends CopyFail: the COPY writes nothing.
            copy.send(buf.as_slice()).await?;
            buf.clear();
        }
    }
    buf.extend_from_slice(&(-1i16).to_be_bytes()); // trailer
    copy.send(buf.as_slice()).await?;
    Ok(copy.finish().await?)
}

/// One tuple: field count, then each field as length + big-endian value.
fn encode_row(buf: &mut Vec<u8>, row: &PredictionRow) {
    buf.extend_from_slice(&FIELDS.to_be_bytes());
    field(buf, row.job_id.as_bytes());
    field(buf, row.corpus_id.as_bytes());
    field(buf, &row.seq.to_be_bytes());
    field(buf, &row.target_index.to_be_bytes());
    field(buf, row.model_version_id.as_bytes());
    field(buf, row.aspect.as_bytes());
    optional_i32(buf, row.span_start);
    optional_i32(buf, row.span_end);
    field(buf, row.label.as_bytes());
    field(buf, &row.confidence.to_be_bytes());
    // real[]: dimensions, has-nulls flag, element oid, (size, lower bound) per dimension,
    // then each element with its length. An empty array has zero dimensions.
    let n = row.probabilities.len();
    let dims = i32::from(n > 0);
    let len = 12 + 8 * dims as usize + 8 * n;
    buf.extend_from_slice(&(len as i32).to_be_bytes());
    buf.extend_from_slice(&dims.to_be_bytes());
    buf.extend_from_slice(&0i32.to_be_bytes());
    buf.extend_from_slice(&FLOAT4_OID.to_be_bytes());
    if n > 0 {
        buf.extend_from_slice(&(n as i32).to_be_bytes());
        buf.extend_from_slice(&1i32.to_be_bytes());
    }
    for p in &row.probabilities {
        buf.extend_from_slice(&4i32.to_be_bytes());
        buf.extend_from_slice(&p.to_be_bytes());
    }
}

fn field(buf: &mut Vec<u8>, value: &[u8]) {
    buf.extend_from_slice(&(value.len() as i32).to_be_bytes());
    buf.extend_from_slice(value);
}

/// An integer field that may be NULL: binary COPY writes NULL as length -1, no bytes.
fn optional_i32(buf: &mut Vec<u8>, value: Option<i32>) {
    match value {
        Some(v) => field(buf, &v.to_be_bytes()),
        None => buf.extend_from_slice(&(-1i32).to_be_bytes()),
    }
}
