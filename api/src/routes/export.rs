//! `GET /v1/jobs/{id}/predictions`: a scoring job's predictions, streamed as CSV (rows
//! go out as they are read) or Parquet (written to a temporary file page by page, then
//! streamed), so memory stays flat whatever the corpus size. `span_start`/`span_end`
//! are empty (CSV) or null (Parquet) for a target the document does not mention. After
//! the fixed columns comes one `prob_<label>` column per class of the job's model version
//! (its label order): the class probabilities the scorer stored.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::sync::Arc;

use absa_jobs::JobKind;
use absa_store::jobs::views;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::Response;
use futures_util::StreamExt;
use parquet::basic::{Compression, ConvertedType, Repetition, Type as PhysicalType, ZstdLevel};
use parquet::data_type::{ByteArray, ByteArrayType, FloatType, Int32Type, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::Type;
use serde::Deserialize;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};

/// Rows per Parquet row group (and per page read from Postgres).
const PAGE: i64 = 50_000;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    /// csv (default) or parquet.
    format: Option<String>,
}

type PredictionRow = (String, i64, i32, String, Option<i32>, Option<i32>, String, f32, Uuid, Vec<f32>);

/// The score job's predictions in (seq, target_index) order, a page at a time after `after`.
const PAGE_SQL: &str = "SELECT d.external_id, p.seq, p.target_index, p.aspect, p.span_start, p.span_end, p.label, p.confidence, p.model_version_id,
            p.probabilities
     FROM predictions p JOIN documents d ON d.corpus_id = p.corpus_id AND d.seq = p.seq
     WHERE p.job_id = $1 AND (p.seq, p.target_index) > ($2, $3)
     ORDER BY p.seq, p.target_index LIMIT $4";

const COLUMNS: [&str; 9] = ["external_id", "seq", "target_index", "aspect", "span_start", "span_end", "label", "confidence", "model_version_id"];

/// A score job's predictions, streamed: one row per (document, target), then a
/// `prob_<label>` column per class of the model version.
#[utoipa::path(get, path = "/jobs/{id}/predictions", tag = "jobs", params(("id" = Uuid, Path, description = "the score job's id"), ExportQuery),
    responses((status = 200, description = "the predictions as CSV or Parquet", content(
        (String = "text/csv"), (inline(crate::openapi::Bytes) = "application/vnd.apache.parquet")))))]
pub async fn export_predictions(State(state): State<AppState>, caller: Caller, Path(id): Path<Uuid>, Query(q): Query<ExportQuery>) -> ApiResult<Response> {
    match views::kind_of(&state.pool, caller.team_id, id).await? {
        None => return Err(ApiError::NotFound(format!("job {id}"))),
        Some(JobKind::Score) => {}
        Some(other) => return Err(ApiError::BadRequest(format!("job {id} is a {} job; predictions belong to score jobs", other.as_str()))),
    }
    let labels = views::score_labels(&state.pool, id).await?;
    match q.format.as_deref().unwrap_or("csv") {
        "csv" => Ok(csv_response(state, id, labels)),
        "parquet" => parquet_response(state, id, &labels).await,
        other => Err(ApiError::BadRequest(format!("format {other:?}: expected csv or parquet"))),
    }
}

async fn page(state: &AppState, job: Uuid, after: (i64, i32)) -> Result<Vec<PredictionRow>, sqlx::Error> {
    sqlx::query_as(PAGE_SQL).bind(job).bind(after.0).bind(after.1).bind(PAGE).fetch_all(&state.pool).await
}

/// The probability columns' names: `prob_` and each label, as local scoring's Parquet names them.
fn probability_columns(labels: &[String]) -> Vec<String> {
    labels.iter().map(|l| format!("prob_{l}")).collect()
}

/// Row `r`'s probability of class `i` (NaN if the scorer stored fewer classes).
fn probability(r: &PredictionRow, i: usize) -> f32 {
    r.9.get(i).copied().unwrap_or(f32::NAN)
}

fn csv_response(state: AppState, job: Uuid, labels: Vec<String>) -> Response {
    let (tx, rx) = mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    tokio::spawn(async move {
        let mut header = csv::Writer::from_writer(Vec::new());
        let _ = header.write_record(COLUMNS.iter().map(|c| c.to_string()).chain(probability_columns(&labels)));
        if tx.send(Ok(header.into_inner().unwrap_or_default())).await.is_err() {
            return;
        }
        let mut after = (-1i64, -1i32);
        loop {
            let rows = match page(&state, job, after).await {
                Ok(rows) => rows,
                Err(e) => {
                    // The client sees a truncated body, never a silently short file.
                    let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                    return;
                }
            };
            let mut out = csv::Writer::from_writer(Vec::with_capacity(rows.len() * 96));
            let offset = |v: Option<i32>| v.map(|v| v.to_string()).unwrap_or_default();
            for r in &rows {
                let probabilities: Vec<String> = (0..labels.len()).map(|i| probability(r, i).to_string()).collect();
                let fixed = [r.0.as_str(), &r.1.to_string(), &r.2.to_string(), &r.3, &offset(r.4), &offset(r.5), &r.6, &r.7.to_string(), &r.8.to_string()];
                let _ = out.write_record(fixed.into_iter().chain(probabilities.iter().map(String::as_str)));
            }
            let chunk = out.into_inner().unwrap_or_default();
            if tx.send(Ok(chunk)).await.is_err() {
                return;
            }
            match rows.last() {
                Some(last) if rows.len() as i64 == PAGE => after = (last.1, last.2),
                _ => return,
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/csv; charset=utf-8")
        .header(header::CONTENT_DISPOSITION, format!("attachment; filename=\"predictions-{job}.csv\""))
        .body(Body::from_stream(stream))
        .expect("a valid response")
}

fn column(name: &str, physical: PhysicalType, converted: ConvertedType) -> Arc<Type> {
    column_with(name, physical, converted, Repetition::REQUIRED)
}

fn column_with(name: &str, physical: PhysicalType, converted: ConvertedType, repetition: Repetition) -> Arc<Type> {
    Arc::new(Type::primitive_type_builder(name, physical).with_repetition(repetition).with_converted_type(converted).build().expect("a valid column"))
}

/// An optional column's present values and its definition levels (1 present, 0 null).
fn optional_values(values: impl Iterator<Item = Option<i32>>) -> (Vec<i32>, Vec<i16>) {
    let (mut present, mut levels) = (Vec::new(), Vec::new());
    for v in values {
        levels.push(i16::from(v.is_some()));
        present.extend(v);
    }
    (present, levels)
}

/// The export's Parquet schema: [`COLUMNS`], the span optional, then a float column per
/// class.
fn schema(labels: &[String]) -> Arc<Type> {
    let mut fields = vec![
        column("external_id", PhysicalType::BYTE_ARRAY, ConvertedType::UTF8),
        column("seq", PhysicalType::INT64, ConvertedType::NONE),
        column("target_index", PhysicalType::INT32, ConvertedType::NONE),
        column("aspect", PhysicalType::BYTE_ARRAY, ConvertedType::UTF8),
        column_with("span_start", PhysicalType::INT32, ConvertedType::NONE, Repetition::OPTIONAL),
        column_with("span_end", PhysicalType::INT32, ConvertedType::NONE, Repetition::OPTIONAL),
        column("label", PhysicalType::BYTE_ARRAY, ConvertedType::UTF8),
        column("confidence", PhysicalType::FLOAT, ConvertedType::NONE),
        column("model_version_id", PhysicalType::BYTE_ARRAY, ConvertedType::UTF8),
    ];
    fields.extend(probability_columns(labels).iter().map(|name| column(name, PhysicalType::FLOAT, ConvertedType::NONE)));
    Arc::new(Type::group_type_builder("prediction").with_fields(fields).build().expect("a valid schema"))
}

fn write_row_group(writer: &mut SerializedFileWriter<BufWriter<File>>, rows: &[PredictionRow], classes: usize) -> parquet::errors::Result<()> {
    let text = |f: &dyn Fn(&PredictionRow) -> String| -> Vec<ByteArray> { rows.iter().map(|r| ByteArray::from(f(r).into_bytes())).collect() };
    let mut group = writer.next_row_group()?;
    macro_rules! put {
        ($kind:ty, $values:expr) => {{
            put!($kind, $values, None)
        }};
        ($kind:ty, $values:expr, $levels:expr) => {{
            let mut col = group.next_column()?.expect("the schema has this column");
            col.typed::<$kind>().write_batch(&$values, $levels, None)?;
            col.close()?;
        }};
    }
    put!(ByteArrayType, text(&|r| r.0.clone()));
    put!(Int64Type, rows.iter().map(|r| r.1).collect::<Vec<_>>());
    put!(Int32Type, rows.iter().map(|r| r.2).collect::<Vec<_>>());
    put!(ByteArrayType, text(&|r| r.3.clone()));
    let (starts, start_levels) = optional_values(rows.iter().map(|r| r.4));
    put!(Int32Type, starts, Some(&start_levels));
    let (ends, end_levels) = optional_values(rows.iter().map(|r| r.5));
    put!(Int32Type, ends, Some(&end_levels));
    put!(ByteArrayType, text(&|r| r.6.clone()));
    put!(FloatType, rows.iter().map(|r| r.7).collect::<Vec<_>>());
    put!(ByteArrayType, text(&|r| r.8.to_string()));
    for i in 0..classes {
        put!(FloatType, rows.iter().map(|r| probability(r, i)).collect::<Vec<_>>());
    }
    group.close()?;
    Ok(())
}

async fn parquet_response(state: AppState, job: Uuid, labels: &[String]) -> ApiResult<Response> {
    let file = crate::uploads::SpoolFile::new_in(&state.upload_dir)?;
    let props = Arc::new(WriterProperties::builder().set_compression(Compression::ZSTD(ZstdLevel::default())).build());
    let parquet_err = |e: parquet::errors::ParquetError| ApiError::Internal(format!("writing Parquet: {e}"));
    let mut writer = SerializedFileWriter::new(BufWriter::new(file.handle()?), schema(labels), props).map_err(parquet_err)?;
    let mut after = (-1i64, -1i32);
    loop {
        let rows = page(&state, job, after).await?;
        if !rows.is_empty() {
            write_row_group(&mut writer, &rows, labels.len()).map_err(parquet_err)?;
        }
        match rows.last() {
            Some(last) if rows.len() as i64 == PAGE => after = (last.1, last.2),
            _ => break,
        }
    }
    writer.into_inner().map_err(parquet_err)?.flush()?;
    // The open handle keeps the data readable after the spool file is dropped.
    let mut reader = tokio::fs::File::open(file.path()).await?;
    drop(file);
    let stream = async_stream_file(&mut reader).await?;
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, "application/vnd.apache.parquet")
        .header(header::CONTENT_DISPOSITION, format!("attachment; filename=\"predictions-{job}.parquet\""))
        .body(Body::from_stream(stream))
        .expect("a valid response"))
}

/// The file as a stream of 64 KiB chunks.
async fn async_stream_file(file: &mut tokio::fs::File) -> ApiResult<impl futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>> + Send + 'static> {
    let file = file.try_clone().await?;
    Ok(futures_util::stream::unfold(Some(file), |state| async move {
        let mut file = state?;
        let mut buf = vec![0u8; 1 << 16];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(buf), Some(file)))
            }
            Err(e) => Some((Err(e), None)),
        }
    })
    .boxed())
}

#[cfg(test)]
mod tests {
    use super::*;
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::RowAccessor;

    #[test]
    fn parquet_has_null_spans_for_unmentioned_targets_and_a_probability_column_per_class() {
        let version = Uuid::nil();
        let rows: Vec<PredictionRow> = vec![
            ("d1".into(), 0, 0, "battery".into(), Some(6), Some(13), "positive".into(), 0.9, version, vec![0.05, 0.05, 0.9]),
            ("d1".into(), 0, 1, "legalization of abortion".into(), None, None, "against".into(), 0.7, version, vec![0.7, 0.2, 0.1]),
            ("d2".into(), 1, 0, "fan".into(), Some(0), Some(3), "neutral".into(), 0.5, version, vec![0.25, 0.5, 0.25]),
        ];
        let labels = ["negative".to_owned(), "neutral".to_owned(), "positive".to_owned()];
        let file = tempfile::tempfile().unwrap();
        let mut writer = SerializedFileWriter::new(BufWriter::new(file.try_clone().unwrap()), schema(&labels), Default::default()).unwrap();
        write_row_group(&mut writer, &rows, labels.len()).unwrap();
        writer.into_inner().unwrap().flush().unwrap();
        let reader = SerializedFileReader::new(file).unwrap();
        let names: Vec<String> = reader.metadata().file_metadata().schema_descr().columns().iter().map(|c| c.name().to_owned()).collect();
        assert_eq!(&names[9..], ["prob_negative", "prob_neutral", "prob_positive"]);
        // (aspect, span start, span end, class probabilities) of each row read back.
        type ReadBack = (String, Option<i32>, Option<i32>, [f32; 3]);
        let spans: Vec<ReadBack> = reader
            .get_row_iter(None)
            .unwrap()
            .map(|row| {
                let row = row.unwrap();
                let int = |i: usize| row.get_int(i).ok();
                (row.get_string(3).unwrap().clone(), int(4), int(5), [9, 10, 11].map(|i| row.get_float(i).unwrap()))
            })
            .collect();
        assert_eq!(
            spans,
            vec![
                ("battery".into(), Some(6), Some(13), [0.05, 0.05, 0.9]),
                ("legalization of abortion".into(), None, None, [0.7, 0.2, 0.1]),
                ("fan".into(), Some(0), Some(3), [0.25, 0.5, 0.25])
            ]
        );
    }
}
