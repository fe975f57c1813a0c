//! Row errors on the real Postgres: each listing shows its owner's errors only, a job's
//! include its shards', pages follow (line, id), and a NUL in a reason is stored.

use absa_platform::db::ScratchDb;
use absa_store::row_errors::{page, record, Found, Listed};
use uuid::Uuid;

async fn owner(db: &ScratchDb, table: &str, team: Uuid) -> Uuid {
    let id = Uuid::new_v4();
    sqlx::query(&format!("INSERT INTO {table} (id, team_id, name) VALUES ($1, $2, $3)"))
        .bind(id)
        .bind(team)
        .bind(id.to_string())
        .execute(&db.pool)
        .await
        .unwrap();
    id
}

async fn job(db: &ScratchDb, team: Uuid, kind: &str, parent: Option<Uuid>) -> Uuid {
    let id = Uuid::new_v4();
    sqlx::query("INSERT INTO jobs (id, team_id, kind, state, parent_id) VALUES ($1, $2, $3, 'running', $4)")
        .bind(id)
        .bind(team)
        .bind(kind)
        .bind(parent)
        .execute(&db.pool)
        .await
        .unwrap();
    id
}

fn lines(errors: &[absa_store::row_errors::StoredError]) -> Vec<i64> {
    errors.iter().map(|e| e.line).collect()
}

#[tokio::test]
async fn each_listing_shows_its_owners_errors_and_a_jobs_include_its_shards() {
    let db = ScratchDb::new("absa_row_errors").await.unwrap();
    let team = db.team().await.unwrap();
    let (dataset, corpus) = (owner(&db, "datasets", team).await, owner(&db, "corpora", team).await);
    let (training, scoring) = (job(&db, team, "train", None).await, job(&db, team, "score", None).await);
    let shard = job(&db, team, "score_shard", Some(scoring)).await;
    let errors = |lines: &[i64]| -> Vec<(i64, String)> { lines.iter().map(|&l| (l, format!("bad row {l}"))).collect() };
    let mut conn = db.pool.acquire().await.unwrap();
    record(&mut conn, Found::DatasetUpload(dataset), &errors(&[3, 1])).await.unwrap();
    record(&mut conn, Found::Training { job: training, dataset }, &errors(&[7])).await.unwrap();
    record(&mut conn, Found::CorpusUpload(corpus), &[(2, "a \0 in the reason".to_string())]).await.unwrap();
    record(&mut conn, Found::Scoring { job: scoring, corpus }, &errors(&[9])).await.unwrap();
    // A shard's own errors (stored under the shard before they went to the parent).
    record(&mut conn, Found::Scoring { job: shard, corpus }, &errors(&[5])).await.unwrap();
    drop(conn);

    let all = (-1, 0);
    assert_eq!(lines(&page(&db.pool, Listed::DatasetUploads(dataset), all, 10).await.unwrap()), [1, 3], "the upload's, not the training job's");
    assert_eq!(lines(&page(&db.pool, Listed::Job(training), all, 10).await.unwrap()), [7]);
    let corpus_errors = page(&db.pool, Listed::CorpusUploads(corpus), all, 10).await.unwrap();
    assert_eq!((lines(&corpus_errors), corpus_errors[0].reason.as_str()), (vec![2], "a \\0 in the reason"));
    assert_eq!(lines(&page(&db.pool, Listed::Job(scoring), all, 10).await.unwrap()), [5, 9], "the parent's and its shard's");

    // Pages by (line, id): the second page starts after the first's last row.
    let first = page(&db.pool, Listed::DatasetUploads(dataset), all, 1).await.unwrap();
    let rest = page(&db.pool, Listed::DatasetUploads(dataset), (first[0].line, first[0].id), 10).await.unwrap();
    assert_eq!((lines(&first), lines(&rest)), (vec![1], vec![3]));
    assert_eq!(rest[0].reason, "bad row 3");
}
