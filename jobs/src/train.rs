//! A training job's parameters, as the `parameters` column of a `train` job holds them.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::promotion::PromotionPolicy;
use crate::recipe::Hyperparameters;

/// A training job's parameters (the `parameters` column of a `train` job).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainParams {
    pub dataset_id: Uuid,
    /// A folder under the trainer's `models_dir` (`all-minilm-l6-v2`), or an absolute path.
    pub base_model: String,
    /// Label names in output order; default: those of the training rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<String>>,
    #[serde(default)]
    pub hyperparameters: Hyperparameters,
    /// The registered model the new version joins (created when new); default: the
    /// team's model named after the task (`sentiment`, `stance`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Give the new version the `candidate` alias, and `promote.alias` if it beats the
    /// version that alias points at (retrains set this).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promote: Option<PromotionPolicy>,
    /// GPUs the job asks for (0: the trainer's default device). The scheduler sends
    /// the job only to a trainer that offers this many. Two or more train as one rank
    /// per GPU.
    #[serde(default)]
    pub gpus: u32,
    /// Without GPUs: CPU processes (ranks) that train the model together on the
    /// trainer's host, as GPU ranks do (0 or 1: one process).
    #[serde(default)]
    pub ranks: u32,
    /// Set by the scheduler on a retrain it fired: why, and which schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retrain: Option<serde_json::Value>,
    /// Set by the scheduler on a sweep's child: the sweep and the trial.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sweep: Option<serde_json::Value>,
}

impl TrainParams {
    /// Processes the job trains in: one per GPU, or its CPU ranks.
    pub fn ranks(&self) -> u32 {
        if self.gpus > 0 {
            self.gpus
        } else {
            self.ranks.max(1)
        }
    }
}

impl TrainParams {
    /// A stored or submitted job's parameters: every field checked by
    /// [`check_train`](crate::spec::check_train) (with its messages), then typed.
    pub fn from_value(parameters: &serde_json::Value) -> Result<Self, String> {
        crate::spec::check_train(parameters)?;
        serde_json::from_value(parameters.clone()).map_err(|e| format!("training parameters: {e}"))
    }
}
