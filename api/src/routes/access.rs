//! `/v1/me`, `/v1/keys`, `/v1/teams`, `/v1/bi-logins`: who is calling, and what admins
//! manage.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::paging::{self, NamedPage};
use crate::app::AppState;
use crate::auth::{self, Caller, Role};
use crate::error::{read_json, ApiError, ApiResult};

/// The caller: its team, its key's role, and the upload limit it works under.
#[derive(Serialize, ToSchema)]
pub struct Me {
    team_id: Uuid,
    team: String,
    role: Role,
    key_id: Uuid,
    max_upload_bytes: u64,
}

#[utoipa::path(get, path = "/me", tag = "access", responses((status = 200, body = Me)))]
pub async fn me(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Me>> {
    let team: String = sqlx::query_scalar("SELECT name FROM teams WHERE id = $1").bind(caller.team_id).fetch_one(&state.pool).await?;
    Ok(Json(Me { team_id: caller.team_id, team, role: caller.role, key_id: caller.key_id, max_upload_bytes: state.api.max_upload_bytes }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    name: String,
    role: Role,
}

/// A new key; `key` is shown this once (only its hash is stored).
#[derive(Serialize, ToSchema)]
pub struct CreatedKey {
    id: Uuid,
    name: String,
    role: Role,
    key: String,
}

#[utoipa::path(post, path = "/keys", tag = "access", request_body = NewKey, responses((status = 201, body = CreatedKey)))]
pub async fn create_key(
    State(state): State<AppState>,
    caller: Caller,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> ApiResult<(StatusCode, Json<CreatedKey>)> {
    caller.require(Role::Admin)?;
    let req: NewKey = read_json(&headers, body, state.api.max_json_bytes).await?;
    let (id, key) = auth::create_key(&state.pool, caller.team_id, &req.name, req.role).await?;
    Ok((StatusCode::CREATED, Json(CreatedKey { id, name: req.name, role: req.role, key })))
}

/// A key of the team (never its secret).
#[derive(Serialize, ToSchema, sqlx::FromRow)]
pub struct Key {
    id: Uuid,
    name: String,
    /// analyst, mlops or admin.
    role: String,
    created_at: DateTime<Utc>,
    revoked_at: Option<DateTime<Utc>>,
}

#[derive(Serialize, ToSchema)]
pub struct KeyList {
    keys: Vec<Key>,
    has_more: bool,
    next_after: Option<String>,
}

/// The team's keys (revoked ones too), newest first, a page at a time.
#[utoipa::path(get, path = "/keys", tag = "access", params(NamedPage), responses((status = 200, body = KeyList)))]
pub async fn list_keys(State(state): State<AppState>, caller: Caller, Query(q): Query<NamedPage>) -> ApiResult<Json<KeyList>> {
    caller.require(Role::Admin)?;
    let select = "SELECT k.id, k.name, k.role, k.created_at, k.revoked_at FROM api_keys k";
    let (keys, next_after) = paging::named_page(&state.pool, select, "k", caller.team_id, q, |k: &Key| (k.created_at, k.id)).await?;
    Ok(Json(KeyList { keys, has_more: next_after.is_some(), next_after }))
}

#[utoipa::path(delete, path = "/keys/{id}", tag = "access", params(("id" = Uuid, Path, description = "the key's id")), responses((status = 204, description = "revoked")))]
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

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTeam {
    name: String,
}

/// A new team and its first admin key (shown this once).
#[derive(Serialize, ToSchema)]
pub struct CreatedTeam {
    team_id: Uuid,
    name: String,
    admin_key: String,
}

/// A new team with its first admin key (shown once). Only admins of the platform team
/// (`api.platform_team`) may: a team's own admin manages that team, not the service.
#[utoipa::path(post, path = "/teams", tag = "access", request_body = NewTeam, responses((status = 201, body = CreatedTeam)))]
pub async fn create_team(
    State(state): State<AppState>,
    caller: Caller,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> ApiResult<(StatusCode, Json<CreatedTeam>)> {
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
    Ok((StatusCode::CREATED, Json(CreatedTeam { team_id: id, name: req.name, admin_key: key })))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewBiLogin {
    role_name: String,
    password: String,
    /// Days until the login expires (1 to 365, default 90).
    valid_days: Option<i64>,
}

/// The views a BI login reads (its team's rows only).
const BI_VIEWS: [&str; 4] = ["bi_sentiment", "bi_stance", "bi_daily_aspect_sentiment", "bi_daily_stance"];

/// A BI login: a Postgres role that reads its team's BI views until `valid_until`.
#[derive(Serialize, ToSchema)]
pub struct BiLogin {
    role_name: String,
    valid_until: Option<DateTime<Utc>>,
    /// Only in the answer that creates it: the views it may read.
    #[serde(skip_serializing_if = "Option::is_none")]
    views: Option<Vec<String>>,
}

#[derive(Serialize, ToSchema)]
pub struct BiLoginList {
    bi_logins: Vec<BiLogin>,
    has_more: bool,
    next_after: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct BiLoginPage {
    /// At most this many, by role name (1 to 1000, default 100).
    limit: Option<i64>,
    /// The previous page's `next_after`: only the logins after it.
    after: Option<String>,
}

/// A Postgres login that reads only this team's BI views, expiring after `valid_days`.
#[utoipa::path(post, path = "/bi-logins", tag = "access", request_body = NewBiLogin, responses((status = 201, body = BiLogin)))]
pub async fn create_bi_login(
    State(state): State<AppState>,
    caller: Caller,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> ApiResult<(StatusCode, Json<BiLogin>)> {
    caller.require(Role::Admin)?;
    let req: NewBiLogin = read_json(&headers, body, state.api.max_json_bytes).await?;
    let days = req.valid_days.unwrap_or(90);
    if !(1..=365).contains(&days) {
        return Err(ApiError::Unprocessable(format!("valid_days {days}: 1 to 365")));
    }
    let valid_until = chrono::Utc::now() + chrono::Duration::days(days);
    absa_store::bi::create_login(&state.pool, caller.team_id, &req.role_name, &req.password, Some(valid_until)).await?;
    let views = Some(BI_VIEWS.map(str::to_owned).to_vec());
    Ok((StatusCode::CREATED, Json(BiLogin { role_name: req.role_name, valid_until: Some(valid_until), views })))
}

/// The team's BI logins and when they expire, by role name, a page at a time.
#[utoipa::path(get, path = "/bi-logins", tag = "access", params(BiLoginPage), responses((status = 200, body = BiLoginList)))]
pub async fn list_bi_logins(State(state): State<AppState>, caller: Caller, Query(page): Query<BiLoginPage>) -> ApiResult<Json<BiLoginList>> {
    caller.require(Role::Admin)?;
    let limit = paging::limit(page.limit, 100, 1000)?;
    let logins = absa_store::bi::list_logins(&state.pool, caller.team_id, page.after.as_deref(), limit + 1).await?;
    let (logins, next_after) = paging::split(logins, limit, |l| l.0.clone());
    let bi_logins = logins.into_iter().map(|(role_name, valid_until)| BiLogin { role_name, valid_until, views: None }).collect();
    Ok(Json(BiLoginList { bi_logins, has_more: next_after.is_some(), next_after }))
}

/// Drops one of the team's BI logins (404 for another team's or an unknown name).
#[utoipa::path(delete, path = "/bi-logins/{name}", tag = "access", params(("name" = String, Path, description = "the login's role name")), responses((status = 204, description = "dropped")))]
pub async fn drop_bi_login(State(state): State<AppState>, caller: Caller, Path(name): Path<String>) -> ApiResult<StatusCode> {
    caller.require(Role::Admin)?;
    if absa_store::bi::validate_role_name(&name).is_err() || !absa_store::bi::drop_login(&state.pool, caller.team_id, &name).await? {
        return Err(ApiError::NotFound(format!("BI login {:?}", absa_jobs::spec::truncate(&name, 70))));
    }
    Ok(StatusCode::NO_CONTENT)
}
