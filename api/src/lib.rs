//! The HTTP API.
//!
//! # Layout
//! - [`settings`]: the API's typed configuration.
//! - [`app`]: the router and its probes; [`Application`] binds, then serves until shutdown.

pub mod app;
pub mod settings;

pub use app::Application;
