//! The trainer service around the training engine (`absa-trainer`): the `absa-trainer`
//! binary, its typed configuration, and the worker that takes training jobs from the
//! queue, feeds the engine typed rows and stores what it reports in Postgres.
//!
//! # Layout
//! - [`worker`]: `absa-trainer work`, the engine behind the job queue.
//! - [`dataset`]: a job's rows from Postgres as the engine's typed rows, the same for
//!   every rank.
//! - [`offer`]: the GPUs this trainer advertises to the scheduler.
//! - [`settings`]: the trainer's typed configuration.

pub mod dataset;
pub mod offer;
pub mod settings;
pub mod worker;
