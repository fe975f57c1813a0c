//! The HTTP API.
//!
//! # Layout
//! - [`settings`]: the API's typed configuration.
//! - [`app`]: the router, probes, `/metrics`, `/openapi.json`; [`Application`] binds,
//!   then serves until shutdown.
//! - [`auth`]: API keys (hashed), roles, and the [`auth::Caller`] every `/v1` handler takes.
//! - [`error`]: errors as RFC 9457 problem+json answers.
//! - [`openapi`]: the OpenAPI document, generated from the routes.
//! - [`uploads`]: streamed uploads checked row by row.
//! - [`idempotency`]: client `Idempotency-Key`s of submissions and uploads.
//! - [`routes`]: the `/v1` handlers (data, jobs, models, schedules, access, export).
//! - [`request_id`]: a request id in every log line, answer header and error body; the access log.
//! - [`dashboard`]: the web dashboard at `/dashboard` (static, embedded; data from `/v1`).

pub mod app;
pub mod auth;
pub mod dashboard;
pub mod error;
pub mod idempotency;
pub mod openapi;
pub mod request_id;
pub mod routes;
pub mod settings;
pub mod uploads;

pub use app::Application;
