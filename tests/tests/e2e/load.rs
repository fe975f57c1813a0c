//! Load: 1,000 training jobs submitted by 20 concurrent clients through the API, then
//! 200 of them again with the same Idempotency-Key from other clients: exactly 1,000
//! jobs exist, every resubmission returns the first job. Prints submissions per second.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use absa_e2e::http::Api;
use absa_e2e::service::{jsonl, laptops, Service};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_concurrent_submissions_make_a_thousand_jobs() {
    let svc = Service::start().await;
    let admin = svc.bootstrap_key("load");
    let (mlops, _) = svc.key(&admin, "mlops");
    let a = svc.api.upload(Some(&mlops), "/v1/datasets?name=d", jsonl(&laptops("train")[..10]).as_bytes());
    let body = Arc::new(json!({ "dataset_id": a.body["dataset_id"], "base_model": "all-minilm-l6-v2" }));
    let submit_all = |keys: Vec<usize>, clients: usize| -> Vec<(usize, u16, String)> {
        let started = Instant::now();
        let chunks: Vec<Vec<usize>> = keys.chunks(keys.len().div_ceil(clients)).map(<[usize]>::to_vec).collect();
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                let (base, key, body) = (svc.api.base.clone(), mlops.clone(), Arc::clone(&body));
                std::thread::spawn(move || {
                    let api = Api::new(base);
                    chunk
                        .into_iter()
                        .map(|k| {
                            let a = api.send("POST", Some(&key), "/v1/jobs/train", Some(&body), &[("Idempotency-Key", &format!("load-{k}"))]);
                            (k, a.status, a.body["id"].as_str().unwrap_or_default().to_owned())
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
        let secs = started.elapsed().as_secs_f64();
        eprintln!("{} submissions from {clients} clients in {secs:.2} s: {:.0}/s", results.len(), results.len() as f64 / secs);
        results
    };
    let first = submit_all((0..1000).collect(), 20);
    assert!(first.iter().all(|r| r.1 == 201), "{:?}", first.iter().find(|r| r.1 != 201));
    let ids: HashSet<&str> = first.iter().map(|r| r.2.as_str()).collect();
    assert_eq!(ids.len(), 1000);
    let again = submit_all((0..1000).step_by(5).collect(), 10);
    for (k, status, id) in &again {
        assert_eq!(*status, 200, "key {k}");
        assert_eq!(id, &first[*k].2, "key {k} returned another job");
    }
    // Counted in the database: the API's listing is clamped at 1,000, so it could not
    // show a 1,001st job.
    let pool = sqlx::PgPool::connect(&svc.db_url).await.unwrap();
    let (jobs, distinct_keys): (i64, i64) = sqlx::query_as("SELECT count(*), count(DISTINCT idempotency_key) FROM jobs").fetch_one(&pool).await.unwrap();
    assert_eq!((jobs, distinct_keys), (1000, 1000), "exactly one job per key, nothing else");
    pool.close().await;
    svc.stop().await;
}
