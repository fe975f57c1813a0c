//! `/v1/models` and `/v1/aliases`: the model registry, versions side by side, aliases,
//! and promotion that only moves an alias to a better version.

use std::collections::BTreeMap;

use absa_platform::registry::{self, PromotionPolicy};
use axum::extract::{Path, Query, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::{Caller, Role};
use crate::error::{parse_json, read_body, read_json, ApiError, ApiResult};

type VersionRow = (Uuid, String, Option<Uuid>, Option<Uuid>, Vec<String>, Value, Value, chrono::DateTime<chrono::Utc>, Vec<String>);

const VERSION_SELECT: &str = "SELECT v.id, v.base_model, v.dataset_id, v.training_job_id, v.label_names, v.metrics, v.lineage, v.created_at,
        coalesce((SELECT array_agg(a.name ORDER BY a.name) FROM model_aliases a WHERE a.model_version_id = v.id), '{}')
     FROM model_versions v";

fn version_json(r: VersionRow) -> Value {
    let (id, base, dataset, job, labels, mut metrics, lineage, at, aliases) = r;
    // The best checkpoint's folder on the trainer is of no use to API callers.
    if let Some(m) = metrics.as_object_mut() {
        m.remove("best_checkpoint");
    }
    json!({"id": id, "base_model": base, "dataset_id": dataset, "training_job_id": job, "label_names": labels,
           "metrics": metrics, "lineage": lineage, "created_at": at, "aliases": aliases})
}

pub async fn list_models(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    let rows: Vec<VersionRow> =
        sqlx::query_as(&format!("{VERSION_SELECT} WHERE v.team_id = $1 ORDER BY v.created_at DESC")).bind(caller.team_id).fetch_all(&state.pool).await?;
    Ok(Json(json!({ "models": rows.into_iter().map(version_json).collect::<Vec<_>>() })))
}

async fn version(state: &AppState, caller: &Caller, id: Uuid) -> ApiResult<Value> {
    let row: Option<VersionRow> =
        sqlx::query_as(&format!("{VERSION_SELECT} WHERE v.id = $1 AND v.team_id = $2")).bind(id).bind(caller.team_id).fetch_optional(&state.pool).await?;
    row.map(version_json).ok_or_else(|| ApiError::NotFound(format!("model version {id}")))
}

pub async fn get_model(State(state): State<AppState>, caller: Caller, Path(id): Path<Uuid>) -> ApiResult<Json<Value>> {
    Ok(Json(version(&state, &caller, id).await?))
}

#[derive(Deserialize)]
pub struct CompareQuery {
    ids: String,
}

/// Versions side by side: each numeric metric with one value per version.
pub async fn compare_models(State(state): State<AppState>, caller: Caller, Query(q): Query<CompareQuery>) -> ApiResult<Json<Value>> {
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
    let mut table: BTreeMap<String, serde_json::Map<String, Value>> = BTreeMap::new();
    for id in ids {
        let v = version(&state, &caller, id).await?;
        if let Some(metrics) = v["metrics"].as_object() {
            for (name, value) in metrics.iter().filter(|(_, v)| v.is_number()) {
                table.entry(name.clone()).or_default().insert(id.to_string(), value.clone());
            }
        }
        models.push(v);
    }
    Ok(Json(json!({ "models": models, "metrics": table })))
}

pub async fn list_aliases(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    let rows: Vec<(String, Uuid, chrono::DateTime<chrono::Utc>)> =
        sqlx::query_as("SELECT name, model_version_id, updated_at FROM model_aliases WHERE team_id = $1 ORDER BY name")
            .bind(caller.team_id)
            .fetch_all(&state.pool)
            .await?;
    let aliases: Vec<Value> = rows.into_iter().map(|(n, v, at)| json!({"name": n, "model_version_id": v, "updated_at": at})).collect();
    Ok(Json(json!({ "aliases": aliases })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetAlias {
    model_version_id: Uuid,
}

pub async fn set_alias(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> ApiResult<Json<Value>> {
    caller.require(Role::Mlops)?;
    let body: SetAlias = read_json(&headers, body, state.api.max_json_bytes).await?;
    version(&state, &caller, body.model_version_id).await?;
    let mut tx = state.pool.begin().await?;
    registry::set_alias(&mut tx, caller.team_id, &name, body.model_version_id, json!({ "set_by_key": caller.key_id })).await?;
    tx.commit().await?;
    Ok(Json(json!({ "name": name, "model_version_id": body.model_version_id })))
}

/// Moves the alias only if this version beats the one it points at (409 otherwise).
pub async fn promote(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> ApiResult<Json<Value>> {
    caller.require(Role::Mlops)?;
    let body = read_body(&headers, body, state.api.max_json_bytes).await?;
    let policy: PromotionPolicy = if body.is_empty() { PromotionPolicy::default() } else { parse_json(&body)? };
    version(&state, &caller, id).await?;
    let mut tx = state.pool.begin().await?;
    let decision = registry::promote_if_better(&mut tx, caller.team_id, id, &policy).await?;
    tx.commit().await?;
    let body = serde_json::to_value(&decision).expect("a decision serialises");
    if decision.promoted {
        Ok(Json(body))
    } else {
        let message = format!(
            "version {id} does not beat {} on {}: {:.4} vs {:.4}",
            policy.alias,
            policy.metric.metrics_key(),
            decision.candidate,
            decision.current.unwrap_or(f64::NAN)
        );
        Err(ApiError::ConflictWith { message, body })
    }
}
