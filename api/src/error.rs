//! Errors as HTTP answers in the RFC 9457 shape (`application/problem+json`): `type`,
//! `title`, `status`, `detail`, the offending `field` where there is one, and the
//! `request_id` of the request's log lines ([`crate::request_id`]); `error` repeats
//! `detail` for clients written before. Another team's ids are answered exactly like
//! unknown ones (404), so nothing leaks across teams. Answers the handlers do not make
//! (axum's own rejections, unknown routes) get the same shape in
//! [`crate::request_id::layer`] through [`problem`].

use axum::body::Body;
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

/// The media type of every error answer.
pub const PROBLEM_JSON: &str = "application/problem+json";

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
        match self {
            Self::Internal(detail) => {
                // Database and I/O texts can name tables, paths and other teams' values:
                // they stay in the log, found again by the id the caller reports.
                tracing::error!(%request_id, error = %detail, "request failed");
                problem(status, &format!("internal error (request id {request_id}); the service's log has the details"), Map::new(), &request_id)
            }
            Self::ConflictWith { message, body } => {
                tracing::info!(%request_id, %message, "conflict");
                problem(status, &message, body.as_object().cloned().unwrap_or_default(), &request_id)
            }
            Self::Conflict(message) => {
                tracing::info!(%request_id, %message, "conflict");
                problem(status, &message, Map::new(), &request_id)
            }
            other => problem(status, &other.to_string(), Map::new(), &request_id),
        }
    }
}

/// The `type` (a URN naming the kind of problem) and `title` of a status.
fn kind(status: StatusCode) -> (&'static str, &'static str) {
    match status.as_u16() {
        400 => ("bad-request", "The request cannot be read"),
        401 => ("unauthorized", "Missing or unknown API key"),
        403 => ("forbidden", "The key's role is not enough"),
        404 => ("not-found", "No such resource"),
        405 => ("method-not-allowed", "Method not allowed"),
        409 => ("conflict", "Conflict with the current state"),
        413 => ("too-large", "Request body too large"),
        415 => ("unsupported-media-type", "Unsupported media type"),
        422 => ("invalid", "Invalid request"),
        429 => ("quota", "A team quota is full"),
        500..=599 => ("internal", "Internal error"),
        _ => ("other", "Request failed"),
    }
}

/// A problem+json answer: `status` with `detail`, the field the detail names (if any),
/// the request's id, and `extra` members (a refused promotion's figures).
pub fn problem(status: StatusCode, detail: &str, extra: Map<String, Value>, request_id: &str) -> Response {
    let (slug, title) = kind(status);
    let mut body = extra;
    body.insert("type".into(), json!(format!("urn:absa:problem:{slug}")));
    body.insert("title".into(), json!(title));
    body.insert("status".into(), json!(status.as_u16()));
    body.insert("detail".into(), json!(detail));
    body.insert("error".into(), json!(detail));
    body.insert("request_id".into(), json!(request_id));
    if let Some(field) = field_of(detail) {
        body.insert("field".into(), json!(field));
    }
    let mut response = (status, Json(Value::Object(body))).into_response();
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    response
}

/// The request field a detail is about. Details name it first, `field: reason` or
/// `field <value>: reason` (`labels[2] "x": 1 to 50 characters`,
/// `hyperparameters.learning_rate 5: outside ...`), or in serde's words (`unknown field
/// \`x\``, `missing field \`y\``).
pub fn field_of(detail: &str) -> Option<String> {
    if let Some(rest) = detail.strip_prefix("request body: ") {
        let quoted = ["unknown field `", "missing field `"].iter().find_map(|p| rest.strip_prefix(p))?;
        return quoted.split('`').next().map(str::to_owned);
    }
    // A sweep's trial: the field its detail names.
    if let Some(rest) = detail.strip_prefix("trial ").and_then(|t| t.split_once(": ")).map(|(_, rest)| rest) {
        return field_of(rest);
    }
    if let Some(rest) = detail.strip_prefix("unknown hyperparameter \"") {
        return rest.split('"').next().map(|name| format!("hyperparameters.{name}"));
    }
    let (head, _) = detail.split_once(": ")?;
    let (path, value) = head.split_once(' ').unwrap_or((head, ""));
    let is_path = path.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && path.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.[]".contains(c));
    // At most one value after the path: a quoted string or a single word.
    let one_value = value.is_empty() || (value.starts_with('"') && value.ends_with('"')) || !value.contains(' ');
    (is_path && one_value).then(|| path.to_owned())
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
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("request body: {}", absa_jobs::spec::truncate(&e.to_string(), 300))))
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
        let message = body["detail"].as_str().unwrap();
        assert!(!message.contains("teams_name_key") && !message.contains("database"), "{message}");
        let id = body["request_id"].as_str().unwrap();
        assert!(message.contains(id) && uuid::Uuid::parse_str(id).is_ok(), "{body}");
    }

    #[tokio::test]
    async fn conflicts_carry_a_request_id_for_the_log() {
        let response = ApiError::Conflict("that team name is taken".into()).into_response();
        assert_eq!(response.status(), StatusCode::CONFLICT);
        let body: Value = serde_json::from_slice(&axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap()).unwrap();
        assert_eq!((body["detail"].as_str(), body["status"].as_u64()), (Some("that team name is taken"), Some(409)));
        assert_eq!((body["type"].as_str(), body["title"].as_str()), (Some("urn:absa:problem:conflict"), Some("Conflict with the current state")));
        assert!(uuid::Uuid::parse_str(body["request_id"].as_str().unwrap()).is_ok(), "{body}");
    }

    #[test]
    fn the_field_is_what_the_detail_names_first() {
        let cases = [
            ("name: 1 to 100 characters", Some("name")),
            ("labels[2] \"x y\": 1 to 50 characters", Some("labels[2]")),
            ("targets[0].aliases: at most 50, not 51", Some("targets[0].aliases")),
            ("hyperparameters.learning_rate 5: outside (0, 1]", Some("hyperparameters.learning_rate")),
            ("unknown hyperparameter \"lr\" (known: epochs, ...)", Some("hyperparameters.lr")),
            ("request body: unknown field `colour`, expected one of `url` at line 1 column 10", Some("colour")),
            ("request body: missing field `url` at line 1 column 2", Some("url")),
            ("request body: expected value at line 1 column 1", None),
            ("ranks 2 with gpus 1: a GPU job trains one rank per GPU", None),
            ("trial 3: hyperparameters.epochs 1000: outside [1, 100]", Some("hyperparameters.epochs")),
            ("job 5b4e not found", None),
            ("a schedule needs a cron expression, on_new_rows, or both", None),
        ];
        for (detail, field) in cases {
            assert_eq!(field_of(detail).as_deref(), field, "{detail}");
        }
    }
}
