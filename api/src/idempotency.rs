//! Client `Idempotency-Key`s. A key names one request of one team: the same key with
//! the same request gets the first answer again, with another request a 422. Client
//! keys live in a namespace of their own (`client:` + key), so the scheduler's keys
//! (`retrain:...`, `sweep:...`, `shard:...`) can never match one. Job submissions keep
//! theirs on the job (`jobs.idempotency_key`, `jobs.request_hash`); uploads in
//! `upload_keys` with the answer they got.

use axum::http::HeaderMap;
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::error::{ApiError, ApiResult};

/// The request's key, namespaced; `None` without the header.
pub fn client_key(headers: &HeaderMap) -> ApiResult<Option<String>> {
    match headers.get("idempotency-key") {
        None => Ok(None),
        Some(v) => {
            let key = v.to_str().map_err(|_| ApiError::BadRequest("Idempotency-Key must be visible ASCII".into()))?;
            if key.is_empty() || key.len() > 200 {
                return Err(ApiError::BadRequest("Idempotency-Key: 1 to 200 characters".into()));
            }
            Ok(Some(format!("client:{key}")))
        }
    }
}

/// SHA-256 of the parts, in hex: what identifies a request behind a key.
pub fn digest(parts: &[&[u8]]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The refusal for a key already used with another request.
pub fn reused(what: &str) -> ApiError {
    ApiError::Unprocessable(format!("this Idempotency-Key was used for another request ({what}); use a new key for a new request"))
}

/// The answer an earlier upload with this key got, if any: `Err` (422) when that
/// upload was another request.
pub async fn prior_upload(conn: &mut PgConnection, team: Uuid, key: &str, request_hash: &str) -> ApiResult<Option<Value>> {
    let row: Option<(String, Value)> = sqlx::query_as("SELECT request_hash, response FROM upload_keys WHERE team_id = $1 AND idempotency_key = $2")
        .bind(team)
        .bind(key)
        .fetch_optional(&mut *conn)
        .await?;
    match row {
        None => Ok(None),
        Some((hash, response)) if hash == request_hash => Ok(Some(response)),
        Some(_) => Err(reused("an earlier upload")),
    }
}

/// Records an upload's key and answer inside the upload's transaction; `false` when a
/// concurrent upload with the same key committed first (the caller rolls back and
/// answers with [`prior_upload`]).
pub async fn record_upload(conn: &mut PgConnection, team: Uuid, key: &str, request_hash: &str, response: &Value) -> ApiResult<bool> {
    let done = sqlx::query("INSERT INTO upload_keys (team_id, idempotency_key, request_hash, response) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING")
        .bind(team)
        .bind(key)
        .bind(request_hash)
        .bind(response)
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected() == 1)
}
