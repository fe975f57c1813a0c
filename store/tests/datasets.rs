//! The labelled rows a trainer reads, on the real Postgres: the team's own only, and a
//! job's snapshot keeps reading the same rows after an upload appends more.

use absa_platform::db::ScratchDb;
use absa_store::datasets::{labelled_rows, LastLines};
use uuid::Uuid;

/// A stored row: split, line, text, target, span.
type Row<'a> = (&'a str, i32, &'a str, &'a str, Option<(i32, i32)>);

async fn dataset(db: &ScratchDb, team: Uuid, rows: &[Row<'_>]) -> Uuid {
    let id = Uuid::new_v4();
    sqlx::query("INSERT INTO datasets (id, team_id, name) VALUES ($1, $2, $3)").bind(id).bind(team).bind(id.to_string()).execute(&db.pool).await.unwrap();
    for (split, line, text, target, span) in rows {
        sqlx::query(
            "INSERT INTO dataset_rows (dataset_id, split, line, text, aspect, span_start, span_end, label) VALUES ($1, $2, $3, $4, $5, $6, $7, 'positive')",
        )
        .bind(id)
        .bind(split)
        .bind(line)
        .bind(text)
        .bind(target)
        .bind(span.map(|s| s.0))
        .bind(span.map(|s| s.1))
        .execute(&db.pool)
        .await
        .unwrap();
    }
    id
}

#[tokio::test]
async fn a_snapshot_reads_the_same_rows_after_an_append_and_only_the_teams_own() {
    let db = ScratchDb::new("absa_datasets").await.unwrap();
    let team = db.team().await.unwrap();
    let id = dataset(
        &db,
        team,
        &[("train", 1, "good fan", "fan", Some((5, 8))), ("train", 2, "we must act", "climate policy", None), ("test", 1, "bad keys", "keys", Some((4, 8)))],
    )
    .await;
    let rows = labelled_rows(&db.pool, team, id, None).await.unwrap();
    let seen: Vec<(&str, i32, Option<i32>)> = rows.iter().map(|r| (r.split.as_str(), r.line, r.span_start)).collect();
    assert_eq!(seen, [("test", 1, Some(4)), ("train", 1, Some(5)), ("train", 2, None)]);
    assert_eq!(rows[2].target, "climate policy");
    let snapshot = LastLines::of(&rows);
    assert_eq!(snapshot, LastLines { train: 2, validation: 0, test: 1 });

    // An upload appends a line to train and a validation split.
    for (split, line) in [("train", 3), ("validation", 1)] {
        sqlx::query(
            "INSERT INTO dataset_rows (dataset_id, split, line, text, aspect, span_start, span_end, label) VALUES ($1, $2, $3, 'new', 'new', 0, 3, 'negative')",
        )
        .bind(id)
        .bind(split)
        .bind(line)
        .execute(&db.pool)
        .await
        .unwrap();
    }
    assert_eq!(labelled_rows(&db.pool, team, id, Some(snapshot)).await.unwrap(), rows, "the snapshot's rows, and no others");
    assert_eq!(labelled_rows(&db.pool, team, id, None).await.unwrap().len(), 5);

    let other_team = db.team().await.unwrap();
    assert!(labelled_rows(&db.pool, other_team, id, None).await.unwrap().is_empty(), "another team's dataset reads as no rows");
}
