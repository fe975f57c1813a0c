//! The platform every binary stands on: typed configuration, Postgres, RabbitMQ and logs.
//!
//! # Layout
//! - [`artifacts`]: checkpoints, ONNX files and tokenizers in Postgres or a folder.
//! - [`base_models`]: the base models the trainers have, for listing and checking submissions.
//! - [`bi`]: per-team login roles for BI tools, which read the BI views and nothing else.
//! - [`cli`]: exit codes and error reports shared by the binaries.
//! - [`config`]: one typed settings struct per binary, read from a file plus `ABSA_*`
//!   environment overrides, and the settings shared by all of them.
//! - [`db`]: the Postgres pool, migrations, and a clear error when the server is unreachable.
//! - [`queue`]: the RabbitMQ connection, publisher confirms and manual acknowledgement.
//! - [`jobs`]: the job lifecycle: submit, claim with a lease, heartbeat, complete, reap
//!   (the job's kinds, states, parameters and their checks are `absa-jobs`'s).
//! - [`registry`]: model aliases and the promotion rule.
//! - [`retrains`]: retrain schedules (cron, new labelled rows) the scheduler fires.
//! - [`sweeps`]: hyperparameter sweeps: child training jobs, median stopping, the winner.
//! - [`predictions`]: bulk writes of predictions with binary `COPY`.
//! - [`health`]: start-up checks that each service answers.
//! - [`worker`]: what every worker does: consume, claim, ack, keep the lease, release.
//! - [`workers`]: live workers and the GPUs they advertise, for routing GPU jobs.
//! - [`webhooks`]: job state changes POSTed, signed, to the URLs a team registered.
//! - [`process`]: peak memory of the running process.
//! - [`telemetry`]: structured logs through `tracing`.
//! - [`metrics`]: this process's Prometheus metrics, `/metrics`, `/healthz`, `/readyz`.
//! - [`error`]: the crate's error type.

pub mod artifacts;
pub mod base_models;
pub mod bi;
pub mod cli;
pub mod config;
pub mod db;
mod error;
pub mod health;
pub mod jobs;
pub mod metrics;
pub mod predictions;
pub mod process;
pub mod queue;
pub mod registry;
pub mod retrains;
pub mod sweeps;
pub mod telemetry;
pub mod webhooks;
pub mod worker;
pub mod workers;

pub use error::{PlatformError, Result};
