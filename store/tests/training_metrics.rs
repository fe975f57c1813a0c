//! Epoch figures on the real Postgres: a retried attempt's epoch replaces the earlier
//! attempt's figures, and a job's figures read back by epoch.

use absa_platform::db::ScratchDb;
use absa_store::training_metrics::{of_job, record, EpochFigures};
use serde_json::json;
use uuid::Uuid;

#[tokio::test]
async fn a_repeated_epoch_replaces_its_figures_and_epochs_read_back_in_order() {
    let db = ScratchDb::new("absa_training_metrics").await.unwrap();
    let team = db.team().await.unwrap();
    let job = Uuid::new_v4();
    sqlx::query("INSERT INTO jobs (id, team_id, kind, state) VALUES ($1, $2, 'train', 'running')").bind(job).bind(team).execute(&db.pool).await.unwrap();
    let figures = |epoch: i32, accuracy: f64| EpochFigures {
        epoch,
        train_loss: 0.5,
        validation_loss: 0.4,
        accuracy,
        macro_f1: accuracy - 0.1,
        detail: json!({ "report": { "f_avg": null } }),
    };
    record(&db.pool, job, &figures(2, 0.7)).await.unwrap();
    record(&db.pool, job, &figures(1, 0.6)).await.unwrap();
    // The retry's epoch 2.
    record(&db.pool, job, &figures(2, 0.75)).await.unwrap();
    assert_eq!(of_job(&db.pool, job).await.unwrap(), [figures(1, 0.6), figures(2, 0.75)]);
    assert!(of_job(&db.pool, Uuid::new_v4()).await.unwrap().is_empty());
}
