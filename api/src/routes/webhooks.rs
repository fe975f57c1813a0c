//! `/v1/webhooks`: URLs a team registers to hear of its jobs' state changes, and each
//! one's delivery log. The scheduler sends them (`absa_platform::webhooks`).

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::{Caller, Role};
use crate::error::{read_json, ApiError, ApiResult};

/// Webhooks one team may hold.
pub const MAX_PER_TEAM: i64 = 20;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewWebhook {
    url: String,
}

/// Registers a URL; the answer shows its signing secret, this once.
pub async fn create_webhook(
    State(state): State<AppState>,
    caller: Caller,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> ApiResult<(StatusCode, Json<Value>)> {
    caller.require(Role::Mlops)?;
    let req: NewWebhook = read_json(&headers, body, state.api.max_json_bytes).await?;
    let url = req.url.trim();
    let parsed = url.parse::<axum::http::Uri>().ok().filter(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some());
    if parsed.is_none() || url.len() > 2000 {
        return Err(ApiError::Unprocessable(format!(
            "url: an http:// or https:// URL of at most 2000 characters, not {:?}",
            absa_platform::job_spec::truncate(url, 80)
        )));
    }
    let (id, secret) = (Uuid::new_v4(), absa_platform::webhooks::new_secret());
    // The count and the insert in one statement: concurrent registrations cannot pass the cap together.
    let created: Option<chrono::DateTime<chrono::Utc>> = sqlx::query_scalar(
        "INSERT INTO webhooks (id, team_id, url, secret)
         SELECT $1, $2, $3, $4 WHERE (SELECT count(*) FROM webhooks WHERE team_id = $2) < $5
         RETURNING created_at",
    )
    .bind(id)
    .bind(caller.team_id)
    .bind(url)
    .bind(&secret)
    .bind(MAX_PER_TEAM)
    .fetch_optional(&state.pool)
    .await?;
    let created = created.ok_or_else(|| ApiError::TooMany(format!("a team holds at most {MAX_PER_TEAM} webhooks")))?;
    Ok((StatusCode::CREATED, Json(json!({ "id": id, "url": url, "secret": secret, "created_at": created }))))
}

pub async fn list_webhooks(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    let rows: Vec<(Uuid, String, chrono::DateTime<chrono::Utc>)> =
        sqlx::query_as("SELECT id, url, created_at FROM webhooks WHERE team_id = $1 ORDER BY created_at").bind(caller.team_id).fetch_all(&state.pool).await?;
    let hooks: Vec<Value> = rows.into_iter().map(|(id, url, created)| json!({ "id": id, "url": url, "created_at": created })).collect();
    Ok(Json(json!({ "webhooks": hooks })))
}

pub async fn delete_webhook(State(state): State<AppState>, caller: Caller, Path(id): Path<Uuid>) -> ApiResult<StatusCode> {
    caller.require(Role::Mlops)?;
    let done = sqlx::query("DELETE FROM webhooks WHERE id = $1 AND team_id = $2").bind(id).bind(caller.team_id).execute(&state.pool).await?;
    if done.rows_affected() == 0 {
        return Err(ApiError::NotFound(format!("webhook {id}")));
    }
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryPage {
    /// At most this many, newest first (default 100, at most 1000).
    limit: Option<i64>,
    /// Only deliveries with a smaller id (the previous page's `next_before`).
    before: Option<i64>,
}

type DeliveryRow = (
    i64,
    Uuid,
    Value,
    i32,
    chrono::DateTime<chrono::Utc>,
    Option<chrono::DateTime<chrono::Utc>>,
    Option<chrono::DateTime<chrono::Utc>>,
    Option<i32>,
    Option<String>,
);

/// The delivery log of one webhook, newest first, paged by id.
pub async fn list_deliveries(State(state): State<AppState>, caller: Caller, Path(id): Path<Uuid>, Query(page): Query<DeliveryPage>) -> ApiResult<Json<Value>> {
    let limit = super::paging::limit(page.limit, 100, 1000)?;
    let owned: Option<Uuid> =
        sqlx::query_scalar("SELECT id FROM webhooks WHERE id = $1 AND team_id = $2").bind(id).bind(caller.team_id).fetch_optional(&state.pool).await?;
    owned.ok_or_else(|| ApiError::NotFound(format!("webhook {id}")))?;
    let rows: Vec<DeliveryRow> = sqlx::query_as(
        "SELECT id, job_id, payload, attempts, next_attempt_at, delivered_at, gave_up_at, last_status, last_error
         FROM webhook_deliveries WHERE webhook_id = $1 AND ($2::bigint IS NULL OR id < $2) ORDER BY id DESC LIMIT $3",
    )
    .bind(id)
    .bind(page.before)
    .bind(limit + 1)
    .fetch_all(&state.pool)
    .await?;
    let (rows, next_before) = super::paging::split(rows, limit, |r| r.0);
    let deliveries: Vec<Value> = rows
        .into_iter()
        .map(|(id, job, payload, attempts, next, delivered, gave_up, status, error)| {
            let state = if delivered.is_some() {
                "delivered"
            } else if gave_up.is_some() {
                "gave_up"
            } else {
                "pending"
            };
            json!({ "id": id, "job_id": job, "payload": payload, "state": state, "attempts": attempts, "next_attempt_at": next,
                    "delivered_at": delivered, "gave_up_at": gave_up, "last_status": status, "last_error": error })
        })
        .collect();
    Ok(Json(json!({ "deliveries": deliveries, "has_more": next_before.is_some(), "next_before": next_before })))
}
