//! Stance toward targets the text may never name, end to end through the HTTP API:
//! a dataset mixing target-only rows (SemEval-2016 tweets) with rows whose target is a
//! span of the text, a training job (pair input chosen from the data, F_avg in its
//! metrics), a score job over a small corpus with three named targets (one prediction
//! per document and target; spans where a document mentions its target), the CSV
//! export, and the daily stance view read as a BI login.

use std::collections::HashMap;
use std::time::Duration;

use absa_e2e::service::{jsonl, stance, Service};
use serde_json::{json, Value};
use uuid::Uuid;

/// Rows of the training split whose text says "climate", given as spans of the text
/// (target "climate change" mentioned as "climate"), the rest as named targets.
fn mixed_rows(rows: &[Value]) -> (Vec<Value>, usize) {
    let mut spans = 0;
    let mixed = rows
        .iter()
        .map(|r| {
            let text = r["text"].as_str().unwrap();
            match text.find("climate") {
                Some(byte) if r["target"] == "climate change" => {
                    spans += 1;
                    let start = text[..byte].chars().count();
                    json!({ "text": text, "target": r["target"], "aspect": "climate", "start": start, "end": start + 7, "label": r["label"] })
                }
                _ => r.clone(),
            }
        })
        .collect();
    (mixed, spans)
}

/// Whether `text` has `word` (any case) with no letter, digit or `_` on either side.
fn says_word(text: &str, word: &str) -> bool {
    let text = text.to_lowercase();
    let is_word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    text.match_indices(word).any(|(at, _)| !is_word(text[..at].chars().next_back()) && !is_word(text[at + word.len()..].chars().next()))
}

#[ignore = "slow: trains models for minutes (scripts/test.sh runs it after the fast tier)"]
#[tokio::test(flavor = "multi_thread")]
async fn stance_dataset_training_multi_target_scoring_and_the_daily_view() {
    let mut svc = Service::start().await;
    svc.run("absa-scheduler", &["run"], "scheduler");
    svc.run("absa-trainer", &["work"], "trainer");
    svc.run("absa-scorer", &["work"], "scorer");
    let admin = svc.bootstrap_key("stance-team");
    let (analyst, _) = svc.key(&admin, "analyst");
    let (mlops, _) = svc.key(&admin, "mlops");
    let api = &svc.api;

    let (rows, spans) = mixed_rows(&stance("train"));
    assert!(spans > 5, "some rows carry a span: {spans}");
    let bad = json!({ "text": "no target given", "label": "favor" });
    let upload: Vec<Value> = rows.iter().cloned().chain(std::iter::once(bad)).collect();
    let a = api.upload(Some(&mlops), "/v1/datasets?name=stance", jsonl(&upload).as_bytes());
    assert_eq!((a.status, a.body["rows_added"].as_u64()), (201, Some(rows.len() as u64)), "{a:?}");
    let errors = a.body["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{a:?}");
    assert_eq!(errors[0]["line"].as_u64(), Some(upload.len() as u64));
    assert!(errors[0]["reason"].as_str().unwrap().contains("no target"), "{a:?}");
    let dataset = a.body["dataset_id"].as_str().unwrap().to_owned();

    let a = api.post(
        &mlops,
        "/v1/jobs/train",
        &json!({ "dataset_id": dataset, "base_model": "all-minilm-l6-v2", "promote": {},
                 "hyperparameters": { "learning_rate": 5e-5, "epochs": 2, "warmup_steps": 0, "seed": 42, "max_length": 64 } }),
    );
    assert_eq!(a.status, 201, "{a:?}");
    let job = a.body["id"].as_str().unwrap().to_owned();
    let done = svc.wait_job(&mlops, &job, Duration::from_secs(900));
    assert_eq!(done["state"], "succeeded", "{done}\n{}", svc.logs());
    let version = done["model_version_id"].as_str().unwrap().to_owned();
    let model = api.get(Some(&analyst), &format!("/v1/models/{version}")).body;
    assert_eq!(model["label_names"], json!(["against", "neither", "favor"]), "{model}");
    let epochs = api.get(Some(&analyst), &format!("/v1/jobs/{job}/metrics")).body;
    let f_avgs: Vec<f64> = epochs["epochs"].as_array().unwrap().iter().filter_map(|e| e["f_avg"].as_f64()).collect();
    assert_eq!(f_avgs.len(), 2, "F_avg beside accuracy and macro-F1 for every epoch: {epochs}");
    let summary = &model["metrics"];
    assert_eq!(summary["input"], "text_target_pair", "pair input, chosen from the data: {summary}");
    assert_eq!(summary["validation_f_avg"].as_f64(), Some(f_avgs[summary["best_epoch"].as_u64().unwrap() as usize - 1]), "{summary}");
    assert!(summary["test_f_avg"].is_null(), "no test split uploaded: {summary}");

    // A corpus of test tweets without targets, scored toward three named targets.
    let test = stance("test");
    let docs: Vec<Value> = test.iter().take(30).enumerate().map(|(i, r)| json!({ "id": format!("d{i}"), "text": r["text"] })).collect();
    let mentions_climate: Vec<bool> = docs.iter().map(|d| says_word(d["text"].as_str().unwrap(), "climate")).collect();
    let a = api.upload(Some(&analyst), "/v1/corpora?name=tweets", jsonl(&docs).as_bytes());
    assert_eq!((a.status, a.body["documents_added"].as_i64()), (201, Some(30)), "{a:?}");
    let corpus = a.body["corpus_id"].as_str().unwrap().to_owned();
    let targets = json!([
        { "name": "legalization of abortion", "aliases": ["abortion"] },
        { "name": "atheism", "aliases": ["atheist", "atheists"] },
        { "name": "climate change", "aliases": ["climate"] }
    ]);
    let a = api.post(&analyst, "/v1/jobs/score", &json!({ "corpus_id": corpus, "model_version_id": version, "targets": targets, "shard_size": 100 }));
    assert_eq!(a.status, 201, "{a:?}");
    let job = a.body["id"].as_str().unwrap().to_owned();
    let done = svc.wait_job(&analyst, &job, Duration::from_secs(300));
    assert_eq!(done["state"], "succeeded", "{done}\n{}", svc.logs());
    assert_eq!(done["predictions"].as_i64(), Some(90), "one prediction per document and target: {done}");

    let (status, bytes) = api.get_bytes(&analyst, &format!("/v1/jobs/{job}/predictions?format=csv"));
    assert_eq!(status, 200);
    let text = String::from_utf8(bytes).unwrap();
    let mut per_target: HashMap<String, usize> = HashMap::new();
    for line in text.lines().skip(1) {
        let fields: Vec<&str> = line.split(',').collect();
        let (doc, target, start) = (fields[0], fields[3], fields[4]);
        *per_target.entry(target.to_owned()).or_default() += 1;
        let i: usize = doc[1..].parse().unwrap();
        if target == "climate change" {
            assert_eq!(!start.is_empty(), mentions_climate[i], "{line}: spanned exactly where the tweet says climate");
        }
        assert!(["against", "neither", "favor"].contains(&fields[6]), "{line}");
    }
    assert_eq!(per_target.len(), 3, "{per_target:?}");
    assert!(per_target.values().all(|&n| n == 30), "{per_target:?}");

    // The daily view, as a BI login: 30 documents a target, shares summing to one.
    let role = format!("bi_{}", &Uuid::new_v4().simple().to_string()[..12]);
    let a = api.post(&admin, "/v1/bi-logins", &json!({ "role_name": role, "password": "correct-horse-battery", "valid_days": 1 }));
    assert_eq!(a.status, 201, "{a:?}");
    let bi_url = svc.db_url.replacen("absa:absa@", &format!("{role}:correct-horse-battery@"), 1);
    let bi = sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(&bi_url).await.expect("BI login connects");
    /// target, documents, against, neither, favor, their three shares, mean confidence.
    type Daily = (String, i64, i64, i64, i64, f64, f64, f64, f64);
    let daily: Vec<Daily> = sqlx::query_as(
        "SELECT target, documents, against, neither, favor, against_share, neither_share, favor_share, mean_confidence
         FROM bi_daily_stance ORDER BY target",
    )
    .fetch_all(&bi)
    .await
    .unwrap();
    assert_eq!(daily.iter().map(|d| d.0.as_str()).collect::<Vec<_>>(), ["atheism", "climate change", "legalization of abortion"]);
    for (target, documents, against, neither, favor, a_share, n_share, f_share, confidence) in &daily {
        assert_eq!((*documents, against + neither + favor), (30, 30), "{target}");
        assert!((a_share + n_share + f_share - 1.0).abs() < 1e-9 && (*a_share - *against as f64 / 30.0).abs() < 1e-9, "{target}");
        assert!(*confidence > 1.0 / 3.0 && *confidence <= 1.0, "{target}: {confidence}");
    }
    let unmentioned: i64 = sqlx::query_scalar("SELECT count(*) FROM bi_stance WHERE span_start IS NULL").fetch_one(&bi).await.unwrap();
    assert!(unmentioned > 60, "most tweets name none of the targets: {unmentioned}");
    bi.close().await;
    svc.stop().await;
}
