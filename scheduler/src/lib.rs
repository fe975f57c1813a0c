//! The scheduler: dispatches queued jobs, shards scoring work, re-dispatches expired
//! leases. (The dispatch loop arrives with the job system; for now `check` only.)
//!
//! # Layout
//! - [`settings`]: the scheduler's typed configuration.

pub mod settings;
