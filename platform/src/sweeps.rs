//! Hyperparameter sweeps: a `sweep` job fans out child training jobs (a grid or a list
//! of trials) a few at a time, stops clearly losing children early (median stopping
//! on the validation curve), and when all are done picks the best setting by its
//! children's mean validation metric (or the best single child), recording the sweep
//! in the chosen version's lineage. Test figures are stored with every child's
//! version but never read here. The scheduler calls
//! [`advance`] every pass; the API checks submissions with [`SweepSpec::expand`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::jobs::{self, NewJob};
use crate::registry::{self, PromotionMetric, PromotionPolicy};
use crate::{PlatformError, Result};
use absa_jobs::spec;

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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
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
    #[schema(schema_with = absa_jobs::spec::hyperparameters_schema)]
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
    pub fn expand(&self) -> Result<Vec<Map<String, Value>>> {
        let invalid = |m: String| PlatformError::InvalidData(m);
        let trials = match (&self.grid, &self.trials) {
            (Some(_), Some(_)) => return Err(invalid("give a grid or a list of trials, not both".into())),
            (None, None) => return Err(invalid("a sweep needs a grid or a list of trials".into())),
            (None, Some(list)) if list.len() > MAX_TRIALS => return Err(invalid(format!("a sweep has 1 to {MAX_TRIALS} trials, not {}", list.len()))),
            (None, Some(list)) => list.clone(),
            (Some(grid), None) => {
                // Sized before it is built: a grid of 200 x 2,000 values is refused, not built.
                let mut count = 1usize;
                for (name, values) in grid {
                    if values.is_empty() {
                        return Err(invalid(format!("grid {:?} has no values", spec::truncate(name, 40))));
                    }
                    count = count.saturating_mul(values.len());
                }
                if count > MAX_TRIALS {
                    return Err(invalid(format!("a sweep has 1 to {MAX_TRIALS} trials; this grid has {count}")));
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
            return Err(invalid(format!("a sweep has 1 to {MAX_TRIALS} trials, not 0")));
        }
        for trial in &trials {
            if let Some(bad) = trial.keys().find(|k| !SWEEPABLE.contains(&k.as_str())) {
                return Err(invalid(format!("{:?} cannot be swept (sweepable: {})", spec::truncate(bad, 40), SWEEPABLE.join(", "))));
            }
        }
        if self.max_concurrency == 0 || self.max_concurrency > MAX_CONCURRENCY {
            return Err(invalid(format!("max_concurrency {}: 1 to {MAX_CONCURRENCY}", self.max_concurrency)));
        }
        if let Some(rule) = &self.early_stopping {
            if !(1..=100).contains(&rule.after_epoch) || rule.min_others > MAX_TRIALS {
                return Err(invalid(format!("early_stopping: after_epoch 1 to 100, min_others at most {MAX_TRIALS}")));
            }
        }
        // Every child is checked as the training job it will be.
        spec::check_base_model(&self.base_model).map_err(invalid)?;
        if self.model.as_deref().is_some_and(|m| !crate::registry::valid_model_name(m)) {
            return Err(invalid("model: a registered model's name (lower-case letters, digits, '-' and '_', at most 63)".into()));
        }
        if let Some(labels) = &self.labels {
            spec::check_labels(labels).map_err(invalid)?;
            // F_avg only where the labels have against and favor (without labels, the
            // API checks the dataset's).
            self.metric.check_labels(labels).map_err(invalid)?;
            if let Some(policy) = &self.promote {
                policy.metric.check_labels(labels).map_err(|e| invalid(format!("promote: {e}")))?;
            }
        }
        if let Some(policy) = &self.promote {
            spec::check_promote(policy).map_err(invalid)?;
        }
        for (i, trial) in trials.iter().enumerate() {
            spec::check_hyperparameters(&self.child_hyperparameters(trial)).map_err(|e| invalid(format!("trial {i}: {e}")))?;
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

/// Every setting among `(setting, validation figure)` candidates, in trial order, with
/// its mean figure and its number of children.
fn settings(candidates: &[(Map<String, Value>, f64)]) -> Vec<(&Map<String, Value>, f64, usize)> {
    let mut settings: Vec<(&Map<String, Value>, f64, usize)> = Vec::new();
    for (setting, _) in candidates {
        if settings.iter().all(|(s, ..)| *s != setting) {
            let values: Vec<f64> = candidates.iter().filter(|(s, _)| s == setting).map(|c| c.1).collect();
            settings.push((setting, values.iter().sum::<f64>() / values.len() as f64, values.len()));
        }
    }
    settings
}

/// The first of the best: the index with the highest figure, ties to the earlier one.
fn first_best(figures: impl Iterator<Item = (usize, f64)>) -> Option<usize> {
    figures
        .fold(None::<(usize, f64)>, |best, c| match best {
            Some(b) if b.1 >= c.1 => Some(b),
            _ => Some(c),
        })
        .map(|b| b.0)
}

/// The winner among `(setting, validation figure)` candidates in trial order: by
/// setting, the setting with the best mean figure and then its best child; by trial,
/// the best child. Ties go to the earlier trial. `None` when there are no candidates.
pub fn choose(candidates: &[(Map<String, Value>, f64)], by: ChooseBy) -> Option<usize> {
    match by {
        ChooseBy::Trial => first_best(candidates.iter().map(|c| c.1).enumerate()),
        ChooseBy::Setting => {
            let settings = settings(candidates);
            let winner = settings[first_best(settings.iter().map(|s| s.1).enumerate())?].0;
            first_best(candidates.iter().enumerate().filter(|(_, c)| &c.0 == winner).map(|(i, c)| (i, c.1)))
        }
    }
}

/// Every setting's values, mean validation figure and number of children, for the record.
fn setting_means(candidates: &[(Map<String, Value>, f64)]) -> Vec<Value> {
    settings(candidates).into_iter().map(|(values, mean, children)| json!({ "values": values, "mean": mean, "children": children })).collect()
}

/// The median-stopping decision for one child.
pub fn below_median(value: f64, others: &[f64], min_others: usize) -> Option<f64> {
    if others.len() < min_others.max(1) {
        return None;
    }
    let mut sorted = others.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let median = if n % 2 == 1 { sorted[n / 2] } else { (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0 };
    (value < median).then_some(median)
}

/// What a pass did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Advanced {
    pub children_started: usize,
    pub children_stopped: usize,
    pub sweeps_finished: usize,
}

/// The metric's name in `training_metrics` and the SQL that reads it from a row `m`
/// (F_avg is in the epoch's report, only for stance labels: NULL elsewhere).
fn metric_column(metric: PromotionMetric) -> (&'static str, &'static str) {
    match metric {
        PromotionMetric::MacroF1 => ("macro_f1", "m.macro_f1"),
        PromotionMetric::Accuracy => ("accuracy", "m.accuracy"),
        PromotionMetric::FAvg => ("f_avg", "(m.detail->'report'->>'f_avg')::double precision"),
    }
}

/// Moves every queued or running sweep forward: start, stop losers, top up children,
/// finish. Each sweep is handled in its own transaction holding its row.
pub async fn advance(pool: &PgPool) -> Result<Advanced> {
    let mut done = Advanced::default();
    let ids: Vec<Uuid> =
        sqlx::query_scalar("SELECT id FROM jobs WHERE kind = 'sweep' AND state IN ('queued', 'running') ORDER BY created_at").fetch_all(pool).await?;
    for id in ids {
        let mut tx = pool.begin().await?;
        let row: Option<(Uuid, String, Value, i32)> =
            sqlx::query_as("SELECT team_id, state, parameters, priority FROM jobs WHERE id = $1 AND state IN ('queued', 'running') FOR UPDATE SKIP LOCKED")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some((team, state, parameters, priority)) = row else { continue };
        let spec: SweepSpec = match serde_json::from_value(parameters.clone())
            .map_err(|e| e.to_string())
            .and_then(|s: SweepSpec| s.expand().map(|t| (s, t)).map_err(|e| e.to_string()))
        {
            Ok((spec, _)) => spec,
            Err(reason) => {
                sqlx::query("UPDATE jobs SET state = 'failed', last_error = $2, updated_at = now() WHERE id = $1")
                    .bind(id)
                    .bind(format!("parameters: {reason}"))
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                continue;
            }
        };
        let trials = spec.expand()?;
        if state == "queued" {
            sqlx::query("UPDATE jobs SET state = 'running', attempts = 1, updated_at = now() WHERE id = $1").bind(id).execute(&mut *tx).await?;
            jobs::event(&mut *tx, id, "sweep_started", json!({ "trials": trials.len(), "max_concurrency": spec.max_concurrency })).await?;
        }
        if let Some(rule) = &spec.early_stopping {
            done.children_stopped += stop_losers(&mut tx, id, spec.metric, rule).await?;
        }
        let children: Vec<(String,)> = sqlx::query_as("SELECT state FROM jobs WHERE parent_id = $1").bind(id).fetch_all(&mut *tx).await?;
        let active = children.iter().filter(|(s,)| !["succeeded", "failed", "cancelled"].contains(&s.as_str())).count();
        let mut created = children.len();
        let finished = children.len() - active;
        while created < trials.len() && created - finished < spec.max_concurrency {
            let hyperparameters = spec.child_hyperparameters(&trials[created]);
            let mut child = json!({ "dataset_id": spec.dataset_id, "base_model": spec.base_model, "hyperparameters": hyperparameters,
                                    "sweep": { "sweep_id": id, "trial": created, "values": trials[created] } });
            if let Some(labels) = &spec.labels {
                child["labels"] = json!(labels);
            }
            if let Some(model) = &spec.model {
                child["model"] = json!(model);
            }
            let job = NewJob {
                team_id: team,
                kind: crate::jobs::JobKind::Train,
                priority,
                parameters: child,
                max_attempts: 3,
                idempotency_key: Some(format!("sweep:{id}:{created}")),
                parent_id: Some(id),
                request_hash: None,
                tags: serde_json::Value::Null,
            };
            jobs::submit_in(&mut tx, &job).await?;
            created += 1;
            done.children_started += 1;
        }
        let progress = finished as f64 / trials.len() as f64;
        sqlx::query("UPDATE jobs SET progress = $2, updated_at = now() WHERE id = $1").bind(id).bind(progress).execute(&mut *tx).await?;
        if created == trials.len() && active == 0 && finished == trials.len() {
            finish(&mut tx, id, team, &spec).await?;
            done.sweeps_finished += 1;
        }
        tx.commit().await?;
    }
    Ok(done)
}

/// Cancels running children below the median of their siblings at the same epoch.
async fn stop_losers(tx: &mut PgConnection, sweep: Uuid, metric: PromotionMetric, rule: &MedianStopping) -> Result<usize> {
    let (column, value) = metric_column(metric);
    // Every child's validation figure per epoch.
    let curves: Vec<(Uuid, String, i32, f64)> = sqlx::query_as(&format!(
        "SELECT c.id, c.state, m.epoch, {value} FROM jobs c JOIN training_metrics m ON m.job_id = c.id
         WHERE c.parent_id = $1 AND {value} IS NOT NULL ORDER BY c.id, m.epoch"
    ))
    .bind(sweep)
    .fetch_all(&mut *tx)
    .await?;
    let mut by_child: BTreeMap<Uuid, (String, BTreeMap<i32, f64>)> = BTreeMap::new();
    for (child, state, epoch, value) in curves {
        by_child.entry(child).or_insert_with(|| (state, BTreeMap::new())).1.insert(epoch, value);
    }
    let mut stopped = 0;
    for (child, (state, curve)) in &by_child {
        if state != "running" {
            continue;
        }
        let Some((&epoch, &value)) = curve.last_key_value() else { continue };
        if epoch < rule.after_epoch {
            continue;
        }
        let others: Vec<f64> = by_child.iter().filter(|(c, _)| *c != child).filter_map(|(_, (_, curve))| curve.get(&epoch).copied()).collect();
        if let Some(median) = below_median(value, &others, rule.min_others) {
            if jobs::cancel_in(&mut *tx, *child).await? {
                jobs::event(
                    &mut *tx,
                    *child,
                    "early_terminated",
                    json!({ "rule": "median", "epoch": epoch, "metric": column, "value": value, "median": median, "others": others.len() }),
                )
                .await?;
                stopped += 1;
            }
        }
    }
    Ok(stopped)
}

/// A child as [`finish`] reads it: job, state, trial, model version, validation figure, trial values.
type Child = (Uuid, String, i32, Option<Uuid>, Option<f64>, Value);

/// Picks the winner among the succeeded children by their model versions'
/// `validation_*` metric ([`choose`]), records the sweep in that version's lineage,
/// promotes it if asked, and completes the sweep.
async fn finish(tx: &mut PgConnection, sweep: Uuid, team: Uuid, spec: &SweepSpec) -> Result<()> {
    let key = spec.metric.metrics_key();
    let children: Vec<Child> = sqlx::query_as(
        "SELECT c.id, c.state, (c.parameters->'sweep'->>'trial')::int, v.id, (v.metrics->>$2)::double precision, c.parameters->'sweep'->'values'
         FROM jobs c LEFT JOIN model_versions v ON v.training_job_id = c.id
         WHERE c.parent_id = $1 ORDER BY 3",
    )
    .bind(sweep)
    .bind(key)
    .fetch_all(&mut *tx)
    .await?;
    let judged: Vec<(&Child, Uuid, f64)> = children.iter().filter(|c| c.1 == "succeeded").filter_map(|c| Some((c, c.3?, c.4?))).collect();
    let candidates: Vec<(Map<String, Value>, f64)> = judged.iter().map(|(c, _, value)| (setting_of(c.5.as_object().unwrap_or(&Map::new())), *value)).collect();
    let best = choose(&candidates, spec.choose_by).map(|i| judged[i]);
    let table: Vec<Value> = children.iter().map(|c| json!({ "job_id": c.0, "state": c.1, "trial": c.2, "model_version_id": c.3, key: c.4 })).collect();
    let settings = setting_means(&candidates);
    let Some((child, version, value)) = best else {
        sqlx::query("UPDATE jobs SET state = 'failed', last_error = 'no child training job succeeded', progress = 1, updated_at = now() WHERE id = $1")
            .bind(sweep)
            .execute(&mut *tx)
            .await?;
        jobs::event(&mut *tx, sweep, "sweep_failed", json!({ "children": table })).await?;
        return Ok(());
    };
    let record = json!({ "sweep_id": sweep, "trial": child.2, "metric": key, "value": value, "trials": children.len(),
                         "chosen_on": "validation", "choose_by": spec.choose_by, "settings": settings, "children": table });
    sqlx::query("UPDATE model_versions SET lineage = lineage || jsonb_build_object('sweep', $2::jsonb) WHERE id = $1")
        .bind(version)
        .bind(&record)
        .execute(&mut *tx)
        .await?;
    jobs::event(&mut *tx, sweep, "sweep_chosen", json!({ "model_version_id": version, "job_id": child.0, "trial": child.2, "metric": key, "value": value, "choose_by": spec.choose_by, "settings": settings, "children": table })).await?;
    if let Some(policy) = &spec.promote {
        registry::set_alias(&mut *tx, team, registry::CANDIDATE, version, json!({ "sweep_id": sweep })).await?;
        let decision = registry::promote_if_better(&mut *tx, team, version, policy).await?;
        let kind = if decision.promoted { "promoted" } else { "promotion_refused" };
        jobs::event(&mut *tx, sweep, kind, serde_json::to_value(&decision).expect("a decision serialises")).await?;
    }
    sqlx::query("UPDATE jobs SET state = 'succeeded', progress = 1, updated_at = now() WHERE id = $1").bind(sweep).execute(&mut *tx).await?;
    Ok(())
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
    fn a_setting_is_judged_by_its_childrens_mean() {
        let c = |s: &str, v: f64| (json!({ "pooling": s }).as_object().unwrap().clone(), v);
        // One lucky child (0.90) in a setting whose mean is lower: by trial it wins, by setting the steadier setting does.
        let candidates = [c("a", 0.90), c("a", 0.70), c("a", 0.71), c("b", 0.80), c("b", 0.82), c("b", 0.79)];
        assert_eq!(choose(&candidates, ChooseBy::Trial), Some(0));
        assert_eq!(choose(&candidates, ChooseBy::Setting), Some(4), "setting b (mean 0.803 > 0.770), its best child");
        // Ties: the earlier setting, then the earlier child.
        assert_eq!(choose(&[c("a", 0.8), c("b", 0.7), c("b", 0.9)], ChooseBy::Setting), Some(0));
        assert_eq!(choose(&[c("a", 0.8), c("a", 0.8)], ChooseBy::Setting), Some(0));
        assert_eq!(choose(&[], ChooseBy::Setting), None);
        let lr = json!({ "learning_rate": 1e-5 }).as_object().unwrap().clone();
        let means = setting_means(&[(lr.clone(), 0.6), (lr, 0.8)]);
        assert_eq!(means.len(), 1);
        assert_eq!(means[0]["values"], json!({ "learning_rate": 1e-5 }));
        assert_eq!(means[0]["children"], 2);
        assert!((means[0]["mean"].as_f64().unwrap() - 0.7).abs() < 1e-12);
    }

    #[test]
    fn median_stopping() {
        assert!(below_median(0.5, &[0.6, 0.7], 2).is_some_and(|m| (m - 0.65).abs() < 1e-12));
        assert_eq!(below_median(0.7, &[0.6, 0.7], 2), None);
        assert_eq!(below_median(0.1, &[0.6], 2), None, "too few others");
        assert_eq!(below_median(0.5, &[0.4, 0.6, 0.9], 2), Some(0.6));
    }
}
