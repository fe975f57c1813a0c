//! Errors as HTTP answers: a status and `{"error": message}`. Another team's ids are
//! answered exactly like unknown ones (404), so nothing leaks across teams.

use axum::http::StatusCode;
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
    #[error("upload larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("{0}")]
    Unprocessable(String),
    #[error("internal error: {0}")]
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
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::Internal(detail) = &self {
            tracing::error!(error = %detail, "request failed");
        }
        let status = self.status();
        let body = match self {
            Self::ConflictWith { message, mut body } => {
                body["error"] = json!(message);
                body
            }
            other => json!({ "error": other.to_string() }),
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

/// A JSON request body, parsed after the handler has checked the caller's role (so a
/// wrong role is a 403 whatever the body), with errors in the API's own shape.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("request body: {e}")))
}
