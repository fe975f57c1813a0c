use absa_platform::config::{AmqpSettings, DatabaseSettings, LogSettings};
use serde::Deserialize;

/// `absa-scheduler`'s configuration (file plus `ABSA_*` overrides).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub amqp: AmqpSettings,
    pub log: LogSettings,
}
