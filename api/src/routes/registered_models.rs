//! `/v1/registered-models`: the team's named models. A registered model has a task and
//! a label set, owns its versions and its own aliases (`production` of one model is not
//! `production` of another), and carries a description and tags for people and tools.
//! Training jobs create one on first use (`model`), or an MLOps key creates it here.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;
use uuid::Uuid;

use super::paging::{self, NamedPage};
use crate::app::AppState;
use crate::auth::{Caller, Role};
use crate::error::{read_json, ApiError, ApiResult};

/// The longest description a registered model may carry.
const MAX_DESCRIPTION_CHARS: usize = 2000;

/// A registered model with its version count, latest version and aliases.
#[derive(Serialize, ToSchema, sqlx::FromRow)]
pub struct RegisteredModel {
    id: Uuid,
    name: String,
    /// sentiment or stance.
    task: String,
    /// The classes every version of it predicts, in output order.
    label_names: Vec<String>,
    description: String,
    /// Free-form `key: value` strings.
    tags: Value,
    created_at: DateTime<Utc>,
    versions: i64,
    latest_version_id: Option<Uuid>,
    /// Alias name → the version it points at.
    aliases: Value,
}

#[derive(Serialize, ToSchema)]
pub struct RegisteredModelList {
    models: Vec<RegisteredModel>,
    has_more: bool,
    next_after: Option<String>,
}

const SELECT: &str = "SELECT r.id, r.name, r.task, r.label_names, r.description, r.tags, r.created_at,
        (SELECT count(*) FROM model_versions v WHERE v.registered_model_id = r.id) AS versions,
        (SELECT v.id FROM model_versions v WHERE v.registered_model_id = r.id ORDER BY v.created_at DESC, v.id DESC LIMIT 1) AS latest_version_id,
        coalesce((SELECT jsonb_object_agg(a.name, a.model_version_id) FROM model_aliases a WHERE a.registered_model_id = r.id), '{}'::jsonb) AS aliases
     FROM registered_models r";

/// The team's registered models, newest first, a page at a time.
#[utoipa::path(get, path = "/registered-models", tag = "models", params(NamedPage), responses((status = 200, body = RegisteredModelList)))]
pub async fn list_registered_models(State(state): State<AppState>, caller: Caller, Query(q): Query<NamedPage>) -> ApiResult<Json<RegisteredModelList>> {
    let (models, next_after) = paging::named_page(&state.pool, SELECT, "r", caller.team_id, q, |m: &RegisteredModel| (m.created_at, m.id)).await?;
    Ok(Json(RegisteredModelList { models, has_more: next_after.is_some(), next_after }))
}

async fn find(state: &AppState, caller: &Caller, name: &str) -> ApiResult<Option<RegisteredModel>> {
    Ok(sqlx::query_as(&format!("{SELECT} WHERE r.team_id = $1 AND r.name = $2")).bind(caller.team_id).bind(name).fetch_optional(&state.pool).await?)
}

#[utoipa::path(get, path = "/registered-models/{name}", tag = "models", params(("name" = String, Path, description = "the model's name")),
    responses((status = 200, body = RegisteredModel)))]
pub async fn get_registered_model(State(state): State<AppState>, caller: Caller, Path(name): Path<String>) -> ApiResult<Json<RegisteredModel>> {
    let model = find(&state, &caller, &name).await?;
    Ok(Json(model.ok_or_else(|| ApiError::NotFound(format!("registered model {:?}", absa_jobs::spec::truncate(&name, 70))))?))
}

/// A registered model to create, or the description and tags of one to update (its
/// task and labels never change: its versions are compared on them).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisteredModelSpec {
    /// sentiment or stance; needed to create.
    task: Option<String>,
    /// The classes in output order; needed to create.
    label_names: Option<Vec<String>>,
    /// At most 2,000 characters.
    description: Option<String>,
    /// At most 50 string values, keys of 1 to 64 characters, values of at most 256.
    #[schema(value_type = Option<Object>)]
    tags: Option<Map<String, Value>>,
}

/// Creates the registered model `name` (201), or updates its description and tags (200).
#[utoipa::path(put, path = "/registered-models/{name}", tag = "models", params(("name" = String, Path, description = "the model's name")),
    request_body = RegisteredModelSpec,
    responses((status = 201, description = "created", body = RegisteredModel), (status = 200, description = "updated", body = RegisteredModel)))]
pub async fn put_registered_model(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> ApiResult<(StatusCode, Json<RegisteredModel>)> {
    caller.require(Role::Mlops)?;
    let spec: RegisteredModelSpec = read_json(&headers, body, state.api.max_json_bytes).await?;
    if !absa_jobs::promotion::valid_model_name(&name) {
        return Err(ApiError::Unprocessable(format!("name {:?}: lower-case letters, digits, '-' and '_' (at most 63)", absa_jobs::spec::truncate(&name, 70))));
    }
    if spec.description.as_ref().is_some_and(|d| d.chars().count() > MAX_DESCRIPTION_CHARS) {
        return Err(ApiError::Unprocessable(format!("description: at most {MAX_DESCRIPTION_CHARS} characters")));
    }
    if let Some(tags) = &spec.tags {
        super::tags::check(tags)?;
    }
    if let Some(task) = spec.task.as_deref().filter(|t| !["sentiment", "stance"].contains(t)) {
        return Err(ApiError::Unprocessable(format!("task {:?}: sentiment or stance", absa_jobs::spec::truncate(task, 40))));
    }
    if let Some(labels) = &spec.label_names {
        absa_jobs::spec::check_labels(labels).map_err(|e| ApiError::Unprocessable(e.replacen("labels", "label_names", 1)))?;
    }
    let tags = spec.tags.clone().map(Value::Object);
    let status = match find(&state, &caller, &name).await? {
        Some(existing) => {
            if spec.task.as_ref().is_some_and(|t| *t != existing.task) || spec.label_names.as_ref().is_some_and(|l| *l != existing.label_names) {
                return Err(ApiError::Unprocessable(format!(
                    "task: the model {name:?} is for {} with the labels {}; a registered model's task and labels do not change",
                    existing.task,
                    existing.label_names.join(", ")
                )));
            }
            sqlx::query("UPDATE registered_models SET description = coalesce($3, description), tags = coalesce($4, tags) WHERE team_id = $1 AND name = $2")
                .bind(caller.team_id)
                .bind(&name)
                .bind(&spec.description)
                .bind(&tags)
                .execute(&state.pool)
                .await?;
            StatusCode::OK
        }
        None => {
            let (Some(task), Some(labels)) = (&spec.task, &spec.label_names) else {
                return Err(ApiError::Unprocessable(format!("task: a new registered model ({name:?}) needs task and label_names")));
            };
            let inserted = sqlx::query(
                "INSERT INTO registered_models (team_id, name, task, label_names, description, tags) VALUES ($1, $2, $3, $4, coalesce($5, ''), coalesce($6, '{}'))
                 ON CONFLICT (team_id, name) DO NOTHING",
            )
            .bind(caller.team_id)
            .bind(&name)
            .bind(task)
            .bind(labels)
            .bind(&spec.description)
            .bind(&tags)
            .execute(&state.pool)
            .await?;
            if inserted.rows_affected() == 0 {
                return Err(ApiError::Conflict(format!("registered model {name:?} was created meanwhile; send the request again")));
            }
            StatusCode::CREATED
        }
    };
    let model = find(&state, &caller, &name).await?.ok_or_else(|| ApiError::Internal(format!("registered model {name} vanished")))?;
    Ok((status, Json(model)))
}
