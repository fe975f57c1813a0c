//! `/v1/me`, `/v1/keys`, `/v1/teams`, `/v1/bi-logins`: who is calling, and what admins
//! manage.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::{self, Caller, Role};
use crate::error::{read_json, ApiError, ApiResult};

pub async fn me(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    let team: String = sqlx::query_scalar("SELECT name FROM teams WHERE id = $1").bind(caller.team_id).fetch_one(&state.pool).await?;
    Ok(Json(
        json!({ "team_id": caller.team_id, "team": team, "role": caller.role.as_str(), "key_id": caller.key_id, "max_upload_bytes": state.api.max_upload_bytes }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    name: String,
    role: Role,
}

pub async fn create_key(
    State(state): State<AppState>,
    caller: Caller,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> ApiResult<(StatusCode, Json<Value>)> {
    caller.require(Role::Admin)?;
    let req: NewKey = read_json(&headers, body, state.api.max_json_bytes).await?;
    let (id, key) = auth::create_key(&state.pool, caller.team_id, &req.name, req.role).await?;
    Ok((StatusCode::CREATED, Json(json!({ "id": id, "name": req.name, "role": req.role, "key": key }))))
}

pub async fn list_keys(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    caller.require(Role::Admin)?;
    type KeyRow = (Uuid, String, String, chrono::DateTime<chrono::Utc>, Option<chrono::DateTime<chrono::Utc>>);
    let rows: Vec<KeyRow> = sqlx::query_as("SELECT id, name, role, created_at, revoked_at FROM api_keys WHERE team_id = $1 ORDER BY created_at")
        .bind(caller.team_id)
        .fetch_all(&state.pool)
        .await?;
    let keys: Vec<Value> = rows.into_iter().map(|(id, n, r, c, rv)| json!({"id": id, "name": n, "role": r, "created_at": c, "revoked_at": rv})).collect();
    Ok(Json(json!({ "keys": keys })))
}

pub async fn revoke_key(State(state): State<AppState>, caller: Caller, Path(id): Path<Uuid>) -> ApiResult<StatusCode> {
    caller.require(Role::Admin)?;
    let done = sqlx::query("UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND team_id = $2 AND revoked_at IS NULL")
        .bind(id)
        .bind(caller.team_id)
        .execute(&state.pool)
        .await?;
    if done.rows_affected() == 0 {
        return Err(ApiError::NotFound(format!("key {id}")));
    }
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTeam {
    name: String,
}

/// A new team with its first admin key (shown once). Only admins of the platform team
/// (`api.platform_team`) may: a team's own admin manages that team, not the service.
pub async fn create_team(
    State(state): State<AppState>,
    caller: Caller,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> ApiResult<(StatusCode, Json<Value>)> {
    caller.require(Role::Admin)?;
    let platform_admin = match &state.api.platform_team {
        Some(name) => {
            sqlx::query_scalar::<_, bool>("SELECT EXISTS (SELECT 1 FROM teams WHERE id = $1 AND name = $2)")
                .bind(caller.team_id)
                .bind(name)
                .fetch_one(&state.pool)
                .await?
        }
        None => false,
    };
    if !platform_admin {
        return Err(ApiError::Forbidden { needed: "platform admin (an admin of the team named by api.platform_team)", has: caller.role.as_str() });
    }
    let req: NewTeam = read_json(&headers, body, state.api.max_json_bytes).await?;
    if req.name.trim().is_empty() || req.name.len() > 100 {
        return Err(ApiError::BadRequest("name: 1 to 100 characters".into()));
    }
    let id = Uuid::new_v4();
    let inserted =
        sqlx::query("INSERT INTO teams (id, name) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING").bind(id).bind(&req.name).execute(&state.pool).await?;
    if inserted.rows_affected() == 0 {
        return Err(ApiError::Conflict("that team name is taken".into()));
    }
    let (_, key) = auth::create_key(&state.pool, id, "admin", Role::Admin).await?;
    Ok((StatusCode::CREATED, Json(json!({ "team_id": id, "name": req.name, "admin_key": key }))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewBiLogin {
    role_name: String,
    password: String,
    /// Days until the login expires (1 to 365, default 90).
    valid_days: Option<i64>,
}

/// A Postgres login that reads only this team's BI views, expiring after `valid_days`.
pub async fn create_bi_login(
    State(state): State<AppState>,
    caller: Caller,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> ApiResult<(StatusCode, Json<Value>)> {
    caller.require(Role::Admin)?;
    let req: NewBiLogin = read_json(&headers, body, state.api.max_json_bytes).await?;
    let days = req.valid_days.unwrap_or(90);
    if !(1..=365).contains(&days) {
        return Err(ApiError::Unprocessable(format!("valid_days {days}: 1 to 365")));
    }
    let valid_until = chrono::Utc::now() + chrono::Duration::days(days);
    absa_platform::bi::create_login(&state.pool, caller.team_id, &req.role_name, &req.password, Some(valid_until)).await?;
    Ok((
        StatusCode::CREATED,
        Json(
            json!({ "role_name": req.role_name, "valid_until": valid_until, "views": ["bi_sentiment", "bi_stance", "bi_daily_aspect_sentiment", "bi_daily_stance"] }),
        ),
    ))
}

/// The team's BI logins and when they expire.
pub async fn list_bi_logins(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    caller.require(Role::Admin)?;
    let logins = absa_platform::bi::list_logins(&state.pool, caller.team_id).await?;
    let logins: Vec<Value> = logins.into_iter().map(|(name, until)| json!({ "role_name": name, "valid_until": until })).collect();
    Ok(Json(json!({ "bi_logins": logins })))
}

/// Drops one of the team's BI logins (404 for another team's or an unknown name).
pub async fn drop_bi_login(State(state): State<AppState>, caller: Caller, Path(name): Path<String>) -> ApiResult<StatusCode> {
    caller.require(Role::Admin)?;
    if absa_platform::bi::validate_role_name(&name).is_err() || !absa_platform::bi::drop_login(&state.pool, caller.team_id, &name).await? {
        return Err(ApiError::NotFound(format!("BI login {:?}", absa_platform::job_spec::truncate(&name, 70))));
    }
    Ok(StatusCode::NO_CONTENT)
}
