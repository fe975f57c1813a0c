use absa_platform::config::{AmqpSettings, DatabaseSettings, LogSettings};
use serde::Deserialize;

/// `absa-api`'s configuration (file plus `ABSA_*` overrides).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub amqp: AmqpSettings,
    pub log: LogSettings,
    pub http: HttpSettings,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct HttpSettings {
    /// Address to listen on; port 0 picks a free port (tests).
    pub bind: String,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self { bind: "127.0.0.1:8080".into() }
    }
}
