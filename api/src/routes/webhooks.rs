//! `/v1/webhooks`: URLs a team registers to hear of its jobs' state changes, and each
//! one's delivery log. The scheduler sends them (`absa_store::webhooks`).

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::{Caller, Role};
use crate::error::{read_json, ApiError, ApiResult};

/// Webhooks one team may hold.
pub const MAX_PER_TEAM: i64 = 20;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWebhook {
    /// An http:// or https:// URL of at most 2000 characters.
    url: String,
}

/// A registered URL. `secret` (the HMAC-SHA256 key of `X-Absa-Signature`) is only in
/// the answer that registers it.
#[derive(Serialize, ToSchema, sqlx::FromRow)]
pub struct Webhook {
    id: Uuid,
    url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[sqlx(default)]
    secret: Option<String>,
    created_at: DateTime<Utc>,
}

#[derive(Serialize, ToSchema)]
pub struct WebhookList {
    webhooks: Vec<Webhook>,
}

/// Registers a URL; the answer shows its signing secret, this once.
#[utoipa::path(post, path = "/webhooks", tag = "webhooks", request_body = NewWebhook, responses((status = 201, body = Webhook)))]
pub async fn create_webhook(
    State(state): State<AppState>,
    caller: Caller,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> ApiResult<(StatusCode, Json<Webhook>)> {
    caller.require(Role::Mlops)?;
    let req: NewWebhook = read_json(&headers, body, state.api.max_json_bytes).await?;
    let url = req.url.trim();
    let parsed = url.parse::<axum::http::Uri>().ok().filter(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some());
    if parsed.is_none() || url.len() > 2000 {
        return Err(ApiError::Unprocessable(format!(
            "url: an http:// or https:// URL of at most 2000 characters, not {:?}",
            absa_jobs::spec::truncate(url, 80)
        )));
    }
    let (id, secret) = (Uuid::new_v4(), absa_store::webhooks::new_secret());
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
    Ok((StatusCode::CREATED, Json(Webhook { id, url: url.to_owned(), secret: Some(secret), created_at: created })))
}

#[utoipa::path(get, path = "/webhooks", tag = "webhooks", responses((status = 200, body = WebhookList)))]
pub async fn list_webhooks(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<WebhookList>> {
    let webhooks: Vec<Webhook> =
        sqlx::query_as("SELECT id, url, created_at FROM webhooks WHERE team_id = $1 ORDER BY created_at").bind(caller.team_id).fetch_all(&state.pool).await?;
    Ok(Json(WebhookList { webhooks }))
}

#[utoipa::path(delete, path = "/webhooks/{id}", tag = "webhooks", params(("id" = Uuid, Path, description = "the webhook's id")), responses((status = 204, description = "deleted")))]
pub async fn delete_webhook(State(state): State<AppState>, caller: Caller, Path(id): Path<Uuid>) -> ApiResult<StatusCode> {
    caller.require(Role::Mlops)?;
    let done = sqlx::query("DELETE FROM webhooks WHERE id = $1 AND team_id = $2").bind(id).bind(caller.team_id).execute(&state.pool).await?;
    if done.rows_affected() == 0 {
        return Err(ApiError::NotFound(format!("webhook {id}")));
    }
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
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

/// One POST of a job's state change to a webhook, and how it went.
#[derive(Serialize, ToSchema)]
pub struct Delivery {
    id: i64,
    job_id: Uuid,
    /// The body POSTed (signed in `X-Absa-Signature`).
    payload: Value,
    /// pending, delivered or gave_up.
    state: String,
    attempts: i32,
    next_attempt_at: DateTime<Utc>,
    delivered_at: Option<DateTime<Utc>>,
    gave_up_at: Option<DateTime<Utc>>,
    /// The receiver's last HTTP status.
    last_status: Option<i32>,
    last_error: Option<String>,
}

/// A page of deliveries, newest first; while `has_more`, pass `next_before` as `before`.
#[derive(Serialize, ToSchema)]
pub struct DeliveryList {
    deliveries: Vec<Delivery>,
    has_more: bool,
    next_before: Option<i64>,
}

/// The delivery log of one webhook, newest first, paged by id.
#[utoipa::path(get, path = "/webhooks/{id}/deliveries", tag = "webhooks", params(("id" = Uuid, Path, description = "the webhook's id"), DeliveryPage),
    responses((status = 200, body = DeliveryList)))]
pub async fn list_deliveries(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    Query(page): Query<DeliveryPage>,
) -> ApiResult<Json<DeliveryList>> {
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
    let deliveries = rows
        .into_iter()
        .map(|(id, job_id, payload, attempts, next_attempt_at, delivered_at, gave_up_at, last_status, last_error)| {
            let state = if delivered_at.is_some() {
                "delivered"
            } else if gave_up_at.is_some() {
                "gave_up"
            } else {
                "pending"
            };
            Delivery { id, job_id, payload, state: state.into(), attempts, next_attempt_at, delivered_at, gave_up_at, last_status, last_error }
        })
        .collect();
    Ok(Json(DeliveryList { deliveries, has_more: next_before.is_some(), next_before }))
}
