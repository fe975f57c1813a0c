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

/// The API's limits (docs/api.md, "Limits and quotas"); each is an `ABSA_API__*` variable.
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct ApiSettings {
    /// Uploads larger than this are refused with 413 (`ABSA_API__MAX_UPLOAD_BYTES`).
    pub max_upload_bytes: u64,
    /// JSON bodies of every other route (`ABSA_API__MAX_JSON_BYTES`).
    pub max_json_bytes: u64,
    /// A retrain schedule may not fire more often than this (`ABSA_API__MIN_SCHEDULE_INTERVAL_SECS`).
    pub min_schedule_interval_secs: i64,
    /// Jobs a team may have queued (not yet dispatched) at once; more is a 429
    /// (`ABSA_API__MAX_QUEUED_PER_TEAM`).
    pub max_queued_per_team: i64,
    /// Row errors stored per upload; the rest are counted (`ABSA_API__MAX_STORED_ERRORS`).
    pub max_stored_errors: usize,
    /// A Parquet upload whose footer declares more bytes uncompressed is refused before
    /// any page is read (`ABSA_API__MAX_PARQUET_UNCOMPRESSED_BYTES`).
    pub max_parquet_uncompressed_bytes: u64,
    /// The team whose admins may create teams through the API; without one, teams are
    /// created by the operator only (`absa-api create-key --team`).
    pub platform_team: Option<String>,
    /// `/metrics` answers only with `Authorization: Bearer <this>` when set
    /// (`ABSA_API__METRICS_KEY`).
    pub metrics_key: Option<absa_platform::config::Secret>,
    /// Where uploads are spooled while read; default the system's temporary folder.
    pub upload_dir: Option<PathBuf>,
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            max_upload_bytes: 512 << 20,
            max_json_bytes: 1 << 20,
            min_schedule_interval_secs: 3_600,
            max_queued_per_team: 10_000,
            max_stored_errors: 10_000,
            max_parquet_uncompressed_bytes: 2 << 30,
            platform_team: None,
            metrics_key: None,
            upload_dir: None,
        }
    }
}
