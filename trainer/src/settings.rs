use absa_platform::config::{AmqpSettings, DatabaseSettings, LogSettings};
use serde::Deserialize;

/// `absa-trainer`'s configuration (file plus `ABSA_*` overrides).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub amqp: AmqpSettings,
    pub log: LogSettings,
    pub torch: TorchSettings,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct TorchSettings {
    /// Intra-op threads for libtorch on CPU; 0 keeps libtorch's default (all cores).
    pub threads: i32,
}
