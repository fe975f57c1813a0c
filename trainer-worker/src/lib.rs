//! The trainer service around the training engine (`absa-trainer`): the `absa-trainer`
//! binary, its typed configuration, and the worker that takes training jobs from the
//! queue, feeds the engine typed rows and stores what it reports in Postgres.
//!
//! # Layout
//! - [`worker`]: `absa-trainer work`, the engine behind the job queue.
//! - [`offer`]: the GPUs this trainer advertises to the scheduler.
//! - [`settings`]: the trainer's typed configuration.

pub mod offer;
pub mod settings;
pub mod worker;
