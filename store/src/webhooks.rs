//! Webhooks: every state change of a team's jobs POSTed to the URLs the team
//! registered, signed, retried with backoff, and logged.
//!
//! A trigger on `jobs` queues one delivery per webhook in the transaction that changes
//! the state (migration `20261206000013_webhooks`); the leading scheduler sends what is
//! due with [`deliver_due`]. Per webhook the deliveries go out in order: one waits
//! while an earlier one is still being retried. The body is the delivery's JSON
//! payload; [`SIGNATURE_HEADER`] carries `sha256=` and the hex HMAC-SHA256, keyed by the
//! webhook's secret, of `<timestamp>.<body>`, the timestamp being [`TIMESTAMP_HEADER`]
//! (Unix seconds), so a receiver can refuse replays.

use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;
use sqlx::PgPool;
use uuid::Uuid;

use crate::Result;

/// `sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`.
pub const SIGNATURE_HEADER: &str = "X-Absa-Signature";
/// Unix seconds when the delivery was sent; part of what is signed.
pub const TIMESTAMP_HEADER: &str = "X-Absa-Timestamp";
/// The delivery's id (the same on every retry of it).
pub const DELIVERY_HEADER: &str = "X-Absa-Delivery";

/// `[webhooks]` of the scheduler.
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct WebhookSettings {
    /// Seconds before the first retry; each later one waits twice as long, at most an hour.
    pub retry_secs: f64,
    /// Attempts before a delivery is given up.
    pub max_attempts: i32,
    /// Seconds a receiver has to answer one POST.
    pub timeout_secs: f64,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self { retry_secs: 10.0, max_attempts: 12, timeout_secs: 10.0 }
    }
}

/// A new secret: 64 hex digits from two random UUIDs (244 random bits).
pub fn new_secret() -> String {
    format!("whsec_{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple())
}

/// The value of [`SIGNATURE_HEADER`] for `body` sent at `timestamp`.
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    format!("sha256={}", digest.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// The seconds before attempt `attempts + 1` when `attempts` have failed.
pub fn backoff_secs(settings: &WebhookSettings, attempts: i32) -> f64 {
    (settings.retry_secs * 2f64.powi(attempts.clamp(1, 30) - 1)).min(3600.0)
}

/// What one pass of [`deliver_due`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct DeliveryReport {
    pub delivered: usize,
    pub failed: usize,
    pub gave_up: usize,
}

type Due = (i64, Uuid, String, String, serde_json::Value, i32);

/// Sends up to `limit` due deliveries, oldest first, at most one failure per webhook
/// per pass (its later deliveries wait for it), and records each answer.
pub async fn deliver_due(pool: &PgPool, settings: &WebhookSettings, limit: i64) -> Result<DeliveryReport> {
    let due: Vec<Due> = sqlx::query_as(
        "SELECT d.id, d.webhook_id, w.url, w.secret, d.payload, d.attempts
         FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id
         WHERE d.delivered_at IS NULL AND d.gave_up_at IS NULL AND d.next_attempt_at <= now()
           AND NOT EXISTS (SELECT 1 FROM webhook_deliveries e
                           WHERE e.webhook_id = d.webhook_id AND e.id < d.id AND e.delivered_at IS NULL AND e.gave_up_at IS NULL)
         ORDER BY d.id LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let mut report = DeliveryReport::default();
    // One client for the pass: connections to a receiver are reused across its deliveries.
    let timeout = Duration::from_secs_f64(settings.timeout_secs.max(0.1));
    let agent = ureq::Agent::new_with_config(ureq::Agent::config_builder().timeout_global(Some(timeout)).http_status_as_error(false).max_redirects(0).build());
    for (id, _webhook, url, secret, payload, attempts) in due {
        let body = payload.to_string();
        let agent = agent.clone();
        let answer = tokio::task::spawn_blocking(move || post(&agent, &url, &secret, id, &body)).await.unwrap_or_else(|e| Err(e.to_string()));
        let attempts = attempts + 1;
        match answer {
            Ok(status) if (200..300).contains(&status) => {
                sqlx::query("UPDATE webhook_deliveries SET attempts = $2, delivered_at = now(), last_status = $3, last_error = NULL WHERE id = $1")
                    .bind(id)
                    .bind(attempts)
                    .bind(i32::from(status))
                    .execute(pool)
                    .await?;
                report.delivered += 1;
            }
            failure => {
                let (status, error) = match failure {
                    Ok(status) => (Some(i32::from(status)), format!("answered {status}")),
                    Err(e) => (None, e),
                };
                let give_up = attempts >= settings.max_attempts;
                sqlx::query(
                    "UPDATE webhook_deliveries SET attempts = $2, last_status = $3, last_error = $4,
                            next_attempt_at = now() + make_interval(secs => $5),
                            gave_up_at = CASE WHEN $6 THEN now() END
                     WHERE id = $1",
                )
                .bind(id)
                .bind(attempts)
                .bind(status)
                .bind(absa_jobs::spec::truncate(&error, 500))
                .bind(backoff_secs(settings, attempts))
                .bind(give_up)
                .execute(pool)
                .await?;
                if give_up {
                    tracing::warn!(delivery = id, attempts, error = %error, "webhook delivery given up");
                    report.gave_up += 1;
                } else {
                    report.failed += 1;
                }
            }
        }
    }
    Ok(report)
}

/// One signed POST; the answer's status, or why there was none.
fn post(agent: &ureq::Agent, url: &str, secret: &str, delivery: i64, body: &str) -> std::result::Result<u16, String> {
    let timestamp = chrono::Utc::now().timestamp();
    let answer = agent
        .post(url)
        .header("Content-Type", "application/json")
        .header("User-Agent", concat!("absa-webhooks/", env!("CARGO_PKG_VERSION")))
        .header(SIGNATURE_HEADER, signature(secret, timestamp, body.as_bytes()))
        .header(TIMESTAMP_HEADER, timestamp.to_string())
        .header(DELIVERY_HEADER, delivery.to_string())
        .send(body);
    answer.map(|r| r.status().as_u16()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_hmac_of_timestamp_dot_body() {
        // HMAC-SHA256 with key "key" of "1700000000.{}", computed independently with
        // Python's hmac module.
        assert_eq!(signature("key", 1_700_000_000, b"{}"), "sha256=9d713ed406bb7076d4123f0dc2c39d2df5c654ed4b0cd56b52c8b4c940bd63ae");
    }

    #[test]
    fn retries_back_off_doubling_up_to_an_hour() {
        let s = WebhookSettings { retry_secs: 10.0, ..WebhookSettings::default() };
        assert_eq!([1, 2, 3, 4].map(|a| backoff_secs(&s, a)), [10.0, 20.0, 40.0, 80.0]);
        assert_eq!(backoff_secs(&s, 12), 3600.0);
    }
}
