//! A training job's figures per epoch: written by the trainer worker as each epoch
//! ends (again for an epoch a retried attempt repeats), read by the API.

use serde_json::Value;
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::Result;

/// One epoch's figures on the validation split, and its report and timings (`detail`).
#[derive(Clone, Debug, PartialEq)]
pub struct EpochFigures {
    pub epoch: i32,
    pub train_loss: f64,
    pub validation_loss: f64,
    pub accuracy: f64,
    pub macro_f1: f64,
    pub detail: Value,
}

/// Stores `job`'s figures of `figures.epoch`, replacing those of an earlier attempt.
pub async fn record(executor: impl PgExecutor<'_>, job: Uuid, figures: &EpochFigures) -> Result<()> {
    let f = figures;
    sqlx::query!(
        "INSERT INTO training_metrics (job_id, epoch, train_loss, validation_loss, accuracy, macro_f1, detail)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (job_id, epoch) DO UPDATE SET train_loss = EXCLUDED.train_loss, validation_loss = EXCLUDED.validation_loss,
             accuracy = EXCLUDED.accuracy, macro_f1 = EXCLUDED.macro_f1, detail = EXCLUDED.detail, recorded_at = now()",
        job,
        f.epoch,
        f.train_loss,
        f.validation_loss,
        f.accuracy,
        f.macro_f1,
        f.detail,
    )
    .execute(executor)
    .await?;
    Ok(())
}

/// `job`'s figures, by epoch.
pub async fn of_job(executor: impl PgExecutor<'_>, job: Uuid) -> Result<Vec<EpochFigures>> {
    Ok(sqlx::query_as!(
        EpochFigures,
        "SELECT epoch, train_loss, validation_loss, accuracy, macro_f1, detail FROM training_metrics WHERE job_id = $1 ORDER BY epoch",
        job
    )
    .fetch_all(executor)
    .await?)
}
