//! Hyperparameter sweeps: a `sweep` job fans out child training jobs (a grid or a list
//! of trials) a few at a time, stops clearly losing children early (median stopping
//! on the validation curve), and when all are done picks the best setting by its
//! children's mean validation metric (or the best single child), recording the sweep
//! in the chosen version's lineage. Test figures are stored with every child's
//! version but never read here. The scheduler calls
//! [`advance`] every pass; the API checks submissions with `SweepSpec::expand`
//! (`absa_jobs::sweep`, where a sweep's parameters are typed).

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use absa_jobs::sweep::{setting_of, ChooseBy, MedianStopping, SweepSpec};
use absa_jobs::PromotionMetric;

use crate::jobs::{self, NewJob};
use crate::registry;
use crate::{PlatformError, Result};

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

/// The metric's name, as `stop_losers`' query reads it from `training_metrics` (F_avg
/// is in the epoch's report, only for stance labels: NULL elsewhere).
fn metric_name(metric: PromotionMetric) -> &'static str {
    match metric {
        PromotionMetric::MacroF1 => "macro_f1",
        PromotionMetric::Accuracy => "accuracy",
        PromotionMetric::FAvg => "f_avg",
    }
}

/// Moves every queued or running sweep forward: start, stop losers, top up children,
/// finish. Each sweep is handled in its own transaction holding its row.
pub async fn advance(pool: &PgPool) -> Result<Advanced> {
    let mut done = Advanced::default();
    let ids = sqlx::query_scalar!("SELECT id FROM jobs WHERE kind = 'sweep' AND state IN ('queued', 'running') ORDER BY created_at").fetch_all(pool).await?;
    for id in ids {
        let mut tx = pool.begin().await?;
        let row = sqlx::query!(
            "SELECT team_id, state, parameters, priority, tags FROM jobs WHERE id = $1 AND state IN ('queued', 'running') FOR UPDATE SKIP LOCKED",
            id,
        )
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else { continue };
        let (team, state, parameters, priority, tags) = (row.team_id, row.state, row.parameters, row.priority, row.tags);
        let (spec, trials) =
            match serde_json::from_value(parameters).map_err(|e| e.to_string()).and_then(|spec: SweepSpec| spec.expand().map(|trials| (spec, trials))) {
                Ok(expanded) => expanded,
                Err(reason) => {
                    sqlx::query!("UPDATE jobs SET state = 'failed', last_error = $2, updated_at = now() WHERE id = $1", id, format!("parameters: {reason}"))
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    continue;
                }
            };
        if state == "queued" {
            sqlx::query!("UPDATE jobs SET state = 'running', attempts = 1, updated_at = now() WHERE id = $1", id).execute(&mut *tx).await?;
            jobs::event(&mut *tx, id, "sweep_started", json!({ "trials": trials.len(), "max_concurrency": spec.max_concurrency })).await?;
        }
        if let Some(rule) = &spec.early_stopping {
            done.children_stopped += stop_losers(&mut tx, id, spec.metric, rule).await?;
        }
        let children = sqlx::query_scalar!("SELECT state FROM jobs WHERE parent_id = $1", id).fetch_all(&mut *tx).await?;
        let active = children.iter().filter(|s| !["succeeded", "failed", "cancelled"].contains(&s.as_str())).count();
        let mut created = children.len();
        let finished = children.len() - active;
        while created < trials.len() && created - finished < spec.max_concurrency {
            let child = spec.child(id, created, &trials[created]).map_err(PlatformError::InvalidData)?;
            let job = NewJob {
                team_id: team,
                kind: absa_jobs::JobKind::Train,
                priority,
                parameters: serde_json::to_value(&child).expect("training parameters serialise"),
                max_attempts: 3,
                idempotency_key: Some(format!("sweep:{id}:{created}")),
                parent_id: Some(id),
                request_hash: None,
                // The sweep's tags, so a team's filter by tag finds the children too.
                tags: tags.clone(),
            };
            jobs::submit_in(&mut tx, &job).await?;
            created += 1;
            done.children_started += 1;
        }
        let progress = finished as f64 / trials.len() as f64;
        sqlx::query!("UPDATE jobs SET progress = $2, updated_at = now() WHERE id = $1", id, progress).execute(&mut *tx).await?;
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
    let column = metric_name(metric);
    // Every child's validation figure per epoch.
    let curves = sqlx::query!(
        r#"SELECT c.id, c.state, m.epoch, v.value AS "value!" FROM jobs c JOIN training_metrics m ON m.job_id = c.id
           CROSS JOIN LATERAL (SELECT CASE $2::text WHEN 'macro_f1' THEN m.macro_f1 WHEN 'accuracy' THEN m.accuracy
                                                   ELSE (m.detail->'report'->>'f_avg')::double precision END AS value) v
           WHERE c.parent_id = $1 AND v.value IS NOT NULL ORDER BY c.id, m.epoch"#,
        sweep,
        column,
    )
    .fetch_all(&mut *tx)
    .await?;
    let mut by_child: BTreeMap<Uuid, (String, BTreeMap<i32, f64>)> = BTreeMap::new();
    for row in curves {
        by_child.entry(row.id).or_insert_with(|| (row.state, BTreeMap::new())).1.insert(row.epoch, row.value);
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
    let children: Vec<Child> = sqlx::query!(
        r#"SELECT c.id, c.state, (c.parameters->'sweep'->>'trial')::int AS "trial!", v.id AS "version?",
                  (v.metrics->>$2)::double precision AS value, c.parameters->'sweep'->'values' AS "values!"
         FROM jobs c LEFT JOIN model_versions v ON v.training_job_id = c.id
         WHERE c.parent_id = $1 ORDER BY 3"#,
        sweep,
        key,
    )
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .map(|c| (c.id, c.state, c.trial, c.version, c.value, c.values))
    .collect();
    let judged: Vec<(&Child, Uuid, f64)> = children.iter().filter(|c| c.1 == "succeeded").filter_map(|c| Some((c, c.3?, c.4?))).collect();
    let candidates: Vec<(Map<String, Value>, f64)> = judged.iter().map(|(c, _, value)| (setting_of(c.5.as_object().unwrap_or(&Map::new())), *value)).collect();
    let best = choose(&candidates, spec.choose_by).map(|i| judged[i]);
    let table: Vec<Value> = children.iter().map(|c| json!({ "job_id": c.0, "state": c.1, "trial": c.2, "model_version_id": c.3, key: c.4 })).collect();
    let settings = setting_means(&candidates);
    let Some((child, version, value)) = best else {
        sqlx::query!("UPDATE jobs SET state = 'failed', last_error = 'no child training job succeeded', progress = 1, updated_at = now() WHERE id = $1", sweep)
            .execute(&mut *tx)
            .await?;
        jobs::event(&mut *tx, sweep, "sweep_failed", json!({ "children": table })).await?;
        return Ok(());
    };
    let record = json!({ "sweep_id": sweep, "trial": child.2, "metric": key, "value": value, "trials": children.len(),
                         "chosen_on": "validation", "choose_by": spec.choose_by, "settings": settings, "children": table });
    sqlx::query!("UPDATE model_versions SET lineage = lineage || jsonb_build_object('sweep', $2::jsonb) WHERE id = $1", version, &record)
        .execute(&mut *tx)
        .await?;
    jobs::event(&mut *tx, sweep, "sweep_chosen", json!({ "model_version_id": version, "job_id": child.0, "trial": child.2, "metric": key, "value": value, "choose_by": spec.choose_by, "settings": settings, "children": table })).await?;
    if let Some(policy) = &spec.promote {
        registry::set_alias(&mut *tx, team, registry::CANDIDATE, version, json!({ "sweep_id": sweep })).await?;
        let decision = registry::promote_if_better(&mut *tx, team, version, policy).await?;
        let kind = if decision.promoted { "promoted" } else { "promotion_refused" };
        jobs::event(&mut *tx, sweep, kind, serde_json::to_value(&decision).expect("a decision serialises")).await?;
    }
    sqlx::query!("UPDATE jobs SET state = 'succeeded', progress = 1, updated_at = now() WHERE id = $1", sweep).execute(&mut *tx).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
