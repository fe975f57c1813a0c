//! `/v1/models` and `/v1/aliases`: the model registry, versions side by side, aliases,
//! promotion that only moves an alias to a better version, and the versions' artifacts
//! as downloads.

use std::collections::BTreeMap;

use absa_jobs::promotion::PromotionPolicy;
use absa_store::artifacts::{ArtifactStore, Backend, CHUNK_BYTES};
use absa_store::registry;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::Response;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::paging;
use crate::app::AppState;
use crate::auth::{Caller, Role};
use crate::error::{parse_json, read_body, read_json, ApiError, ApiResult};

type VersionRow = (Uuid, String, Option<Uuid>, Option<Uuid>, Vec<String>, Value, Value, chrono::DateTime<chrono::Utc>, Vec<String>, String);

const VERSION_SELECT: &str = "SELECT v.id, v.base_model, v.dataset_id, v.training_job_id, v.label_names, v.metrics, v.lineage, v.created_at,
        coalesce((SELECT array_agg(a.name ORDER BY a.name) FROM model_aliases a WHERE a.model_version_id = v.id), '{}'),
        (SELECT r.name FROM registered_models r WHERE r.id = v.registered_model_id)
     FROM model_versions v";

/// A model version: what trained it, its figures, and the aliases pointing at it.
#[derive(Serialize, ToSchema)]
pub struct ModelVersion {
    id: Uuid,
    /// The registered model it is a version of.
    model: String,
    base_model: String,
    dataset_id: Option<Uuid>,
    training_job_id: Option<Uuid>,
    /// The classes, in the order of its outputs.
    label_names: Vec<String>,
    /// Validation (chosen on) and test (reported) figures: `validation_macro_f1`,
    /// `test_accuracy`, ...
    metrics: Value,
    /// The training job, its attempt, the hyperparameters it ran with, and the dataset
    /// snapshot it was trained on (`dataset`: id, rows, sha256 of the rows as read).
    lineage: Value,
    created_at: DateTime<Utc>,
    aliases: Vec<String>,
}

fn version_of(r: VersionRow) -> ModelVersion {
    let (id, base_model, dataset_id, training_job_id, label_names, mut metrics, lineage, created_at, aliases, model) = r;
    // The best checkpoint's folder on the trainer is of no use to API callers.
    if let Some(m) = metrics.as_object_mut() {
        m.remove("best_checkpoint");
    }
    ModelVersion { id, model, base_model, dataset_id, training_job_id, label_names, metrics, lineage, created_at, aliases }
}

/// A page of model versions, newest first; while `has_more`, pass `next_after` as `after`.
#[derive(Serialize, ToSchema)]
pub struct ModelVersionList {
    models: Vec<ModelVersion>,
    has_more: bool,
    next_after: Option<String>,
}

/// The filters and page of the model versions listing.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ModelFilter {
    /// Only versions of this registered model.
    model: Option<String>,
    /// Only versions fine-tuned from this base model.
    base_model: Option<String>,
    /// Only versions trained on this dataset.
    dataset_id: Option<Uuid>,
    /// At most this many, newest first (1 to 1000, default 100).
    limit: Option<i64>,
    /// The previous page's `next_after`: only older ones.
    after: Option<String>,
    /// Only versions created at or after / before these instants (RFC 3339).
    created_after: Option<DateTime<Utc>>,
    created_before: Option<DateTime<Utc>>,
}

/// The team's model versions, newest first, a page at a time.
#[utoipa::path(get, path = "/models", tag = "models", params(ModelFilter), responses((status = 200, body = ModelVersionList)))]
pub async fn list_models(State(state): State<AppState>, caller: Caller, Query(f): Query<ModelFilter>) -> ApiResult<Json<ModelVersionList>> {
    let limit = paging::limit(f.limit, 100, 1000)?;
    let after = f.after.as_deref().map(paging::parse_time_cursor).transpose()?;
    let rows: Vec<VersionRow> = sqlx::query_as(&format!(
        "{VERSION_SELECT} WHERE v.team_id = $1 AND ($2::text IS NULL OR v.base_model = $2) AND ($3::uuid IS NULL OR v.dataset_id = $3) AND {}
           AND ($9::text IS NULL OR v.registered_model_id = (SELECT r.id FROM registered_models r WHERE r.team_id = $1 AND r.name = $9))
         ORDER BY v.created_at DESC, v.id DESC LIMIT $8",
        paging::time_page_condition("v", 4)
    ))
    .bind(caller.team_id)
    .bind(f.base_model)
    .bind(f.dataset_id)
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(f.created_after)
    .bind(f.created_before)
    .bind(limit + 1)
    .bind(f.model)
    .fetch_all(&state.pool)
    .await?;
    let (rows, next_after) = paging::split(rows, limit, |r| paging::time_cursor(r.7, r.0));
    Ok(Json(ModelVersionList { models: rows.into_iter().map(version_of).collect(), has_more: next_after.is_some(), next_after }))
}

async fn version(state: &AppState, caller: &Caller, id: Uuid) -> ApiResult<ModelVersion> {
    let row: Option<VersionRow> =
        sqlx::query_as(&format!("{VERSION_SELECT} WHERE v.id = $1 AND v.team_id = $2")).bind(id).bind(caller.team_id).fetch_optional(&state.pool).await?;
    row.map(version_of).ok_or_else(|| ApiError::NotFound(format!("model version {id}")))
}

#[utoipa::path(get, path = "/models/{id}", tag = "models", params(("id" = Uuid, Path, description = "the version's id")), responses((status = 200, body = ModelVersion)))]
pub async fn get_model(State(state): State<AppState>, caller: Caller, Path(id): Path<Uuid>) -> ApiResult<Json<ModelVersion>> {
    Ok(Json(version(&state, &caller, id).await?))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CompareQuery {
    /// Two or more version ids, comma-separated.
    ids: String,
}

/// Versions side by side, and each numeric metric with one value per version id.
#[derive(Serialize, ToSchema)]
pub struct Comparison {
    models: Vec<ModelVersion>,
    /// metric name → version id → value.
    metrics: BTreeMap<String, BTreeMap<String, Value>>,
}

/// Versions side by side: each numeric metric with one value per version.
#[utoipa::path(get, path = "/models/compare", tag = "models", params(CompareQuery), responses((status = 200, body = Comparison)))]
pub async fn compare_models(State(state): State<AppState>, caller: Caller, Query(q): Query<CompareQuery>) -> ApiResult<Json<Comparison>> {
    let ids: Vec<Uuid> = q
        .ids
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.trim().parse::<Uuid>().map_err(|_| ApiError::BadRequest(format!("{s:?} is not a version id"))))
        .collect::<Result<_, _>>()?;
    if ids.len() < 2 {
        return Err(ApiError::BadRequest("ids: at least two version ids, comma-separated".into()));
    }
    let mut models = Vec::new();
    let mut table: BTreeMap<String, BTreeMap<String, Value>> = BTreeMap::new();
    for id in ids {
        let v = version(&state, &caller, id).await?;
        if let Some(metrics) = v.metrics.as_object() {
            for (name, value) in metrics.iter().filter(|(_, v)| v.is_number()) {
                table.entry(name.clone()).or_default().insert(id.to_string(), value.clone());
            }
        }
        models.push(v);
    }
    Ok(Json(Comparison { models, metrics: table }))
}

/// An alias (`production`, `candidate`, ...) of a registered model and the version it
/// points at.
#[derive(Serialize, ToSchema, sqlx::FromRow)]
pub struct Alias {
    /// The registered model whose alias it is.
    model: String,
    name: String,
    model_version_id: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    updated_at: Option<DateTime<Utc>>,
}

#[derive(Serialize, ToSchema)]
pub struct AliasList {
    aliases: Vec<Alias>,
    has_more: bool,
    next_after: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AliasFilter {
    /// Only the aliases of this registered model.
    model: Option<String>,
    /// At most this many, by model and name (1 to 1000, default 100).
    limit: Option<i64>,
    /// The previous page's `next_after`: only the aliases after it.
    after: Option<String>,
}

/// The team's aliases, by model and name, a page at a time.
#[utoipa::path(get, path = "/aliases", tag = "models", params(AliasFilter), responses((status = 200, body = AliasList)))]
pub async fn list_aliases(State(state): State<AppState>, caller: Caller, Query(f): Query<AliasFilter>) -> ApiResult<Json<AliasList>> {
    let limit = paging::limit(f.limit, 100, 1000)?;
    // Model and alias names cannot hold '/': the cursor is `model/alias`.
    let after = f.after.as_deref().map(|a| a.split_once('/').ok_or_else(|| paging::bad_cursor("after", a))).transpose()?;
    let aliases: Vec<Alias> = sqlx::query_as(
        "SELECT r.name AS model, a.name, a.model_version_id, a.updated_at FROM model_aliases a JOIN registered_models r ON r.id = a.registered_model_id
         WHERE a.team_id = $1 AND ($2::text IS NULL OR r.name = $2) AND ($3::text IS NULL OR (r.name, a.name) > ($3, $4))
         ORDER BY r.name, a.name LIMIT $5",
    )
    .bind(caller.team_id)
    .bind(f.model)
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(limit + 1)
    .fetch_all(&state.pool)
    .await?;
    let (aliases, next_after) = paging::split(aliases, limit, |a| format!("{}/{}", a.model, a.name));
    Ok(Json(AliasList { aliases, has_more: next_after.is_some(), next_after }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetAlias {
    model_version_id: Uuid,
}

/// Points an alias of the version's registered model at the version unconditionally
/// (mlops); `promote` is the guarded move.
#[utoipa::path(put, path = "/aliases/{name}", tag = "models", params(("name" = String, Path, description = "the alias")), request_body = SetAlias,
    responses((status = 200, body = Alias)))]
pub async fn set_alias(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> ApiResult<Json<Alias>> {
    caller.require(Role::Mlops)?;
    let body: SetAlias = read_json(&headers, body, state.api.max_json_bytes).await?;
    let target = version(&state, &caller, body.model_version_id).await?;
    let mut tx = state.pool.begin().await?;
    registry::set_alias(&mut tx, caller.team_id, &name, body.model_version_id, json!({ "set_by_key": caller.key_id })).await?;
    tx.commit().await?;
    Ok(Json(Alias { model: target.model, name, model_version_id: body.model_version_id, updated_at: None }))
}

/// Moves the alias only if this version beats the one it points at (409 otherwise,
/// with the figures of both).
#[utoipa::path(post, path = "/models/{id}/promote", tag = "models", params(("id" = Uuid, Path, description = "the version's id")),
    request_body(content = Option<PromotionPolicy>, description = "alias (default production) and metric (default macro_f1); model, when given, must be the version's own registered model; an empty body takes the defaults"),
    responses((status = 200, body = registry::Promotion)))]
pub async fn promote(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> ApiResult<Json<registry::Promotion>> {
    caller.require(Role::Mlops)?;
    let body = read_body(&headers, body, state.api.max_json_bytes).await?;
    let policy: PromotionPolicy = if body.is_empty() { PromotionPolicy::default() } else { parse_json(&body)? };
    version(&state, &caller, id).await?;
    let mut tx = state.pool.begin().await?;
    let decision = registry::promote_if_better(&mut tx, caller.team_id, id, &policy).await?;
    tx.commit().await?;
    if decision.promoted {
        Ok(Json(decision))
    } else {
        let body = serde_json::to_value(&decision).expect("a decision serialises");
        let message = format!(
            "version {id} does not beat the {} of the model {:?} on {}: {:.4} vs {:.4}",
            policy.alias,
            decision.model,
            policy.metric.metrics_key(),
            decision.candidate,
            decision.current.unwrap_or(f64::NAN)
        );
        Err(ApiError::ConflictWith { message, body })
    }
}

/// The two artifacts a model version has.
#[derive(Clone, Copy)]
enum ArtifactName {
    /// The exported bundle: fp32 and int8 graphs, tokenizer files, `absa_model.json` (the manifest).
    Onnx,
    /// The best checkpoint in Hugging Face layout (`config.json`, safetensors, tokenizer).
    Checkpoint,
}

impl ArtifactName {
    fn parse(name: &str) -> ApiResult<Self> {
        match name {
            "onnx" => Ok(Self::Onnx),
            "checkpoint" => Ok(Self::Checkpoint),
            other => Err(ApiError::NotFound(format!("artifact {other:?} (a model version has onnx and checkpoint)"))),
        }
    }

    fn column(self) -> &'static str {
        match self {
            Self::Onnx => "onnx_id",
            Self::Checkpoint => "checkpoint_id",
        }
    }
}

/// `GET /v1/models/{id}/artifacts/{onnx|checkpoint}`: the artifact as one tar, streamed
/// from the artifact store a chunk at a time. `ETag` is its sha256; the store checks
/// the hash while reading and cuts the stream short if the content does not match.
#[utoipa::path(get, path = "/models/{id}/artifacts/{artifact}", tag = "models",
    params(("id" = Uuid, Path, description = "the version's id"),
        ("artifact" = String, Path, description = "onnx: fp32 and int8 graphs, tokenizer, absa_model.json; checkpoint: the Hugging Face layout checkpoint")),
    responses((status = 200, description = "a tar archive; ETag is its sha256", content_type = "application/x-tar", body = inline(crate::openapi::Bytes),
        headers(("ETag" = String, description = "the archive's sha256, quoted")))))]
pub async fn download_artifact(State(state): State<AppState>, caller: Caller, Path((id, name)): Path<(Uuid, String)>) -> ApiResult<Response> {
    let artifact = ArtifactName::parse(&name)?;
    version(&state, &caller, id).await?;
    let artifact_id: Option<Uuid> =
        sqlx::query_scalar(&format!("SELECT {} FROM model_versions WHERE id = $1", artifact.column())).bind(id).fetch_one(&state.pool).await?;
    let missing = || ApiError::NotFound(format!("model version {id} has no stored {name} artifact"));
    // Reads follow each artifact's own backend; the one given here only matters for writes.
    let store = ArtifactStore::new(state.pool.clone(), Backend::Postgres);
    let stored = store.get(artifact_id.ok_or_else(missing)?).await?.ok_or_else(missing)?;
    let (mut writer, reader) = tokio::io::duplex(CHUNK_BYTES);
    let what = format!("model version {id}'s {name} artifact");
    let reading = tokio::spawn(async move {
        let read = store.read_into(stored.id, &mut writer).await.map(|_| ()).map_err(|e| e.to_string());
        if let Err(e) = &read {
            tracing::error!("download of {what} cut short: {e}");
        }
        read
    });
    let stream = futures_util::stream::unfold((reader, Some(reading)), |(mut reader, reading)| async move {
        let mut chunk = vec![0u8; 64 << 10];
        match reader.read(&mut chunk).await {
            Ok(0) => {
                // The reader ends when the store drops its writer: done, or failed.
                let failure = match reading?.await {
                    Ok(Ok(())) => return None,
                    Ok(Err(e)) => e,
                    Err(e) => e.to_string(),
                };
                Some((Err(std::io::Error::other(failure)), (reader, None)))
            }
            Ok(n) => {
                chunk.truncate(n);
                Some((Ok(chunk), (reader, reading)))
            }
            Err(e) => Some((Err(e), (reader, None))),
        }
    });
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, "application/x-tar")
        .header(header::CONTENT_LENGTH, stored.size_bytes)
        .header(header::ETAG, format!("\"{}\"", stored.sha256))
        .header(header::CONTENT_DISPOSITION, format!("attachment; filename=\"model-{id}-{name}.tar\""))
        .body(Body::from_stream(stream))
        .expect("a valid response"))
}
