//! The scheduler: re-queues jobs whose lease expired (with backoff, failing them at
//! their attempt limit), fans scoring jobs out into shard jobs and finishes them when
//! their shards finish, and dispatches queued jobs to RabbitMQ by priority. Safe with
//! several replicas: one leads, by advisory lock.
//!
//! # Layout
//! - [`settings`]: the scheduler's typed configuration.
//! - [`dispatch`]: one pass, leadership, and the loop (woken by NOTIFY).

pub mod dispatch;
pub mod settings;
