use std::path::PathBuf;

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
    pub api: ApiSettings,
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

#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct ApiSettings {
    /// Uploads larger than this are refused with 413 (`ABSA_API__MAX_UPLOAD_BYTES`).
    pub max_upload_bytes: u64,
    /// Where uploads are spooled while read; default the system's temporary folder.
    pub upload_dir: Option<PathBuf>,
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self { max_upload_bytes: 512 << 20, upload_dir: None }
    }
}
