//! The model registry's moving parts: aliases that point at model versions, and the
//! promotion rule (a candidate takes an alias only if it beats the alias's current
//! version on a validation metric). Used by the API and by the trainer worker when a
//! retrained version is registered.

use serde::Serialize;
use serde_json::{json, Value};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use absa_jobs::promotion::{valid_alias, valid_model_name, PromotionMetric, PromotionPolicy};

use crate::{PlatformError, Result};

/// The alias every newly trained version of a promoting job gets.
pub const CANDIDATE: &str = "candidate";

/// What a promotion attempt decided, with the figures it compared.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Promotion {
    pub promoted: bool,
    /// The registered model whose alias it is.
    pub model: String,
    pub alias: String,
    pub metric: PromotionMetric,
    pub candidate_id: Uuid,
    pub candidate: f64,
    pub current_id: Option<Uuid>,
    pub current: Option<f64>,
}

/// A trained model version as the trainer worker registers it.
#[derive(Clone, Debug)]
pub struct NewVersion<'a> {
    pub id: Uuid,
    pub team: Uuid,
    pub base_model: &'a str,
    pub dataset: Uuid,
    pub training_job: Uuid,
    pub labels: &'a [String],
    /// The run's summary.
    pub metrics: Value,
    pub checkpoint: Uuid,
    pub onnx: Uuid,
    /// What trained it: the job, its attempt, the hyperparameters, the dataset snapshot.
    pub lineage: Value,
    /// Without one, the database files the version under the task's model.
    pub registered_model: Option<Uuid>,
}

/// Registers `version` (in the transaction that completes its job).
pub async fn register_version(conn: &mut PgConnection, version: &NewVersion<'_>) -> Result<()> {
    let v = version;
    sqlx::query!(
        "INSERT INTO model_versions (id, team_id, base_model, dataset_id, training_job_id, label_names, metrics, checkpoint_id, onnx_id, lineage,
                                     registered_model_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        v.id,
        v.team,
        v.base_model,
        v.dataset,
        v.training_job,
        v.labels,
        v.metrics,
        v.checkpoint,
        v.onnx,
        v.lineage,
        v.registered_model,
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The ONNX export of `team`'s model `version`: `None` when there is no such version
/// of the team's, or it has no export.
pub async fn onnx_of(executor: impl PgExecutor<'_>, team: Uuid, version: Uuid) -> Result<Option<Uuid>> {
    let onnx = sqlx::query_scalar!("SELECT onnx_id FROM model_versions WHERE id = $1 AND team_id = $2", version, team).fetch_optional(executor).await?;
    Ok(onnx.flatten())
}

/// The registered model `version` (of `team`) belongs to: its id and name.
pub async fn model_of(conn: &mut PgConnection, team: Uuid, version: Uuid) -> Result<(Uuid, String)> {
    let found: Option<(Uuid, String)> =
        sqlx::query_as("SELECT r.id, r.name FROM model_versions v JOIN registered_models r ON r.id = v.registered_model_id WHERE v.id = $1 AND v.team_id = $2")
            .bind(version)
            .bind(team)
            .fetch_optional(&mut *conn)
            .await?;
    found.ok_or_else(|| PlatformError::InvalidData(format!("model version {version} not found")))
}

/// The team's registered model `name` for a version with `labels`: created with the
/// labels' task when it is new; refused when it exists with other labels (its versions
/// must be comparable).
pub async fn ensure_model(conn: &mut PgConnection, team: Uuid, name: &str, labels: &[String]) -> Result<Uuid> {
    if !valid_model_name(name) {
        return Err(PlatformError::InvalidData(format!("model {name:?}: use lower-case letters, digits, '-' and '_' (at most 63)")));
    }
    sqlx::query(
        "INSERT INTO registered_models (team_id, name, task, label_names) VALUES ($1, $2, absa_task_of($3), $3) ON CONFLICT (team_id, name) DO NOTHING",
    )
    .bind(team)
    .bind(name)
    .bind(labels)
    .execute(&mut *conn)
    .await?;
    let (id, existing): (Uuid, Vec<String>) =
        sqlx::query_as("SELECT id, label_names FROM registered_models WHERE team_id = $1 AND name = $2").bind(team).bind(name).fetch_one(&mut *conn).await?;
    if existing != labels {
        return Err(PlatformError::InvalidData(format!(
            "model {name:?} has the labels {}; this version's are {}: its versions must share them (name another model)",
            existing.join(", "),
            labels.join(", ")
        )));
    }
    Ok(id)
}

/// Points `alias` of `version`'s registered model at `version` (of `team`), recording
/// the move and why.
pub async fn set_alias(conn: &mut PgConnection, team: Uuid, alias: &str, version: Uuid, reason: Value) -> Result<()> {
    if !valid_alias(alias) {
        return Err(PlatformError::InvalidData(format!("alias {alias:?}: use lower-case letters, digits, '-' and '_' (at most 63)")));
    }
    let (model, _) = model_of(conn, team, version).await?;
    let previous: Option<Uuid> = sqlx::query_scalar("SELECT model_version_id FROM model_aliases WHERE registered_model_id = $1 AND name = $2 FOR UPDATE")
        .bind(model)
        .bind(alias)
        .fetch_optional(&mut *conn)
        .await?;
    sqlx::query(
        "INSERT INTO model_aliases (team_id, registered_model_id, name, model_version_id) VALUES ($1, $2, $3, $4)
         ON CONFLICT (registered_model_id, name) DO UPDATE SET model_version_id = EXCLUDED.model_version_id, updated_at = now()",
    )
    .bind(team)
    .bind(model)
    .bind(alias)
    .bind(version)
    .execute(&mut *conn)
    .await?;
    sqlx::query("INSERT INTO model_alias_events (team_id, registered_model_id, alias, model_version_id, previous_id, reason) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(team)
        .bind(model)
        .bind(alias)
        .bind(version)
        .bind(previous)
        .bind(reason)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The version `alias` points at: of the registered model `model`, or, without one,
/// of the team's only model that has the alias (two or more: an error naming them).
pub async fn resolve_alias(conn: &mut PgConnection, team: Uuid, alias: &str, model: Option<&str>) -> Result<Option<Uuid>> {
    let found: Vec<(Uuid, String)> = sqlx::query_as(
        "SELECT a.model_version_id, r.name FROM model_aliases a JOIN registered_models r ON r.id = a.registered_model_id
         WHERE a.team_id = $1 AND a.name = $2 AND ($3::text IS NULL OR r.name = $3) ORDER BY r.name",
    )
    .bind(team)
    .bind(alias)
    .bind(model)
    .fetch_all(&mut *conn)
    .await?;
    match found.as_slice() {
        [] => Ok(None),
        [(version, _)] => Ok(Some(*version)),
        several => Err(PlatformError::InvalidData(format!(
            "model: alias {alias:?} is set in the models {}; name one",
            several.iter().map(|(_, m)| m.as_str()).collect::<Vec<_>>().join(", ")
        ))),
    }
}

async fn validation_figure(conn: &mut PgConnection, team: Uuid, version: Uuid, metric: PromotionMetric) -> Result<Option<f64>> {
    let found: Option<Option<f64>> = sqlx::query_scalar("SELECT (metrics->>$3)::double precision FROM model_versions WHERE id = $1 AND team_id = $2")
        .bind(version)
        .bind(team)
        .bind(metric.metrics_key())
        .fetch_optional(&mut *conn)
        .await?;
    match found {
        None => Err(PlatformError::InvalidData(format!("model version {version} not found"))),
        Some(figure) => Ok(figure),
    }
}

/// Moves `policy.alias` of the candidate's registered model to `candidate` if the
/// alias is unset or the candidate's validation figure is strictly higher than the
/// current version's. Versions of other registered models are never compared: a
/// policy naming another model is refused. Locks the alias row, so two promotions of
/// the same alias are decided one after the other.
pub async fn promote_if_better(conn: &mut PgConnection, team: Uuid, candidate_id: Uuid, policy: &PromotionPolicy) -> Result<Promotion> {
    let (model, model_name) = model_of(conn, team, candidate_id).await?;
    if let Some(named) = policy.model.as_deref().filter(|named| *named != model_name) {
        return Err(PlatformError::InvalidData(format!(
            "model: version {candidate_id} belongs to the model {model_name:?}, not {named:?}; promotion compares versions of one model"
        )));
    }
    let Some(candidate) = validation_figure(conn, team, candidate_id, policy.metric).await? else {
        return Err(PlatformError::InvalidData(format!("model version {candidate_id} has no {}", policy.metric.metrics_key())));
    };
    let current_id: Option<Uuid> = sqlx::query_scalar("SELECT model_version_id FROM model_aliases WHERE registered_model_id = $1 AND name = $2 FOR UPDATE")
        .bind(model)
        .bind(&policy.alias)
        .fetch_optional(&mut *conn)
        .await?;
    let current = match current_id {
        Some(id) => validation_figure(conn, team, id, policy.metric).await?,
        None => None,
    };
    let promoted = current_id != Some(candidate_id) && current.is_none_or(|c| candidate > c);
    let decision = Promotion { promoted, model: model_name, alias: policy.alias.clone(), metric: policy.metric, candidate_id, candidate, current_id, current };
    if promoted {
        set_alias(conn, team, &policy.alias, candidate_id, json!({ "promotion": &decision })).await?;
    }
    Ok(decision)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alias_names() {
        for ok in ["production", "candidate", "a", "team-a_v2", "0day"] {
            assert!(valid_alias(ok), "{ok}");
        }
        for bad in ["", "Prod", "-x", "a b", "x;drop", &"a".repeat(64)] {
            assert!(!valid_alias(bad), "{bad}");
        }
    }

    #[test]
    fn policy_defaults_and_unknown_fields() {
        let p: PromotionPolicy = serde_json::from_value(json!({})).unwrap();
        assert_eq!(p, PromotionPolicy { alias: "production".into(), metric: PromotionMetric::MacroF1, model: None });
        let p: PromotionPolicy = serde_json::from_value(json!({"alias": "prod", "metric": "accuracy"})).unwrap();
        assert_eq!(p.metric.metrics_key(), "validation_accuracy");
        let p: PromotionPolicy = serde_json::from_value(json!({"metric": "f_avg"})).unwrap();
        assert_eq!((p.metric, p.metric.metrics_key()), (PromotionMetric::FAvg, "validation_f_avg"));
        assert_eq!(serde_json::to_value(PromotionMetric::FAvg).unwrap(), json!("f_avg"));
        assert!(serde_json::from_value::<PromotionPolicy>(json!({"metrc": "accuracy"})).is_err());
    }

    #[test]
    fn f_avg_is_only_for_labels_with_against_and_favor() {
        let names = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(PromotionMetric::FAvg.check_labels(&names(&["against", "neither", "favor"])).is_ok());
        let e = PromotionMetric::FAvg.check_labels(&names(&["negative", "neutral", "positive"])).unwrap_err();
        assert!(e.contains("do not have both"), "{e}");
        assert!(PromotionMetric::FAvg.check_labels(&names(&["against", "none"])).is_err());
        assert!(PromotionMetric::MacroF1.check_labels(&names(&["negative", "positive"])).is_ok());
    }
}
