//! `/v1/schedules`: retrains on a cron schedule and/or when a dataset gains rows. The
//! scheduler fires them (`absa_platform::retrains::fire_due`).

use absa_platform::registry::PromotionPolicy;
use absa_platform::retrains;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::Utc;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::{Caller, Role};
use crate::error::{read_json, ApiError, ApiResult};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSchedule {
    name: String,
    dataset_id: Uuid,
    base_model: String,
    #[serde(default)]
    hyperparameters: Map<String, Value>,
    labels: Option<Vec<String>>,
    cron: Option<String>,
    #[serde(default)]
    on_new_rows: bool,
    promote: Option<PromotionPolicy>,
}

type ScheduleRow = (
    Uuid,
    String,
    Uuid,
    Value,
    Option<String>,
    bool,
    Option<chrono::DateTime<Utc>>,
    i64,
    Option<chrono::DateTime<Utc>>,
    Option<Uuid>,
    bool,
    chrono::DateTime<Utc>,
);
const SELECT: &str = "SELECT id, name, dataset_id, job_parameters, cron, on_new_rows, next_run_at, seen_rows, last_fired_at, last_job_id, enabled, created_at FROM retrain_schedules";

fn schedule_json(r: ScheduleRow) -> Value {
    let (id, name, dataset, params, cron, on_new_rows, next, seen, last, last_job, enabled, created) = r;
    json!({"id": id, "name": name, "dataset_id": dataset, "job_parameters": params, "cron": cron, "on_new_rows": on_new_rows,
           "next_run_at": next, "seen_rows": seen, "last_fired_at": last, "last_job_id": last_job, "enabled": enabled, "created_at": created})
}

pub async fn create_schedule(
    State(state): State<AppState>,
    caller: Caller,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> ApiResult<(StatusCode, Json<Value>)> {
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
                    absa_platform::job_spec::truncate(c, 60),
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
    // Every firing submits this training job: it is checked as the train route checks one.
    absa_platform::job_spec::check_train(&params).map_err(ApiError::Unprocessable)?;
    super::jobs::check_base_model(&state, &req.base_model).await?;
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

async fn get(state: &AppState, caller: &Caller, id: Uuid) -> ApiResult<Value> {
    let row: Option<ScheduleRow> =
        sqlx::query_as(&format!("{SELECT} WHERE id = $1 AND team_id = $2")).bind(id).bind(caller.team_id).fetch_optional(&state.pool).await?;
    row.map(schedule_json).ok_or_else(|| ApiError::NotFound(format!("schedule {id}")))
}

pub async fn get_schedule(State(state): State<AppState>, caller: Caller, Path(id): Path<Uuid>) -> ApiResult<Json<Value>> {
    Ok(Json(get(&state, &caller, id).await?))
}

pub async fn list_schedules(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    let rows: Vec<ScheduleRow> =
        sqlx::query_as(&format!("{SELECT} WHERE team_id = $1 ORDER BY created_at")).bind(caller.team_id).fetch_all(&state.pool).await?;
    Ok(Json(json!({ "schedules": rows.into_iter().map(schedule_json).collect::<Vec<_>>() })))
}

pub async fn delete_schedule(State(state): State<AppState>, caller: Caller, Path(id): Path<Uuid>) -> ApiResult<StatusCode> {
    caller.require(Role::Mlops)?;
    let done = sqlx::query("DELETE FROM retrain_schedules WHERE id = $1 AND team_id = $2").bind(id).bind(caller.team_id).execute(&state.pool).await?;
    if done.rows_affected() == 0 {
        return Err(ApiError::NotFound(format!("schedule {id}")));
    }
    Ok(StatusCode::NO_CONTENT)
}
