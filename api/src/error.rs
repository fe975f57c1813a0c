//! Errors as HTTP answers: a status and `{"error": message, "request_id": id}` (the id
//! of the request's log lines, [`crate::request_id`]). Another team's ids are answered
//! exactly like unknown ones (404), so nothing leaks across teams.

use axum::body::Body;
use axum::http::header::CONTENT_LENGTH;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("missing or unknown API key (send `Authorization: Bearer <key>`)")]
    Unauthorized,
    #[error("this needs the {needed} role; the key has {has}")]
    Forbidden { needed: &'static str, has: &'static str },
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// A conflict that carries figures (a refused promotion).
    #[error("{message}")]
    ConflictWith { message: String, body: Value },
    #[error("request body larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("{0}")]
    Unprocessable(String),
    /// A team quota is full.
    #[error("{0}")]
    TooMany(String),
    /// The detail goes to the log under a request id; the caller sees only the id.
    #[error("internal error")]
    Internal(String),
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden { .. } => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) | Self::ConflictWith { .. } => StatusCode::CONFLICT,
            Self::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::TooMany(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let request_id = crate::request_id::current();
        let body = match self {
            Self::Internal(detail) => {
                // Database and I/O texts can name tables, paths and other teams' values:
                // they stay in the log, found again by the id the caller reports.
                tracing::error!(%request_id, error = %detail, "request failed");
                json!({ "error": format!("internal error (request id {request_id}); the service's log has the details"), "request_id": request_id })
            }
            Self::ConflictWith { message, mut body } => {
                tracing::info!(%request_id, %message, "conflict");
                body["error"] = json!(message);
                body["request_id"] = json!(request_id);
                body
            }
            Self::Conflict(message) => {
                tracing::info!(%request_id, %message, "conflict");
                json!({ "error": message, "request_id": request_id })
            }
            other => json!({ "error": other.to_string(), "request_id": request_id }),
        };
        (status, Json(body)).into_response()
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        Self::Internal(format!("database: {e}"))
    }
}

impl From<absa_platform::PlatformError> for ApiError {
    fn from(e: absa_platform::PlatformError) -> Self {
        match e {
            absa_platform::PlatformError::InvalidData(m) => Self::Unprocessable(m),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<std::io::Error> for ApiError {
    fn from(e: std::io::Error) -> Self {
        Self::Internal(format!("I/O: {e}"))
    }
}

/// 413 at once when the request's `Content-Length` is over `limit`, so the client gets
/// the answer instead of a connection closed mid-body.
pub fn refuse_declared_over(headers: &HeaderMap, limit: u64) -> ApiResult<()> {
    let declared = headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::TooLarge { limit });
    }
    Ok(())
}

/// A request body, read only after the handler has checked the caller's role (so a
/// wrong role is a 403 before any of the body is read) and only up to `limit` bytes
/// (413 past it, at once when `Content-Length` says so).
pub async fn read_body(headers: &HeaderMap, body: Body, limit: u64) -> ApiResult<Vec<u8>> {
    refuse_declared_over(headers, limit)?;
    let mut bytes = Vec::new();
    let mut stream = body.into_data_stream();
    while let Some(chunk) = futures_util::StreamExt::next(&mut stream).await {
        let chunk = chunk.map_err(|e| ApiError::BadRequest(format!("reading the request body: {e}")))?;
        if (bytes.len() + chunk.len()) as u64 > limit {
            return Err(ApiError::TooLarge { limit });
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// A JSON body in the API's error shape (a long parser message is cut).
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("request body: {}", absa_platform::job_spec::truncate(&e.to_string(), 300))))
}

/// [`read_body`] then [`parse_json`].
pub async fn read_json<T: serde::de::DeserializeOwned>(headers: &HeaderMap, body: Body, limit: u64) -> ApiResult<T> {
    parse_json(&read_body(headers, body, limit).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn internal_errors_show_a_request_id_not_the_detail() {
        let response = ApiError::Internal("database: duplicate key value violates unique constraint \"teams_name_key\"".into()).into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body: Value = serde_json::from_slice(&axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap()).unwrap();
        let message = body["error"].as_str().unwrap();
        assert!(!message.contains("teams_name_key") && !message.contains("database"), "{message}");
        let id = body["request_id"].as_str().unwrap();
        assert!(message.contains(id) && uuid::Uuid::parse_str(id).is_ok(), "{body}");
    }

    #[tokio::test]
    async fn conflicts_carry_a_request_id_for_the_log() {
        let response = ApiError::Conflict("that team name is taken".into()).into_response();
        assert_eq!(response.status(), StatusCode::CONFLICT);
        let body: Value = serde_json::from_slice(&axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap()).unwrap();
        assert_eq!(body["error"], "that team name is taken");
        assert!(uuid::Uuid::parse_str(body["request_id"].as_str().unwrap()).is_ok(), "{body}");
    }
}
