//! The infrastructure every binary stands on: typed configuration, Postgres, RabbitMQ,
//! logs, metrics. What the service keeps in Postgres (jobs, sweeps, the registry, ...)
//! is `absa-store`'s; what a job is, `absa-jobs`'s.
//!
//! # Layout
//! - [`cli`]: exit codes and error reports shared by the binaries.
//! - [`config`]: one typed settings struct per binary, read from a file plus `ABSA_*`
//!   environment overrides, and the settings shared by all of them.
//! - [`db`]: the Postgres pool, migrations, and a clear error when the server is unreachable.
//! - [`queue`]: the RabbitMQ connection, publisher confirms and manual acknowledgement.
//! - [`health`]: start-up checks that each service answers.
//! - [`telemetry`]: structured logs through `tracing`.
//! - [`metrics`]: this process's Prometheus metrics, `/metrics`, `/healthz`, `/readyz`.
//! - [`error`]: the crate's error type.

pub mod cli;
pub mod config;
pub mod db;
mod error;
pub mod health;
pub mod metrics;
pub mod queue;
pub mod telemetry;

pub use error::{PlatformError, Result};
