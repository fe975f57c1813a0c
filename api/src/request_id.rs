//! A request id for every request: the caller's `X-Request-Id` when it is a short
//! token, a new UUID otherwise. Every log line of the request carries it (a tracing
//! span around the handler), the answer echoes it in `X-Request-Id`, error bodies carry
//! it as `request_id`, and one access-log line per request records route, status and
//! time. The same middleware observes the latency histogram of `/metrics` (whose
//! `_count` counts the requests), so route and timing are taken once per request.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{header, HeaderValue};

use crate::error::PROBLEM_JSON;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

/// The header read from the caller and written on every answer.
pub const HEADER: &str = "x-request-id";

tokio::task_local! {
    static CURRENT: String;
}

/// The id of the request being handled; a new one outside a request (a unit test).
pub fn current() -> String {
    CURRENT.try_with(String::clone).unwrap_or_else(|_| uuid::Uuid::new_v4().to_string())
}

/// A caller's id is kept when it is 1-64 characters of `[A-Za-z0-9._:-]`: anything
/// else could forge log lines or bloat them.
fn accepted(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.chars().all(|c| c.is_ascii_alphanumeric() || "._:-".contains(c))
}

/// The middleware: the id, the span, the header, the latency histogram, the access log.
pub async fn layer(request: Request, next: Next) -> Response {
    let id = request.headers().get(HEADER).and_then(|v| v.to_str().ok()).filter(|v| accepted(v)).map(str::to_owned);
    let id = id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let route = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "unmatched".into());
    let method = request.method().clone();
    let span = tracing::info_span!("request", request_id = %id, %method, %route);
    let started = Instant::now();
    let mut response = CURRENT.scope(id.clone(), next.run(request)).instrument(span.clone()).await;
    if response.status().as_u16() >= 400 && response.headers().get(header::CONTENT_TYPE).is_none_or(|t| t != PROBLEM_JSON) {
        response = as_problem(response, &id).await;
    }
    response.headers_mut().insert(HEADER, HeaderValue::from_str(&id).expect("a UUID or an accepted id is a valid header value"));
    let (status, seconds) = (response.status().as_u16(), started.elapsed().as_secs_f64());
    let labels = absa_platform::metrics::labels(&[("route", &route), ("method", method.as_str()), ("status", &status.to_string())]);
    absa_platform::metrics::API.request_seconds.get_or_create(&labels).observe(seconds);
    let millis = seconds * 1000.0;
    span.in_scope(|| {
        // Probes and scrapes come every few seconds: logged at debug level only.
        if matches!(route.as_str(), "/healthz" | "/readyz" | "/metrics") {
            tracing::debug!(status, millis, "request");
        } else {
            tracing::info!(status, millis, "request");
        }
    });
    response
}

/// An error answer the handlers did not make (axum's rejection of a malformed path or
/// query, an unknown route, a wrong method) in the problem+json shape, its text as the
/// detail and its other headers (`Allow`) kept.
async fn as_problem(response: Response, id: &str) -> Response {
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 << 10).await.map(|b| String::from_utf8_lossy(&b).trim().to_owned()).unwrap_or_default();
    let detail = if text.is_empty() { parts.status.canonical_reason().unwrap_or("error").to_lowercase() } else { text };
    let mut problem = crate::error::problem(parts.status, &detail, serde_json::Map::new(), id);
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            problem.headers_mut().insert(name, value.clone());
        }
    }
    problem
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_short_plain_tokens_are_kept() {
        assert!(accepted("probe-123") && accepted("a.b:c_d") && accepted(&"x".repeat(64)));
        assert!(!accepted("") && !accepted(&"x".repeat(65)) && !accepted("a b") && !accepted("a\nb") && !accepted("é"));
    }

    #[tokio::test]
    async fn the_current_id_is_the_scoped_one_and_fresh_outside() {
        let inside = CURRENT.scope("abc".to_owned(), async { current() }).await;
        assert_eq!(inside, "abc");
        assert!(uuid::Uuid::parse_str(&current()).is_ok());
    }
}
