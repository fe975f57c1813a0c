//! `/v1/datasets` and `/v1/corpora`: streamed uploads, listings and row errors.

use std::collections::{BTreeMap, HashMap, HashSet};

use absa_domain::records::Columns;
use absa_store::row_errors;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, Uri};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{PgConnection, Row};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::paging::{self, NamedPage};
use crate::app::AppState;
use crate::auth::{Caller, Role};
use crate::error::{ApiError, ApiResult};
use crate::idempotency;
use crate::uploads::{self, DocumentRow, Parsed, ReportedError, LISTED_ERRORS};

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DatasetUpload {
    /// The dataset's name: a new one is created, an existing one gains the rows.
    name: String,
    /// jsonl (default), csv or parquet.
    format: Option<String>,
    /// train (default), validation or test.
    split: Option<String>,
    /// Comma-separated label names; rows with other labels are row errors.
    labels: Option<String>,
    text_column: Option<String>,
    aspect_column: Option<String>,
    start_column: Option<String>,
    end_column: Option<String>,
    /// A target named without offsets (default `target`).
    target_column: Option<String>,
    label_column: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CorpusUpload {
    /// The corpus's name: a new one is created, an existing one gains the documents.
    name: String,
    /// jsonl (default), csv or parquet.
    format: Option<String>,
}

/// What a dataset upload stored, and the rows it refused (the first 1,000 listed;
/// `/v1/datasets/{id}/errors` pages them all).
#[derive(Serialize, ToSchema)]
pub struct DatasetUploaded {
    dataset_id: Uuid,
    name: String,
    split: String,
    rows_added: u64,
    rows_total: i64,
    error_count: usize,
    errors_stored: usize,
    errors: Vec<ReportedError>,
}

/// What a corpus upload stored, and the rows it refused (the first 1,000 listed).
#[derive(Serialize, ToSchema)]
pub struct CorpusUploaded {
    corpus_id: Uuid,
    name: String,
    documents_added: u64,
    documents_total: i64,
    error_count: usize,
    errors_stored: usize,
    errors: Vec<ReportedError>,
}

fn check_name(name: &str) -> ApiResult<()> {
    if name.trim().is_empty() || name.len() > 200 || name.contains('\0') {
        return Err(ApiError::BadRequest("name: 1 to 200 characters, no NUL".into()));
    }
    Ok(())
}

/// The team's dataset or corpus (`table`) named `name`, created if new. The upsert
/// (`DO UPDATE`) holds the row lock until the transaction ends, so uploads to one
/// dataset or corpus are serialised and the line or seq offsets they read stay unique.
async fn upsert_locked(conn: &mut PgConnection, table: &'static str, team: Uuid, name: &str) -> ApiResult<Uuid> {
    Ok(sqlx::query_scalar(&format!(
        "INSERT INTO {table} (id, team_id, name) VALUES ($1, $2, $3)
         ON CONFLICT (team_id, name) DO UPDATE SET name = EXCLUDED.name RETURNING id"
    ))
    .bind(Uuid::new_v4())
    .bind(team)
    .bind(name)
    .fetch_one(conn)
    .await?)
}

/// Row errors of an upload, stored for later listing.
async fn store_errors(conn: &mut PgConnection, found: row_errors::Found, errors: &[ReportedError]) -> ApiResult<()> {
    let errors: Vec<(i64, String)> = errors.iter().map(|e| (e.line, e.reason.clone())).collect();
    Ok(row_errors::record(conn, found, &errors).await?)
}

/// What an upload's `Idempotency-Key` stands for: the route, its query and the bytes.
fn upload_hash(route: &str, uri: &Uri, spooled: &uploads::Spooled) -> String {
    idempotency::digest(&[route.as_bytes(), uri.query().unwrap_or("").as_bytes(), &spooled.sha256])
}

/// The first answer when this key and request were uploaded before (200); 422 when the
/// key was used for another upload. Checked under the dataset's or corpus's row lock,
/// so a retry racing its original waits for it instead of adding the rows again.
async fn already_uploaded(tx: &mut PgConnection, team: Uuid, key: Option<&(String, String)>) -> ApiResult<Option<(StatusCode, Json<Value>)>> {
    let Some((key, hash)) = key else { return Ok(None) };
    Ok(idempotency::prior_upload(tx, team, key, hash).await?.map(|answer| (StatusCode::OK, Json(answer))))
}

/// Commits an upload with its key (if any) and answers 201; when a concurrent upload
/// with the same key committed first, this one is rolled back and that one's answer given.
async fn finish_upload(
    state: &AppState,
    mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
    team: Uuid,
    key: Option<&(String, String)>,
    answer: Value,
    bytes: u64,
    added: u64,
) -> ApiResult<(StatusCode, Json<Value>)> {
    if let Some((key, hash)) = key {
        if !idempotency::record_upload(&mut tx, team, key, hash, &answer).await? {
            drop(tx);
            let mut conn = state.pool.acquire().await?;
            let first = idempotency::prior_upload(&mut conn, team, key, hash).await?;
            return Ok((StatusCode::OK, Json(first.ok_or_else(|| ApiError::Internal(format!("upload key {key} vanished")))?)));
        }
    }
    tx.commit().await?;
    absa_platform::metrics::API.upload_bytes.inc_by(bytes);
    absa_platform::metrics::API.upload_rows.inc_by(added);
    Ok((StatusCode::CREATED, Json(answer)))
}

/// Rows of labelled aspects (or stance targets) as JSONL, CSV or Parquet, streamed and
/// checked row by row: good rows are stored, bad ones listed with their line and reason.
/// An `Idempotency-Key` header makes a retried upload answer the first one's result.
#[utoipa::path(post, path = "/datasets", tag = "data", params(DatasetUpload),
    request_body(description = "The file's bytes", content(
        (String = "application/x-ndjson"), (String = "text/csv"), (inline(crate::openapi::Bytes) = "application/vnd.apache.parquet"))),
    responses((status = 201, body = DatasetUploaded), (status = 200, description = "the same Idempotency-Key and file again: the first answer", body = DatasetUploaded)))]
pub async fn upload_dataset(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<DatasetUpload>,
    uri: Uri,
    headers: axum::http::HeaderMap,
    body: Body,
) -> ApiResult<(StatusCode, Json<Value>)> {
    caller.require(Role::Mlops)?;
    let key = idempotency::client_key(&headers)?;
    check_name(&q.name)?;
    let format = uploads::parse_format(q.format.as_deref())?;
    let split = q.split.unwrap_or_else(|| "train".into());
    if !["train", "validation", "test"].contains(&split.as_str()) {
        return Err(ApiError::BadRequest(format!("split {split:?}: expected train, validation or test")));
    }
    let defaults = Columns::default();
    let columns = Columns {
        text: q.text_column.unwrap_or(defaults.text),
        aspect: q.aspect_column.unwrap_or(defaults.aspect),
        start: q.start_column.unwrap_or(defaults.start),
        end: q.end_column.unwrap_or(defaults.end),
        target: q.target_column.unwrap_or(defaults.target),
        label: q.label_column.unwrap_or(defaults.label),
    };
    let allowed: Option<HashSet<String>> = q.labels.map(|l| l.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect());
    let mut file = uploads::SpoolFile::new_in(&state.upload_dir)?;
    let spooled = uploads::spool(&headers, body, file.file_mut(), state.api.max_upload_bytes).await?;
    let key = key.map(|k| (k, upload_hash("datasets", &uri, &spooled)));

    let mut tx = state.pool.begin().await?;
    let dataset_id = upsert_locked(&mut tx, "datasets", caller.team_id, &q.name).await?;
    if let Some(answer) = already_uploaded(&mut tx, caller.team_id, key.as_ref()).await? {
        return Ok(answer);
    }
    let offset: i64 = sqlx::query_scalar("SELECT coalesce(max(line), 0)::bigint FROM dataset_rows WHERE dataset_id = $1 AND split = $2")
        .bind(dataset_id)
        .bind(&split)
        .fetch_one(&mut *tx)
        .await?;
    let mut rx =
        uploads::read_rows(&file, format, state.reader_options(), move |line, fields| uploads::check_labelled(line, fields, &columns, allowed.as_ref()))?;
    let mut added = 0u64;
    let mut errors = uploads::RowErrors::new(state.api.max_stored_errors);
    while let Some(item) = rx.recv().await {
        match item {
            Parsed::Failed(reason) => return Err(ApiError::BadRequest(format!("the file cannot be read: {reason}"))),
            Parsed::Error(e) => errors.push(ReportedError::from(e)),
            Parsed::Rows(rows) => {
                let lines: Vec<i64> = rows.iter().map(|r| offset + r.line as i64).collect();
                let texts: Vec<&str> = rows.iter().map(|r| r.text.as_str()).collect();
                // `aspect` holds the target's words; a row that names a target without
                // offsets has no span (NULL, NULL).
                let targets: Vec<&str> = rows.iter().map(|r| r.target.as_str()).collect();
                let starts: Vec<Option<i64>> = rows.iter().map(|r| r.span.map(|s| s.start() as i64)).collect();
                let ends: Vec<Option<i64>> = rows.iter().map(|r| r.span.map(|s| s.end() as i64)).collect();
                let labels: Vec<&str> = rows.iter().map(|r| r.label.as_str()).collect();
                sqlx::query(
                    "INSERT INTO dataset_rows (dataset_id, split, line, text, aspect, span_start, span_end, label)
                     SELECT $1, $2, l, t, a, s, e, lb FROM UNNEST($3::bigint[], $4::text[], $5::text[], $6::bigint[], $7::bigint[], $8::text[]) AS u(l, t, a, s, e, lb)",
                )
                .bind(dataset_id)
                .bind(&split)
                .bind(&lines)
                .bind(&texts)
                .bind(&targets)
                .bind(&starts)
                .bind(&ends)
                .bind(&labels)
                .execute(&mut *tx)
                .await?;
                added += rows.len() as u64;
            }
        }
    }
    store_errors(&mut tx, row_errors::Found::DatasetUpload(dataset_id), &errors.kept).await?;
    sqlx::query("UPDATE datasets SET label_names = coalesce((SELECT array_agg(DISTINCT label ORDER BY label) FROM dataset_rows WHERE dataset_id = $1), '{}') WHERE id = $1")
        .bind(dataset_id)
        .execute(&mut *tx)
        .await?;
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM dataset_rows WHERE dataset_id = $1").bind(dataset_id).fetch_one(&mut *tx).await?;
    let listed: Vec<ReportedError> = errors.kept.iter().take(LISTED_ERRORS).cloned().collect();
    let answer = DatasetUploaded {
        dataset_id,
        name: q.name,
        split,
        rows_added: added,
        rows_total: total,
        error_count: errors.count,
        errors_stored: errors.kept.len(),
        errors: listed,
    };
    let answer = serde_json::to_value(answer).expect("an answer serialises");
    finish_upload(&state, tx, caller.team_id, key.as_ref(), answer, spooled.bytes, added).await
}

/// Documents to score (`id`, `text`, optional aspects or targets) as JSONL, CSV or
/// Parquet, checked row by row like datasets.
#[utoipa::path(post, path = "/corpora", tag = "data", params(CorpusUpload),
    request_body(description = "The file's bytes", content(
        (String = "application/x-ndjson"), (String = "text/csv"), (inline(crate::openapi::Bytes) = "application/vnd.apache.parquet"))),
    responses((status = 201, body = CorpusUploaded), (status = 200, description = "the same Idempotency-Key and file again: the first answer", body = CorpusUploaded)))]
pub async fn upload_corpus(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<CorpusUpload>,
    uri: Uri,
    headers: axum::http::HeaderMap,
    body: Body,
) -> ApiResult<(StatusCode, Json<Value>)> {
    caller.require(Role::Analyst)?;
    let key = idempotency::client_key(&headers)?;
    check_name(&q.name)?;
    let format = uploads::parse_format(q.format.as_deref())?;
    let mut file = uploads::SpoolFile::new_in(&state.upload_dir)?;
    let spooled = uploads::spool(&headers, body, file.file_mut(), state.api.max_upload_bytes).await?;
    let key = key.map(|k| (k, upload_hash("corpora", &uri, &spooled)));

    let mut tx = state.pool.begin().await?;
    let corpus_id = upsert_locked(&mut tx, "corpora", caller.team_id, &q.name).await?;
    if let Some(answer) = already_uploaded(&mut tx, caller.team_id, key.as_ref()).await? {
        return Ok(answer);
    }
    let mut next_seq: i64 =
        sqlx::query_scalar("SELECT coalesce(max(seq) + 1, 0)::bigint FROM documents WHERE corpus_id = $1").bind(corpus_id).fetch_one(&mut *tx).await?;
    let mut rx = uploads::read_rows(&file, format, state.reader_options(), uploads::check_document)?;
    let mut added = 0u64;
    let mut errors = uploads::RowErrors::new(state.api.max_stored_errors);
    let mut seen: HashMap<String, usize> = HashMap::new();
    while let Some(item) = rx.recv().await {
        match item {
            Parsed::Failed(reason) => return Err(ApiError::BadRequest(format!("the file cannot be read: {reason}"))),
            Parsed::Error(e) => errors.push(ReportedError::from(e)),
            Parsed::Rows(rows) => {
                let mut keep: Vec<DocumentRow> = Vec::with_capacity(rows.len());
                for row in rows {
                    match seen.get(&row.external_id) {
                        Some(first) => errors.push(ReportedError::new(row.line as i64, &format!("duplicate id {:?} (first on line {first})", row.external_id))),
                        None => {
                            seen.insert(row.external_id.clone(), row.line);
                            keep.push(row);
                        }
                    }
                }
                let seqs: Vec<i64> = (0..keep.len() as i64).map(|i| next_seq + i).collect();
                let ids: Vec<&str> = keep.iter().map(|r| r.external_id.as_str()).collect();
                let texts: Vec<&str> = keep.iter().map(|r| r.text.as_str()).collect();
                let aspects: Vec<Option<&str>> = keep.iter().map(|r| r.aspect.as_deref()).collect();
                let starts: Vec<Option<i32>> = keep.iter().map(|r| r.span.map(|s| s.0)).collect();
                let ends: Vec<Option<i32>> = keep.iter().map(|r| r.span.map(|s| s.1)).collect();
                let targets: Vec<Option<&str>> = keep.iter().map(|r| r.target.as_deref()).collect();
                let metadata: Vec<Value> = keep.iter().map(|r| r.metadata.clone()).collect();
                let published: Vec<Option<chrono::DateTime<chrono::Utc>>> = keep.iter().map(|r| r.published_at).collect();
                // An id already in the corpus from an earlier upload is a row error too.
                let inserted = sqlx::query(
                    "INSERT INTO documents (corpus_id, seq, external_id, text, aspect, span_start, span_end, target, metadata, published_at)
                     SELECT $1, * FROM UNNEST($2::bigint[], $3::text[], $4::text[], $5::text[], $6::int[], $7::int[], $8::text[], $9::jsonb[], $10::timestamptz[])
                     ON CONFLICT (corpus_id, external_id) DO NOTHING RETURNING external_id",
                )
                .bind(corpus_id)
                .bind(&seqs)
                .bind(&ids)
                .bind(&texts)
                .bind(&aspects)
                .bind(&starts)
                .bind(&ends)
                .bind(&targets)
                .bind(&metadata)
                .bind(&published)
                .fetch_all(&mut *tx)
                .await?;
                let landed: HashSet<String> = inserted.iter().map(|r| r.get::<String, _>(0)).collect();
                for row in keep.iter().filter(|r| !landed.contains(&r.external_id)) {
                    errors.push(ReportedError::new(row.line as i64, &format!("id {:?} is already in the corpus", row.external_id)));
                }
                next_seq += keep.len() as i64;
                added += landed.len() as u64;
            }
        }
    }
    errors.kept.sort_by_key(|e| e.line);
    store_errors(&mut tx, row_errors::Found::CorpusUpload(corpus_id), &errors.kept).await?;
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM documents WHERE corpus_id = $1").bind(corpus_id).fetch_one(&mut *tx).await?;
    let listed: Vec<ReportedError> = errors.kept.iter().take(LISTED_ERRORS).cloned().collect();
    let answer = CorpusUploaded {
        corpus_id,
        name: q.name,
        documents_added: added,
        documents_total: total,
        error_count: errors.count,
        errors_stored: errors.kept.len(),
        errors: listed,
    };
    let answer = serde_json::to_value(answer).expect("an answer serialises");
    finish_upload(&state, tx, caller.team_id, key.as_ref(), answer, spooled.bytes, added).await
}

/// A dataset: its labels and row count (per split in `GET /v1/datasets/{id}`).
#[derive(Serialize, ToSchema, sqlx::FromRow)]
pub struct Dataset {
    id: Uuid,
    name: String,
    label_names: Vec<String>,
    rows: i64,
    created_at: DateTime<Utc>,
}

/// A page of datasets, newest first; while `has_more`, pass `next_after` as `after`.
#[derive(Serialize, ToSchema)]
pub struct DatasetList {
    datasets: Vec<Dataset>,
    has_more: bool,
    next_after: Option<String>,
}

/// The team's datasets, newest first, a page at a time.
#[utoipa::path(get, path = "/datasets", tag = "data", params(NamedPage), responses((status = 200, body = DatasetList)))]
pub async fn list_datasets(State(state): State<AppState>, caller: Caller, Query(q): Query<NamedPage>) -> ApiResult<Json<DatasetList>> {
    let select = "SELECT d.id, d.name, d.label_names, (SELECT count(*) FROM dataset_rows r WHERE r.dataset_id = d.id) AS rows, d.created_at FROM datasets d";
    let (datasets, next_after) = paging::named_page(&state.pool, select, "d", caller.team_id, q, |d: &Dataset| (d.created_at, d.id)).await?;
    Ok(Json(DatasetList { datasets, has_more: next_after.is_some(), next_after }))
}

/// One dataset with its rows per split.
#[derive(Serialize, ToSchema)]
pub struct DatasetDetail {
    id: Uuid,
    name: String,
    label_names: Vec<String>,
    /// Rows per split (`train`, `validation`, `test`).
    rows: BTreeMap<String, i64>,
    created_at: DateTime<Utc>,
}

#[utoipa::path(get, path = "/datasets/{id}", tag = "data", params(("id" = Uuid, Path, description = "the dataset's id")), responses((status = 200, body = DatasetDetail)))]
pub async fn get_dataset(State(state): State<AppState>, caller: Caller, Path(id): Path<Uuid>) -> ApiResult<Json<DatasetDetail>> {
    let row: Option<(String, Vec<String>, DateTime<Utc>)> = sqlx::query_as("SELECT name, label_names, created_at FROM datasets WHERE id = $1 AND team_id = $2")
        .bind(id)
        .bind(caller.team_id)
        .fetch_optional(&state.pool)
        .await?;
    let (name, label_names, created_at) = row.ok_or_else(|| ApiError::NotFound(format!("dataset {id}")))?;
    let splits: Vec<(String, i64)> =
        sqlx::query_as("SELECT split, count(*) FROM dataset_rows WHERE dataset_id = $1 GROUP BY split").bind(id).fetch_all(&state.pool).await?;
    Ok(Json(DatasetDetail { id, name, label_names, rows: splits.into_iter().collect(), created_at }))
}

/// A corpus and its document count.
#[derive(Serialize, ToSchema, sqlx::FromRow)]
pub struct Corpus {
    id: Uuid,
    name: String,
    documents: i64,
    created_at: DateTime<Utc>,
}

/// A page of corpora, newest first; while `has_more`, pass `next_after` as `after`.
#[derive(Serialize, ToSchema)]
pub struct CorpusList {
    corpora: Vec<Corpus>,
    has_more: bool,
    next_after: Option<String>,
}

/// The team's corpora, newest first, a page at a time.
#[utoipa::path(get, path = "/corpora", tag = "data", params(NamedPage), responses((status = 200, body = CorpusList)))]
pub async fn list_corpora(State(state): State<AppState>, caller: Caller, Query(q): Query<NamedPage>) -> ApiResult<Json<CorpusList>> {
    let select = "SELECT c.id, c.name, (SELECT count(*) FROM documents d WHERE d.corpus_id = c.id) AS documents, c.created_at FROM corpora c";
    let (corpora, next_after) = paging::named_page(&state.pool, select, "c", caller.team_id, q, |c: &Corpus| (c.created_at, c.id)).await?;
    Ok(Json(CorpusList { corpora, has_more: next_after.is_some(), next_after }))
}

#[utoipa::path(get, path = "/corpora/{id}", tag = "data", params(("id" = Uuid, Path, description = "the corpus's id")), responses((status = 200, body = Corpus)))]
pub async fn get_corpus(State(state): State<AppState>, caller: Caller, Path(id): Path<Uuid>) -> ApiResult<Json<Corpus>> {
    let corpus: Option<Corpus> = sqlx::query_as(
        "SELECT c.id, c.name, (SELECT count(*) FROM documents d WHERE d.corpus_id = c.id) AS documents, c.created_at
         FROM corpora c WHERE c.id = $1 AND c.team_id = $2",
    )
    .bind(id)
    .bind(caller.team_id)
    .fetch_optional(&state.pool)
    .await?;
    Ok(Json(corpus.ok_or_else(|| ApiError::NotFound(format!("corpus {id}")))?))
}

/// `limit` and `after` of a row-error listing.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ErrorPage {
    /// At most this many, by line (1 to 10,000, default 1,000).
    limit: Option<i64>,
    /// The previous page's `next_after`.
    after: Option<String>,
}

/// One page of the row errors `listed` names, by line: `{"errors": [{"line",
/// "reason"}], "has_more", "next_after"}`. The cursor is the last row's `line:id`.
pub(crate) async fn error_page(state: &AppState, listed: row_errors::Listed, page: ErrorPage) -> ApiResult<Json<RowErrorPage>> {
    let limit = paging::limit(page.limit, 1000, 10_000)?;
    let after = match page.after.as_deref() {
        None => (-1i64, 0i64),
        Some(cursor) => {
            cursor.split_once(':').and_then(|(line, row)| Some((line.parse().ok()?, row.parse().ok()?))).ok_or_else(|| paging::bad_cursor("after", cursor))?
        }
    };
    let rows = row_errors::page(&state.pool, listed, after, limit + 1).await?;
    let (rows, next_after) = paging::split(rows, limit, |e| format!("{}:{}", e.line, e.id));
    let errors = rows.into_iter().map(|e| ReportedError { line: e.line, reason: e.reason }).collect();
    Ok(Json(RowErrorPage { errors, has_more: next_after.is_some(), next_after }))
}

/// A page of row errors by line; while `has_more`, pass `next_after` as `after`.
#[derive(Serialize, ToSchema)]
pub struct RowErrorPage {
    errors: Vec<ReportedError>,
    has_more: bool,
    next_after: Option<String>,
}

/// Row errors of the team's dataset or corpus (`owner` is the column), a page.
pub async fn row_errors(state: &AppState, caller: &Caller, owner: &str, id: Uuid, page: ErrorPage) -> ApiResult<Json<RowErrorPage>> {
    let (table, listed) = match owner {
        "dataset_id" => ("datasets", row_errors::Listed::DatasetUploads(id)),
        _ => ("corpora", row_errors::Listed::CorpusUploads(id)),
    };
    let owned: Option<i32> =
        sqlx::query_scalar(&format!("SELECT 1 FROM {table} WHERE id = $1 AND team_id = $2")).bind(id).bind(caller.team_id).fetch_optional(&state.pool).await?;
    if owned.is_none() {
        return Err(ApiError::NotFound(format!("{} {id}", &table[..table.len() - 1])));
    }
    // An upload's own errors (a training job's rejected rows are listed under the job).
    error_page(state, listed, page).await
}

/// The rows an upload to this dataset refused, by line.
#[utoipa::path(get, path = "/datasets/{id}/errors", tag = "data", params(("id" = Uuid, Path, description = "the dataset's id"), ErrorPage),
    responses((status = 200, body = RowErrorPage)))]
pub async fn dataset_errors(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    Query(page): Query<ErrorPage>,
) -> ApiResult<Json<RowErrorPage>> {
    row_errors(&state, &caller, "dataset_id", id, page).await
}

/// The rows an upload to this corpus refused, by line.
#[utoipa::path(get, path = "/corpora/{id}/errors", tag = "data", params(("id" = Uuid, Path, description = "the corpus's id"), ErrorPage),
    responses((status = 200, body = RowErrorPage)))]
pub async fn corpus_errors(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    Query(page): Query<ErrorPage>,
) -> ApiResult<Json<RowErrorPage>> {
    row_errors(&state, &caller, "corpus_id", id, page).await
}
