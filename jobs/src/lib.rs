//! The job contract, owned here and nowhere else: what a job is ([`JobKind`]) and where
//! it stands ([`JobStatus`]); what a training job asks for ([`TrainParams`]), the recipe
//! it may change ([`Recipe`], [`Hyperparameters`], with defaults and ranges declared
//! once) and its promotion rule ([`PromotionPolicy`]); and the bounds every door checks
//! ([`spec`]: train, sweep and score parameters).
//!
//! The API (request schemas and checks), the scheduler (retrains, sweep children) and
//! the trainer (local mode's flags, the worker's job, the engine's settings) all read
//! these types, so a setting added to the recipe reaches every door without another
//! list to keep. No database and no queue here: plain types, cheap for any crate.

pub mod fields;
pub mod promotion;
pub mod recipe;
pub mod score;
pub mod spec;
pub mod state;
pub mod sweep;
pub mod text;
pub mod train;

pub use promotion::{PromotionMetric, PromotionPolicy};
pub use recipe::{check_hyperparameters, Hyperparameters, InputForm, Padding, Pooling, PrecisionChoice, Recipe, SelectMetric, Sharding, HYPERPARAMETERS};
pub use score::{ScoreParams, ShardParams};
pub use state::{JobKind, JobStatus};
pub use text::{brief, truncate};
pub use train::TrainParams;
