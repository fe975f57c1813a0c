use absa_platform::config::{AmqpSettings, DatabaseSettings, LogSettings};
use absa_platform::metrics::MetricsSettings;
use absa_store::webhooks::WebhookSettings;
use serde::Deserialize;

/// `absa-scheduler`'s configuration (file plus `ABSA_*` overrides).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub amqp: AmqpSettings,
    pub log: LogSettings,
    /// `/metrics`, `/healthz` and `/readyz` (`[metrics] bind`; unset: not served).
    pub metrics: MetricsSettings,
    pub dispatch: DispatchSettings,
    /// Retries and timeouts of webhook deliveries (`ABSA_WEBHOOKS__RETRY_SECS`,
    /// `..__MAX_ATTEMPTS`, `..__TIMEOUT_SECS`).
    pub webhooks: WebhookSettings,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct DispatchSettings {
    /// Seconds between passes.
    pub interval_secs: f64,
    /// Deliveries of one message before RabbitMQ dead-letters it.
    pub delivery_limit: i64,
    /// Documents per shard of a scoring job whose parameters give no `shard_size`.
    pub shard_size: i64,
    /// Seconds a dispatched job may wait unclaimed before it is published again (its
    /// message sits behind a busy worker, or was lost with the broker).
    pub redispatch_after_secs: f64,
    /// What one team may hold at once (`ABSA_DISPATCH__QUOTAS__MAX_WAITING`,
    /// `..__MAX_ACTIVE`, `..__MAX_GPUS`; 0: no limit).
    pub quotas: absa_store::jobs::TeamQuotas,
}

impl Default for DispatchSettings {
    fn default() -> Self {
        Self { interval_secs: 1.0, delivery_limit: 5, shard_size: 5000, redispatch_after_secs: 30.0, quotas: Default::default() }
    }
}
