//! Predictions written with binary COPY against the real Postgres: awkward strings,
//! floats and NULL spans round-trip exactly, NUL and half a span are refused before
//! anything is sent, a duplicate key fails the COPY, and the caller's transaction
//! decides what stays.

use absa_platform::db::ScratchDb;
use absa_store::predictions::{copy_predictions, PredictionRow};
use uuid::Uuid;

struct Fixture {
    db: ScratchDb,
    job: Uuid,
    corpus: Uuid,
    model: Uuid,
}

impl Fixture {
    async fn new() -> Self {
        let db = ScratchDb::new("absa_predictions").await.unwrap();
        let pool = &db.pool;
        let team = db.team().await.unwrap();
        let (job, corpus, model) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        sqlx::query("INSERT INTO jobs (id, team_id, kind) VALUES ($1, $2, 'score')").bind(job).bind(team).execute(pool).await.unwrap();
        sqlx::query("INSERT INTO corpora (id, team_id, name) VALUES ($1, $2, 'c')").bind(corpus).bind(team).execute(pool).await.unwrap();
        sqlx::query("INSERT INTO model_versions (id, team_id, base_model, label_names) VALUES ($1, $2, 'm', '{negative,neutral,positive}')")
            .bind(model)
            .bind(team)
            .execute(pool)
            .await
            .unwrap();
        Self { db, job, corpus, model }
    }

    fn row(&self, seq: i64, target_index: i32, aspect: &str, label: &str, probabilities: Vec<f32>) -> PredictionRow {
        let confidence = probabilities.iter().copied().fold(f32::MIN, f32::max);
        PredictionRow {
            job_id: self.job,
            corpus_id: self.corpus,
            seq,
            target_index,
            model_version_id: self.model,
            aspect: aspect.into(),
            span_start: Some(3),
            span_end: Some(3 + aspect.chars().count() as i32),
            label: label.into(),
            confidence,
            probabilities,
        }
    }

    async fn read_back(&self) -> Vec<PredictionRow> {
        type Row = (Uuid, Uuid, i64, i32, Uuid, String, Option<i32>, Option<i32>, String, f32, Vec<f32>);
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT job_id, corpus_id, seq, target_index, model_version_id, aspect, span_start, span_end, label, confidence, probabilities
             FROM predictions ORDER BY seq, target_index",
        )
        .fetch_all(&self.db.pool)
        .await
        .unwrap();
        rows.into_iter()
            .map(|(job_id, corpus_id, seq, target_index, model_version_id, aspect, span_start, span_end, label, confidence, probabilities)| PredictionRow {
                job_id,
                corpus_id,
                seq,
                target_index,
                model_version_id,
                aspect,
                span_start,
                span_end,
                label,
                confidence,
                probabilities,
            })
            .collect()
    }
}

#[tokio::test]
async fn awkward_strings_and_floats_round_trip_exactly() {
    let f = Fixture::new().await;
    let rows = vec![
        f.row(0, 0, "battery\tlife", "positive", vec![0.1, 0.2, 0.7]),
        f.row(0, 1, "line\nbreak\r\n", "neg\\ative", vec![0.6, 0.3, 0.1]),
        f.row(1, 0, r#"back\slash \N "quoted" 'single'"#, "\\.", vec![1.0 / 3.0, f32::MIN_POSITIVE, f32::EPSILON]),
        f.row(2, 0, "écran 屏幕 🙂 Ωμέγα", "positive", vec![]),
        f.row(3, 0, "", "", vec![0.123_456_79, 0.0, -0.0]),
        // A named target the document does not mention: no span, NULL in both columns.
        PredictionRow { span_start: None, span_end: None, ..f.row(4, 0, "legalization of abortion", "against", vec![0.7, 0.2, 0.1]) },
        f.row(i64::MAX, i32::MAX, ",;|{}[]", "NULL", vec![f32::MAX, 1e-38, 0.5]),
    ];
    let mut tx = f.db.pool.begin().await.unwrap();
    assert_eq!(copy_predictions(&mut tx, &rows).await.unwrap(), rows.len() as u64);
    tx.commit().await.unwrap();
    let back = f.read_back().await;
    assert_eq!(back.len(), rows.len());
    for (written, read) in rows.iter().zip(&back) {
        assert_eq!(written, read);
        // Bit for bit, not just ==: -0.0 stays -0.0.
        let bits = |v: &[f32]| v.iter().map(|p| p.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&written.probabilities), bits(&read.probabilities));
        assert_eq!(written.confidence.to_bits(), read.confidence.to_bits());
    }
    assert_eq!(copy_predictions(&mut f.db.pool.acquire().await.unwrap(), &[]).await.unwrap(), 0);
}

#[tokio::test]
async fn a_nul_character_is_refused_with_a_clear_error_and_the_connection_stays_usable() {
    let f = Fixture::new().await;
    let mut tx = f.db.pool.begin().await.unwrap();
    let rows = vec![f.row(0, 0, "fine", "positive", vec![1.0]), f.row(7, 2, "bad\0aspect", "positive", vec![1.0])];
    let err = copy_predictions(&mut tx, &rows).await.unwrap_err().to_string();
    assert!(err.contains("seq 7, target 2") && err.contains("aspect contains a NUL"), "{err}");
    // Nothing was sent: the transaction is still healthy and can write good rows.
    assert_eq!(copy_predictions(&mut tx, &rows[..1]).await.unwrap(), 1);
    tx.commit().await.unwrap();
    assert_eq!(f.read_back().await.len(), 1);
}

#[tokio::test]
async fn half_a_span_is_refused_before_anything_is_sent() {
    let f = Fixture::new().await;
    let mut tx = f.db.pool.begin().await.unwrap();
    let rows = vec![f.row(0, 0, "fine", "positive", vec![1.0]), PredictionRow { span_end: None, ..f.row(3, 1, "half", "positive", vec![1.0]) }];
    let err = copy_predictions(&mut tx, &rows).await.unwrap_err().to_string();
    assert!(err.contains("seq 3, target 1") && err.contains("both offsets or neither"), "{err}");
    assert_eq!(copy_predictions(&mut tx, &rows[..1]).await.unwrap(), 1);
    tx.commit().await.unwrap();
    let nulls: i64 = sqlx::query_scalar("SELECT count(*) FROM predictions WHERE span_start IS NULL OR span_end IS NULL").fetch_one(&f.db.pool).await.unwrap();
    assert_eq!(nulls, 0);
}

#[tokio::test]
async fn a_duplicate_key_fails_the_copy_and_a_rolled_back_transaction_leaves_nothing() {
    let f = Fixture::new().await;
    let mut tx = f.db.pool.begin().await.unwrap();
    // More than one flush worth of rows, so the error arrives after several messages.
    let mut rows: Vec<PredictionRow> = (0..20_000).map(|seq| f.row(seq, 0, "aspect", "neutral", vec![0.2, 0.5, 0.3])).collect();
    rows.push(f.row(5, 0, "again", "neutral", vec![1.0]));
    let err = copy_predictions(&mut tx, &rows).await.unwrap_err().to_string();
    assert!(err.contains("duplicate key"), "{err}");
    tx.rollback().await.unwrap();
    assert!(f.read_back().await.is_empty());
    // The pooled connection is fine afterwards.
    let mut tx = f.db.pool.begin().await.unwrap();
    assert_eq!(copy_predictions(&mut tx, &rows[..20_000]).await.unwrap(), 20_000);
    tx.commit().await.unwrap();
    assert_eq!(f.read_back().await.len(), 20_000);
}
