//! Typed configuration: a TOML file (optional) then `ABSA_*` environment variables,
//! with `__` between levels (`ABSA_DATABASE__URL` sets `database.url`).

use std::fmt;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::Result;

/// Loads a binary's settings. Values missing from both sources take the serde defaults
/// of `T`, so a binary runs on one machine with no file at all.
pub fn load<T: DeserializeOwned>(file: Option<&Path>) -> Result<T> {
    let mut builder = ::config::Config::builder();
    if let Some(path) = file {
        builder = builder.add_source(::config::File::from(path).required(true));
    }
    let settings = builder.add_source(variables()).build()?;
    Ok(settings.try_deserialize()?)
}

/// Settings as a process whose environment held exactly `vars` would [`load`] them
/// (no file): a service run inside a test process, beside others with their own.
pub fn load_from_vars<T: DeserializeOwned>(vars: &[(String, String)]) -> Result<T> {
    let source: ::config::Map<String, String> = vars.iter().cloned().collect();
    Ok(::config::Config::builder().add_source(variables().source(Some(source))).build()?.try_deserialize()?)
}

/// `ABSA_*` variables, `__` between levels (`ABSA_DATABASE__URL`).
fn variables() -> ::config::Environment {
    ::config::Environment::with_prefix("ABSA").prefix_separator("_").separator("__").try_parsing(true)
}

/// A string that never shows up in logs or `Debug` output.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Replaces the password of a `scheme://user:password@host` URL with `***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.split_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct DatabaseSettings {
    /// `postgres://user:password@host:port/database`.
    pub url: Secret,
    pub max_connections: u32,
    /// How long to wait for a connection before reporting Postgres as unreachable.
    pub connect_timeout_secs: u64,
}

/// The local services' addresses (`scripts/services.sh`): the settings' defaults.
pub const DEFAULT_DATABASE_URL: &str = "postgres://absa:absa@127.0.0.1:5432/absa";
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// The Postgres the tests make their throwaway databases on: `ABSA_TEST_DATABASE_URL`,
/// else the default.
pub fn test_database_url() -> String {
    std::env::var("ABSA_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_DATABASE_URL.into())
}

/// The RabbitMQ the tests use: `ABSA_TEST_AMQP_URL`, else the default.
pub fn test_amqp_url() -> String {
    std::env::var("ABSA_TEST_AMQP_URL").unwrap_or_else(|_| DEFAULT_AMQP_URL.into())
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self { url: Secret::new(DEFAULT_DATABASE_URL), max_connections: 8, connect_timeout_secs: 5 }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct AmqpSettings {
    /// `amqp://user:password@host:port/vhost` (vhost URL-encoded, `%2f` for `/`).
    pub url: Secret,
    /// Prefix for every queue and exchange name, so several deployments (or tests)
    /// can share one broker.
    pub prefix: String,
}

impl Default for AmqpSettings {
    fn default() -> Self {
        Self { url: Secret::new(DEFAULT_AMQP_URL), prefix: "absa".into() }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct LogSettings {
    /// A `tracing` filter such as `info` or `absa_trainer=debug,info`; `RUST_LOG` wins.
    pub filter: String,
    /// One JSON object per line instead of human-readable text.
    pub json: bool,
    /// Where spans go as OTLP over HTTP (protobuf), the whole URL, e.g.
    /// `http://otel-collector:4318/v1/traces` (`ABSA_LOG__OTLP_TRACES_ENDPOINT`);
    /// unset: no trace export. The standard `OTEL_*` variables tune the exporter
    /// (`OTEL_BSP_SCHEDULE_DELAY`, `OTEL_EXPORTER_OTLP_TRACES_HEADERS`, ...).
    pub otlp_traces_endpoint: Option<String>,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self { filter: "info".into(), json: false, otlp_traces_endpoint: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, Default)]
    #[serde(default)]
    struct Sample {
        database: DatabaseSettings,
        log: LogSettings,
    }

    #[test]
    fn a_password_is_redacted_from_urls() {
        assert_eq!(redact_url("postgres://absa:hunter2@db:5432/absa"), "postgres://absa:***@db:5432/absa");
        assert_eq!(redact_url("amqp://127.0.0.1:5672/%2f"), "amqp://127.0.0.1:5672/%2f");
    }

    #[test]
    fn secrets_do_not_appear_in_debug_output() {
        let s = DatabaseSettings { url: Secret::new("postgres://a:hunter2@h/d"), ..Default::default() };
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn a_file_is_read_and_environment_variables_override_it() {
        let dir = std::env::temp_dir().join(format!("absa-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("settings.toml");
        std::fs::write(&file, "[database]\nmax_connections = 3\n[log]\nfilter = \"debug\"\n").unwrap();
        // SAFETY: this is the only test in the crate touching the process environment.
        unsafe { std::env::set_var("ABSA_LOG__JSON", "true") };
        let s: Sample = load(Some(&file)).unwrap();
        unsafe { std::env::remove_var("ABSA_LOG__JSON") };
        assert_eq!(s.database.max_connections, 3);
        assert_eq!(s.log.filter, "debug");
        assert!(s.log.json);
        assert_eq!(s.database.connect_timeout_secs, 5, "unset values keep their defaults");
    }

    #[test]
    fn a_missing_file_is_an_error_naming_it() {
        let err = load::<Sample>(Some(Path::new("/nonexistent/absa.toml"))).unwrap_err();
        assert!(err.to_string().contains("absa.toml"), "{err}");
    }
}
