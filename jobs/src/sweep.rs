//! A sweep job's parameters: a grid or a list of trials over the recipe's
//! hyperparameters, each child checked as the training job it will be. The scheduler
//! (`absa_store::jobs::sweeps`) runs them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use uuid::Uuid;

use crate::promotion::{PromotionMetric, PromotionPolicy};
use crate::recipe::Hyperparameters;
use crate::train::TrainParams;

/// Hyperparameters a sweep may vary.
pub const SWEEPABLE: [&str; 8] = ["learning_rate", "epochs", "batch_size", "pooling", "warmup_steps", "seed", "split_seed", "weight_decay"];
/// Trials that differ only in these are repeats of one setting.
const REPEAT_KEYS: [&str; 2] = ["seed", "split_seed"];
/// At most this many trials per sweep.
pub const MAX_TRIALS: usize = 200;
/// At most this many children training at once.
pub const MAX_CONCURRENCY: usize = 32;

/// Median stopping: after `after_epoch`, a running child whose validation figure at
/// its latest epoch is below the median of the other children's at the same epoch is
/// cancelled, once at least `min_others` others have reached that epoch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MedianStopping {
    #[serde(default = "two")]
    pub after_epoch: i32,
    #[serde(default = "two_usize")]
    pub min_others: usize,
}

fn two() -> i32 {
    2
}
fn two_usize() -> usize {
    2
}
fn default_concurrency() -> usize {
    2
}

/// How a sweep picks its winner.
// The CLI's `--choose-by` values are these wire names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum ChooseBy {
    /// Trials that differ only in `seed` are repeats of one setting, and each child
    /// holds out its own validation rows (`split_seed` = `seed` unless given), so a
    /// setting is judged by its children's mean validation figure over several
    /// validation sets; the best setting's best child is registered. One small
    /// validation set ranks single runs mostly by luck: this averages that luck out.
    /// Early-terminated (cancelled) children have no version and are not in the mean.
    #[default]
    Setting,
    /// The single child with the best validation figure.
    Trial,
}

/// A sweep job's parameters.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SweepSpec {
    pub dataset_id: Uuid,
    pub base_model: String,
    /// Shared by every trial; a trial's values override these.
    #[serde(default)]
    #[schema(schema_with = crate::recipe::hyperparameters_schema)]
    pub hyperparameters: Map<String, Value>,
    /// Every combination of these values is a trial (hyperparameter name to its values) ...
    #[serde(default)]
    #[schema(value_type = Option<BTreeMap<String, Vec<Value>>>)]
    pub grid: Option<BTreeMap<String, Vec<Value>>>,
    /// ... or these trials as listed (each a set of hyperparameters).
    #[serde(default)]
    #[schema(value_type = Option<Vec<Object>>)]
    pub trials: Option<Vec<Map<String, Value>>>,
    #[serde(default)]
    pub labels: Option<Vec<String>>,
    /// The validation figure that picks the winner (and that median stopping reads).
    #[serde(default)]
    pub metric: PromotionMetric,
    #[serde(default)]
    pub choose_by: ChooseBy,
    /// Children training at once.
    #[serde(default = "default_concurrency")]
    pub max_concurrency: usize,
    #[serde(default)]
    pub early_stopping: Option<MedianStopping>,
    /// Promote the chosen version (only if it beats the alias's current one).
    #[serde(default)]
    pub promote: Option<PromotionPolicy>,
    /// The registered model every child's version joins (default: the task's).
    #[serde(default)]
    pub model: Option<String>,
    /// The sweep job's `key: value` tags (on the sweep's own row, not in its parameters).
    #[serde(default, skip_serializing)]
    pub tags: Option<Map<String, Value>>,
}

impl SweepSpec {
    /// The trials: the grid's combinations (in key order, last key fastest) or the list.
    pub fn expand(&self) -> Result<Vec<Map<String, Value>>, String> {
        let trials = match (&self.grid, &self.trials) {
            (Some(_), Some(_)) => return Err("give a grid or a list of trials, not both".into()),
            (None, None) => return Err("a sweep needs a grid or a list of trials".into()),
            (None, Some(list)) if list.len() > MAX_TRIALS => return Err(format!("a sweep has 1 to {MAX_TRIALS} trials, not {}", list.len())),
            (None, Some(list)) => list.clone(),
            (Some(grid), None) => {
                // Sized before it is built: a grid of 200 x 2,000 values is refused, not built.
                let mut count = 1usize;
                for (name, values) in grid {
                    if values.is_empty() {
                        return Err(format!("grid {:?} has no values", crate::spec::truncate(name, 40)));
                    }
                    count = count.saturating_mul(values.len());
                }
                if count > MAX_TRIALS {
                    return Err(format!("a sweep has 1 to {MAX_TRIALS} trials; this grid has {count}"));
                }
                let mut trials = vec![Map::new()];
                for (name, values) in grid {
                    trials = trials
                        .into_iter()
                        .flat_map(|t| {
                            values.iter().map(move |v| {
                                let mut t = t.clone();
                                t.insert(name.clone(), v.clone());
                                t
                            })
                        })
                        .collect();
                }
                trials
            }
        };
        if trials.is_empty() {
            return Err(format!("a sweep has 1 to {MAX_TRIALS} trials, not 0"));
        }
        for trial in &trials {
            if let Some(bad) = trial.keys().find(|k| !SWEEPABLE.contains(&k.as_str())) {
                return Err(format!("{:?} cannot be swept (sweepable: {})", crate::spec::truncate(bad, 40), SWEEPABLE.join(", ")));
            }
        }
        if self.max_concurrency == 0 || self.max_concurrency > MAX_CONCURRENCY {
            return Err(format!("max_concurrency {}: 1 to {MAX_CONCURRENCY}", self.max_concurrency));
        }
        if let Some(rule) = &self.early_stopping {
            if !(1..=100).contains(&rule.after_epoch) || rule.min_others > MAX_TRIALS {
                return Err(format!("early_stopping: after_epoch 1 to 100, min_others at most {MAX_TRIALS}"));
            }
        }
        // Every child is checked as the training job it will be.
        crate::spec::check_base_model(&self.base_model)?;
        if self.model.as_deref().is_some_and(|m| !crate::promotion::valid_model_name(m)) {
            return Err("model: a registered model's name (lower-case letters, digits, '-' and '_', at most 63)".into());
        }
        if let Some(labels) = &self.labels {
            crate::spec::check_labels(labels)?;
            // F_avg only where the labels have against and favor (without labels, the
            // API checks the dataset's).
            self.metric.check_labels(labels)?;
            if let Some(policy) = &self.promote {
                policy.metric.check_labels(labels).map_err(|e| format!("promote: {e}"))?;
            }
        }
        if let Some(policy) = &self.promote {
            crate::spec::check_promote(policy)?;
        }
        for (i, trial) in trials.iter().enumerate() {
            crate::spec::check_hyperparameters(&self.child_hyperparameters(trial)).map_err(|e| format!("trial {i}: {e}"))?;
        }
        Ok(trials)
    }

    /// A child's hyperparameters: the shared ones, overridden by the trial's; choosing
    /// by setting, a child holds out validation rows drawn with its own seed.
    pub fn child_hyperparameters(&self, trial: &Map<String, Value>) -> Map<String, Value> {
        let mut hyperparameters = self.hyperparameters.clone();
        hyperparameters.extend(trial.clone());
        if self.choose_by == ChooseBy::Setting && !hyperparameters.contains_key("split_seed") {
            if let Some(seed) = hyperparameters.get("seed").cloned() {
                hyperparameters.insert("split_seed".into(), seed);
            }
        }
        hyperparameters
    }
}

/// A trial's setting: its values less the repeat keys.
pub fn setting_of(trial: &Map<String, Value>) -> Map<String, Value> {
    trial.iter().filter(|(k, _)| !REPEAT_KEYS.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect()
}

impl SweepSpec {
    /// Child `index` of sweep `sweep_id`: the training job trial `trial` is.
    pub fn child(&self, sweep_id: Uuid, index: usize, trial: &Map<String, Value>) -> Result<TrainParams, String> {
        Ok(TrainParams {
            dataset_id: self.dataset_id,
            base_model: self.base_model.clone(),
            labels: self.labels.clone(),
            hyperparameters: Hyperparameters::from_map(&self.child_hyperparameters(trial)).map_err(|e| format!("trial {index}: {e}"))?,
            model: self.model.clone(),
            promote: None,
            gpus: 0,
            ranks: 0,
            retrain: None,
            sweep: Some(json!({ "sweep_id": sweep_id, "trial": index, "values": trial })),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(v: Value) -> SweepSpec {
        let mut base = json!({ "dataset_id": Uuid::nil(), "base_model": "m" });
        base.as_object_mut().unwrap().extend(v.as_object().unwrap().clone());
        serde_json::from_value(base).unwrap()
    }

    #[test]
    fn grids_expand_to_every_combination() {
        let trials = spec(json!({ "grid": { "learning_rate": [1e-5, 3e-5], "seed": [1, 2, 3] } })).expand().unwrap();
        assert_eq!(trials.len(), 6);
        assert_eq!(Value::Object(trials[0].clone()), json!({ "learning_rate": 1e-5, "seed": 1 }));
        assert_eq!(Value::Object(trials[5].clone()), json!({ "learning_rate": 3e-5, "seed": 3 }));
        let listed = spec(json!({ "trials": [{ "pooling": "mean" }, { "pooling": "max", "epochs": 2 }] })).expand().unwrap();
        assert_eq!(listed.len(), 2);
    }

    #[test]
    fn bad_sweeps_are_refused() {
        for bad in [
            json!({}),
            json!({ "grid": { "learning_rate": [] } }),
            json!({ "grid": { "dropout": [0.1] } }),
            json!({ "grid": { "seed": [1] }, "trials": [{}] }),
            json!({ "grid": { "seed": (0..300).collect::<Vec<_>>() } }),
            json!({ "grid": { "seed": [1] }, "max_concurrency": 0 }),
        ] {
            assert!(spec(bad.clone()).expand().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_huge_grid_is_refused_before_it_is_built() {
        // 200 x 2,000 values: 400,000 trials would take ~270 MB to build; sized first, nothing is.
        let grid = json!({ "grid": { "seed": (0..200).collect::<Vec<_>>(), "split_seed": (0..2000).collect::<Vec<_>>() } });
        let e = spec(grid).expand().unwrap_err().to_string();
        assert!(e.contains("this grid has 400000"), "{e}");
        let product_overflows = json!({ "grid": { "seed": (0..100_000).collect::<Vec<_>>(), "split_seed": (0..100_000).collect::<Vec<_>>(), "epochs": (0..100_000).collect::<Vec<_>>(), "batch_size": (0..100_000).collect::<Vec<_>>() } });
        assert!(spec(product_overflows).expand().is_err());
    }

    #[test]
    fn every_child_is_checked_as_the_training_job_it_will_be() {
        let cases = [
            (json!({ "grid": { "epochs": [1, 1000] } }), "trial 1: hyperparameters.epochs 1000: outside [1, 100]"),
            (json!({ "hyperparameters": { "max_length": 1_000_000_000 }, "grid": { "seed": [1] } }), "trial 0: hyperparameters.max_length"),
            (json!({ "hyperparameters": { "lr": 1 }, "grid": { "seed": [1] } }), "unknown hyperparameter"),
            (json!({ "base_model": "/etc", "grid": { "seed": [1] } }), "no paths"),
            (json!({ "grid": { "seed": [1] }, "max_concurrency": 1000 }), "max_concurrency 1000"),
            (json!({ "grid": { "seed": [1] }, "promote": { "alias": "../x" } }), "promote.alias"),
        ];
        for (bad, reason) in cases {
            let e = spec(bad.clone()).expand().unwrap_err().to_string();
            assert!(e.contains(reason), "{bad}: {e}");
        }
    }

    #[test]
    fn choosing_by_setting_children_hold_out_rows_drawn_with_their_own_seed() {
        let by_setting = spec(json!({ "hyperparameters": { "epochs": 2 }, "grid": { "learning_rate": [1e-5], "seed": [1, 2] } }));
        let trials = by_setting.expand().unwrap();
        assert_eq!(Value::Object(by_setting.child_hyperparameters(&trials[1])), json!({ "epochs": 2, "learning_rate": 1e-5, "seed": 2, "split_seed": 2 }));
        let given = spec(json!({ "hyperparameters": { "split_seed": 9 }, "grid": { "seed": [1, 2] } }));
        assert_eq!(given.child_hyperparameters(&given.expand().unwrap()[0])["split_seed"], 9, "a given split_seed stays");
        let by_trial = spec(json!({ "grid": { "seed": [1, 2] }, "choose_by": "trial" }));
        assert!(!by_trial.child_hyperparameters(&by_trial.expand().unwrap()[0]).contains_key("split_seed"));
        assert_eq!(setting_of(&trials[0]), setting_of(&trials[1]), "seeds are repeats of one setting");
        assert_eq!(Value::Object(setting_of(&trials[0])), json!({ "learning_rate": 1e-5 }));
    }

    #[test]
    fn a_child_is_a_training_job_that_passes_its_checks() {
        let sweep = spec(json!({ "hyperparameters": { "epochs": 2 }, "grid": { "learning_rate": [1e-5], "seed": [1, 2] }, "model": "laptops" }));
        let trials = sweep.expand().unwrap();
        let child = sweep.child(Uuid::nil(), 1, &trials[1]).unwrap();
        assert_eq!((child.hyperparameters.epochs, child.hyperparameters.seed, child.hyperparameters.split_seed), (Some(2), Some(2), Some(2)));
        assert_eq!(child.sweep.as_ref().unwrap()["trial"], 1);
        let stored = serde_json::to_value(&child).unwrap();
        assert_eq!(TrainParams::from_value(&stored).unwrap(), child, "what the scheduler stores, the trainer reads back");
    }
}
