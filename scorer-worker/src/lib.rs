//! The scorer service around the scoring engine (`absa-scorer`): the `absa-scorer`
//! binary, its typed configuration, and the worker that takes score shards from the
//! queue, feeds the engine the shard's rows and copies its predictions into Postgres.
//!
//! # Layout
//! - [`worker`]: `absa-scorer work`, shards from the queue into Postgres.
//! - [`settings`]: the scorer's typed configuration.

pub mod settings;
pub mod worker;
