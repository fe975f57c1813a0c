//! `/v1/schedules`: retrains on a cron schedule and/or when a dataset gains rows. The
//! scheduler fires them (`absa_store::retrains::fire_due`).

use absa_jobs::promotion::PromotionPolicy;
use absa_jobs::TrainParams;
use absa_store::retrains;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::DateTime;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use utoipa::ToSchema;
use uuid::Uuid;

use super::paging::{self, NamedPage};
use crate::app::AppState;
use crate::auth::{Caller, Role};
use crate::error::{read_json, ApiError, ApiResult};

/// A retrain: the training job it submits, and when (a cron expression, new rows in
/// the dataset, or both).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSchedule {
    /// Unique within the team; 1 to 100 characters.
    name: String,
    dataset_id: Uuid,
    base_model: String,
    #[serde(default)]
    #[schema(schema_with = absa_jobs::spec::hyperparameters_schema)]
    hyperparameters: Map<String, Value>,
    labels: Option<Vec<String>>,
    /// Six fields with seconds (`0 0 3 * * *`: 03:00 daily), UTC.
    cron: Option<String>,
    /// Also fire when the dataset has gained rows since the last firing.
    #[serde(default)]
    on_new_rows: bool,
    /// Default: production on macro-F1.
    promote: Option<PromotionPolicy>,
    /// The registered model each firing's version joins (see `POST /v1/jobs/train`).
    model: Option<String>,
}

/// A retrain schedule and its last firing.
#[derive(Serialize, ToSchema, sqlx::FromRow)]
pub struct Schedule {
    id: Uuid,
    name: String,
    dataset_id: Uuid,
    /// The training job each firing submits.
    job_parameters: Value,
    cron: Option<String>,
    on_new_rows: bool,
    next_run_at: Option<DateTime<Utc>>,
    /// The dataset's rows at the last firing.
    seen_rows: i64,
    last_fired_at: Option<DateTime<Utc>>,
    last_job_id: Option<Uuid>,
    enabled: bool,
    created_at: DateTime<Utc>,
}

#[derive(Serialize, ToSchema)]
pub struct ScheduleList {
    schedules: Vec<Schedule>,
    has_more: bool,
    next_after: Option<String>,
}

const SELECT: &str = "SELECT id, name, dataset_id, job_parameters, cron, on_new_rows, next_run_at, seen_rows, last_fired_at, last_job_id, enabled, created_at FROM retrain_schedules";

/// A retrain schedule (mlops); its job is checked now as a train submission is.
#[utoipa::path(post, path = "/schedules", tag = "schedules", request_body = NewSchedule, responses((status = 201, body = Schedule)))]
pub async fn create_schedule(
    State(state): State<AppState>,
    caller: Caller,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> ApiResult<(StatusCode, Json<Schedule>)> {
    caller.require(Role::Mlops)?;
    let req: NewSchedule = read_json(&headers, body, state.api.max_json_bytes).await?;
    if req.name.trim().is_empty() || req.name.chars().count() > 100 || req.name.contains('\0') {
        return Err(ApiError::Unprocessable("name: 1 to 100 characters".into()));
    }
    if req.cron.is_none() && !req.on_new_rows {
        return Err(ApiError::Unprocessable("a schedule needs a cron expression, on_new_rows, or both".into()));
    }
    let next = match &req.cron {
        Some(c) => {
            let cron = retrains::parse_cron(c)?;
            let gap = retrains::shortest_gap_secs(&cron, Utc::now())?;
            if gap < state.api.min_schedule_interval_secs {
                return Err(ApiError::Unprocessable(format!(
                    "cron {:?} fires {gap} s apart; a schedule fires at most every {} s",
                    absa_jobs::spec::truncate(c, 60),
                    state.api.min_schedule_interval_secs
                )));
            }
            Some(retrains::next_after(&cron, Utc::now())?)
        }
        None => None,
    };
    let promote = req.promote.unwrap_or_default();
    let mut params = json!({ "dataset_id": req.dataset_id, "base_model": req.base_model, "hyperparameters": req.hyperparameters,
                             "promote": promote });
    if let Some(labels) = &req.labels {
        params["labels"] = json!(labels);
    }
    if let Some(model) = &req.model {
        params["model"] = json!(model);
    }
    // Every firing submits this training job: it is checked as the train route checks
    // one, and stored as the trainer reads it.
    let params = serde_json::to_value(TrainParams::from_value(&params).map_err(ApiError::Unprocessable)?).expect("training parameters serialise");
    super::jobs::check_base_model(&state, &req.base_model).await?;
    super::jobs::check_model_labels(&state, &caller, req.model.as_deref(), req.dataset_id, req.labels.as_deref()).await?;
    let rows = super::jobs::dataset_rows(&state, &caller, req.dataset_id).await?;
    super::jobs::check_metrics_fit(&state, &caller, req.dataset_id, req.labels.as_deref(), &[("promote", promote.metric)]).await?;
    let id = Uuid::new_v4();
    let inserted = sqlx::query(
        "INSERT INTO retrain_schedules (id, team_id, name, dataset_id, job_parameters, cron, on_new_rows, next_run_at, seen_rows)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (team_id, name) DO NOTHING",
    )
    .bind(id)
    .bind(caller.team_id)
    .bind(&req.name)
    .bind(req.dataset_id)
    .bind(&params)
    .bind(&req.cron)
    .bind(req.on_new_rows)
    .bind(next)
    .bind(rows)
    .execute(&state.pool)
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(ApiError::Conflict(format!("a schedule named {:?} exists", req.name)));
    }
    Ok((StatusCode::CREATED, Json(get(&state, &caller, id).await?)))
}

async fn get(state: &AppState, caller: &Caller, id: Uuid) -> ApiResult<Schedule> {
    let row: Option<Schedule> =
        sqlx::query_as(&format!("{SELECT} WHERE id = $1 AND team_id = $2")).bind(id).bind(caller.team_id).fetch_optional(&state.pool).await?;
    row.ok_or_else(|| ApiError::NotFound(format!("schedule {id}")))
}

#[utoipa::path(get, path = "/schedules/{id}", tag = "schedules", params(("id" = Uuid, Path, description = "the schedule's id")), responses((status = 200, body = Schedule)))]
pub async fn get_schedule(State(state): State<AppState>, caller: Caller, Path(id): Path<Uuid>) -> ApiResult<Json<Schedule>> {
    Ok(Json(get(&state, &caller, id).await?))
}

/// The team's schedules, newest first, a page at a time.
#[utoipa::path(get, path = "/schedules", tag = "schedules", params(NamedPage), responses((status = 200, body = ScheduleList)))]
pub async fn list_schedules(State(state): State<AppState>, caller: Caller, Query(q): Query<NamedPage>) -> ApiResult<Json<ScheduleList>> {
    let (schedules, next_after) = paging::named_page(&state.pool, SELECT, "retrain_schedules", caller.team_id, q, |s: &Schedule| (s.created_at, s.id)).await?;
    Ok(Json(ScheduleList { schedules, has_more: next_after.is_some(), next_after }))
}

#[utoipa::path(delete, path = "/schedules/{id}", tag = "schedules", params(("id" = Uuid, Path, description = "the schedule's id")), responses((status = 204, description = "deleted")))]
pub async fn delete_schedule(State(state): State<AppState>, caller: Caller, Path(id): Path<Uuid>) -> ApiResult<StatusCode> {
    caller.require(Role::Mlops)?;
    let done = sqlx::query("DELETE FROM retrain_schedules WHERE id = $1 AND team_id = $2").bind(id).bind(caller.team_id).execute(&state.pool).await?;
    if done.rows_affected() == 0 {
        return Err(ApiError::NotFound(format!("schedule {id}")));
    }
    Ok(StatusCode::NO_CONTENT)
}
