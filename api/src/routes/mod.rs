//! The `/v1` handlers, one module per resource.

pub mod access;
pub mod data;
pub mod export;
pub mod jobs;
pub mod models;
pub mod paging;
pub mod registered_models;
pub mod schedules;
pub mod tags;
pub mod webhooks;
