//! What the service keeps in Postgres, above the infrastructure of `absa-platform`:
//! the job lifecycle ([`jobs`]: submission, claims and leases, completion, failure,
//! cancellation, the reaper, dispatch, a sweep's children, a scoring job's shards: the
//! compile-checked queries on `jobs` and `job_events`), the consumer loop a worker runs
//! ([`worker`]), the workers' advertisements ([`workers`]), the labelled rows trainers
//! read ([`datasets`]), the documents scorers read ([`corpora`]), row errors
//! ([`row_errors`]), each training epoch's figures ([`training_metrics`]), retrain
//! schedules, the model registry, webhooks, BI logins, the predictions' COPY, artifacts
//! and the base models' folder.

pub mod artifacts;
pub mod base_models;
pub mod bi;
pub mod corpora;
pub mod datasets;
pub mod jobs;
pub mod predictions;
pub mod registry;
pub mod retrains;
pub mod row_errors;
pub mod training_metrics;
pub mod webhooks;
pub mod worker;
pub mod workers;

pub use absa_platform::{PlatformError, Result};
