//! What a signed-in but hostile team member can send, through the real API: every
//! request below is refused with a 4xx that says why, before the work it asks for is
//! done, nothing of it is stored, and the API's peak memory stays bounded (its VmHWM
//! is read from /proc and asserted). The good rows of a hostile upload still land.

use std::io::{Read, Write};

use absa_e2e::http::Answer;
use absa_e2e::peak_rss_mib;
use absa_e2e::service::{jsonl, laptops, Service};
use serde_json::{json, Value};

/// Ceilings on the API's peak-memory growth (VmHWM) over its 15 MiB after set-up.
/// Measured on the 2-core development machine: +2 MiB for the refused requests (64 MiB
/// and 5 MiB bodies included), +3 MiB after 15 MB of bad CSV, +100 MiB for the Parquet
/// bomb (the parquet crate decompresses the 100 MB page before the cell can be
/// refused; the footer cap refuses the file with no growth: 15 MiB in all).
const REQUESTS_GROWTH_MIB: f64 = 16.0;
const CSV_GROWTH_MIB: f64 = 32.0;
const BOMB_GROWTH_MIB: f64 = 128.0;
const FOOTER_CAPPED_PEAK_MIB: f64 = 48.0;

/// A request over a plain socket: `headers` then `body` in 64 KiB writes, stopping when
/// the server stops reading (it may answer first). Returns the status and the body.
fn raw_request(base: &str, method: &str, path: &str, headers: &str, body: &[u8]) -> (u16, String) {
    let address = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).expect("connect");
    let _ = write!(stream, "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n{headers}\r\n\r\n");
    for part in body.chunks(64 << 10) {
        if stream.write_all(part).is_err() {
            break;
        }
    }
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default())
}

/// The same body sent chunked (no Content-Length, so the server must count as it reads).
fn chunked(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for part in body.chunks(64 << 10) {
        out.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        out.extend_from_slice(part);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

fn refused(a: &Answer, status: u16, needle: &str) {
    assert_eq!(a.status, status, "{a:?}");
    let message = a.body["error"].as_str().unwrap_or_else(|| panic!("no error message: {a:?}"));
    assert!(message.contains(needle), "expected {needle:?} in {message:?}");
}

/// A Parquet corpus: a good row, one row whose text is 100,000,000 characters (a few KB
/// compressed with zstd), and another good row.
fn parquet_bomb() -> Vec<u8> {
    use parquet::basic::{Compression, ZstdLevel};
    use parquet::data_type::{ByteArray, ByteArrayType};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use std::sync::Arc;
    let schema = Arc::new(parquet::schema::parser::parse_message_type("message rows { required binary id (UTF8); required binary text (UTF8); }").unwrap());
    let props = WriterProperties::builder().set_compression(Compression::ZSTD(ZstdLevel::try_new(3).unwrap())).set_dictionary_enabled(false).build();
    let mut out = Vec::new();
    let mut writer = SerializedFileWriter::new(&mut out, schema, Arc::new(props)).unwrap();
    let mut group = writer.next_row_group().unwrap();
    let ids = [ByteArray::from("good-1"), ByteArray::from("bomb"), ByteArray::from("good-2")];
    let texts = [ByteArray::from("Great battery life"), ByteArray::from("x".repeat(100_000_000).into_bytes()), ByteArray::from("Dim screen")];
    for values in [&ids, &texts] {
        let mut col = group.next_column().unwrap().unwrap();
        col.typed::<ByteArrayType>().write_batch(values, None, None).unwrap();
        col.close().unwrap();
    }
    group.close().unwrap();
    writer.close().unwrap();
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_requests_are_refused_before_work_and_memory_stays_bounded() {
    let svc =
        Service::start_with(&[("ABSA_API__MAX_UPLOAD_BYTES", "30000000"), ("ABSA_API__MAX_STORED_ERRORS", "2000"), ("ABSA_API__MAX_QUEUED_PER_TEAM", "2")])
            .await;
    let admin = svc.bootstrap_key("hostile");
    let (mlops, _) = svc.key(&admin, "mlops");
    let (analyst, _) = svc.key(&admin, "analyst");
    let api = &svc.api;
    let pid = svc.processes.iter().find(|p| p.name == "api").expect("the API process").pid();
    let a = api.upload(Some(&mlops), "/v1/datasets?name=laptops", jsonl(&laptops("train")[..40]).as_bytes());
    assert_eq!(a.status, 201, "{a:?}");
    let dataset = a.body["dataset_id"].as_str().unwrap().to_owned();
    let a = api.upload(Some(&analyst), "/v1/corpora?name=reviews", b"{\"id\": \"r1\", \"text\": \"Great battery\"}\n");
    let corpus = a.body["corpus_id"].as_str().unwrap().to_owned();
    let before = peak_rss_mib(pid);

    // Bodies: a wrong role is refused before any of the body is read; a JSON body over
    // 1 MiB is refused whether it declares its length or is sent chunked.
    let big = format!("{{\"name\": \"{}\", \"role\": \"admin\"}}", "x".repeat(64 << 20));
    let (status, body) = raw_request(
        &api.base,
        "POST",
        "/v1/keys",
        &format!("Authorization: Bearer {analyst}\r\nContent-Type: application/json\r\nContent-Length: {}", big.len()),
        big.as_bytes(),
    );
    assert_eq!(status, 403, "{body}");
    let train_body = json!({ "dataset_id": dataset, "base_model": "all-minilm-l6-v2", "labels": ["a".repeat(2 << 20), "b".to_string()] }).to_string();
    let auth = format!("Authorization: Bearer {mlops}\r\nContent-Type: application/json");
    let (status, body) = raw_request(&api.base, "POST", "/v1/jobs/train", &format!("{auth}\r\nContent-Length: {}", train_body.len()), train_body.as_bytes());
    assert!(status == 413 && body.contains("limit of 1048576 bytes"), "{status} {body}");
    let (status, body) = raw_request(&api.base, "POST", "/v1/jobs/train", &format!("{auth}\r\nTransfer-Encoding: chunked"), &chunked(train_body.as_bytes()));
    assert!(status == 413 && body.contains("limit of 1048576 bytes"), "chunked: {status} {body}");

    // A 12 KB sweep of 200 x 2,000 values: sized, not built.
    let sweep = json!({ "dataset_id": dataset, "base_model": "all-minilm-l6-v2", "grid": { "seed": (0..200).collect::<Vec<_>>(), "split_seed": (0..2000).collect::<Vec<_>>() } });
    refused(&api.post(&mlops, "/v1/jobs/sweep", &sweep), 422, "this grid has 400000");
    let sweep = json!({ "dataset_id": dataset, "base_model": "all-minilm-l6-v2", "grid": { "epochs": [1, 1_000_000] } });
    refused(&api.post(&mlops, "/v1/jobs/sweep", &sweep), 422, "trial 1: hyperparameters.epochs 1000000: outside [1, 100]");

    // Hyperparameters, devices and priorities out of range.
    let train = |extra: Value| {
        let mut body = json!({ "dataset_id": dataset, "base_model": "all-minilm-l6-v2" });
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        api.post(&mlops, "/v1/jobs/train", &body)
    };
    for (extra, reason) in [
        (json!({ "hyperparameters": { "epochs": 1e15 } }), "epochs: an integer"),
        (json!({ "hyperparameters": { "epochs": 1_000_000_000_000_000u64 } }), "outside [1, 100]"),
        (json!({ "hyperparameters": { "max_length": 1_000_000_000 } }), "max_length 1000000000: outside [8, 8192]"),
        (json!({ "hyperparameters": { "batch_size": 1_000_000_000_000u64 } }), "batch_size 1000000000000: outside [1, 1024]"),
        (json!({ "hyperparameters": { "validation_fraction": 7.5 } }), "validation_fraction 7.5: outside (0, 1)"),
        (json!({ "base_model": "/etc" }), "no paths"),
        (json!({ "priority": i32::MAX }), "priority 2147483647: -100 to 100"),
    ] {
        refused(&train(extra), 422, reason);
    }

    // Schedules pass the train route's checks, and fire at most hourly by default.
    let schedule = |extra: Value| {
        let mut body = json!({ "name": "nightly", "dataset_id": dataset, "base_model": "all-minilm-l6-v2", "cron": "0 3 * * *" });
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        api.post(&mlops, "/v1/schedules", &body)
    };
    for (extra, reason) in [
        (json!({ "base_model": "/etc" }), "no paths"),
        (json!({ "base_model": "../../../etc" }), "no paths"),
        (json!({ "hyperparameters": { "dropout": 0.1 } }), "unknown hyperparameter \"dropout\""),
        (json!({ "promote": { "alias": "Prod!" } }), "promote.alias"),
        (json!({ "cron": "* * * * * *" }), "fires 1 s apart; a schedule fires at most every 3600 s"),
        (json!({ "cron": "* 3 * * *" }), "fires 60 s apart"),
    ] {
        refused(&schedule(extra), 422, reason);
    }

    // Score jobs: shards and lexicons bounded.
    let score = |extra: Value| {
        let mut body = json!({ "corpus_id": corpus, "alias": "production" });
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        api.post(&analyst, "/v1/jobs/score", &body)
    };
    refused(&score(json!({ "shard_size": 1 })), 422, "shard_size 1: outside [100, 1000000]");
    refused(&score(json!({ "priority": i32::MAX })), 422, "priority");
    refused(&score(json!({ "target_mode": "lexicon", "lexicon": vec!["battery"; 2000] })), 422, "lexicon: 1 to 1000 terms");
    let lexicon = json!({ "corpus_id": corpus, "alias": "production", "target_mode": "lexicon", "lexicon": ["x".repeat(5 << 20)] }).to_string();
    let auth = format!("Authorization: Bearer {analyst}\r\nContent-Type: application/json\r\nContent-Length: {}", lexicon.len());
    let (status, body) = raw_request(&api.base, "POST", "/v1/jobs/score", &auth, lexicon.as_bytes());
    assert!(status == 413 && body.contains("limit of 1048576 bytes"), "a 5 MiB lexicon: {status} {body}");

    // Idempotency: the same key with another request, or for another kind, is a 422.
    let hp = json!({ "dataset_id": dataset, "base_model": "all-minilm-l6-v2", "hyperparameters": { "epochs": 1 } });
    let first = api.send("POST", Some(&mlops), "/v1/jobs/train", Some(&hp), &[("Idempotency-Key", "nightly-1")]);
    assert_eq!(first.status, 201, "{first:?}");
    let again = api.send("POST", Some(&mlops), "/v1/jobs/train", Some(&hp), &[("Idempotency-Key", "nightly-1")]);
    assert_eq!((again.status, &again.body["id"]), (200, &first.body["id"]), "a retry gets the first job");
    let other = json!({ "dataset_id": dataset, "base_model": "all-minilm-l6-v2", "hyperparameters": { "epochs": 2 } });
    refused(&api.send("POST", Some(&mlops), "/v1/jobs/train", Some(&other), &[("Idempotency-Key", "nightly-1")]), 422, "used for another request");
    let sweep = json!({ "dataset_id": dataset, "base_model": "all-minilm-l6-v2", "grid": { "seed": [1] } });
    refused(&api.send("POST", Some(&mlops), "/v1/jobs/sweep", Some(&sweep), &[("Idempotency-Key", "nightly-1")]), 422, "used for another request");

    // Uploads take keys too: a retried upload answers as the first did and adds nothing;
    // the key with other bytes is a 422.
    let rows = jsonl(&laptops("train")[40..50]);
    let upload = |body: &[u8]| {
        let url = format!("{}/v1/datasets?name=laptops", api.base);
        let agent = ureq::Agent::new_with_config(ureq::Agent::config_builder().http_status_as_error(false).build());
        let mut r = agent.post(&url).header("Authorization", format!("Bearer {mlops}")).header("Idempotency-Key", "batch-7").send(body).unwrap();
        (r.status().as_u16(), serde_json::from_str::<Value>(&r.body_mut().read_to_string().unwrap()).unwrap())
    };
    let (status, first) = upload(rows.as_bytes());
    assert_eq!((status, first["rows_total"].as_i64()), (201, Some(50)), "{first}");
    let (status, again) = upload(rows.as_bytes());
    assert_eq!((status, &again), (200, &first), "a retry gets the first answer");
    let (status, other) = upload(jsonl(&laptops("train")[50..60]).as_bytes());
    assert!(status == 422 && other["error"].as_str().unwrap().contains("used for another request"), "{status} {other}");
    assert_eq!(api.get(Some(&mlops), &format!("/v1/datasets/{dataset}")).body["rows"]["train"], 50, "nothing added twice");

    // Teams are not a team admin's to create.
    refused(&api.post(&admin, "/v1/teams", &json!({ "name": "mine" })), 403, "platform admin");

    // Nothing of the refused requests was stored: one job (the idempotent one), no schedule.
    let pool = sqlx::PgPool::connect(&svc.db_url).await.unwrap();
    let stored: Vec<(String, Option<String>)> = sqlx::query_as("SELECT kind, idempotency_key FROM jobs").fetch_all(&pool).await.unwrap();
    assert_eq!(stored, vec![("train".to_string(), Some("client:nightly-1".to_string()))], "client keys live apart from the scheduler's");
    assert_eq!(api.get(Some(&mlops), "/v1/schedules").body["schedules"], json!([]));
    let teams: i64 = sqlx::query_scalar("SELECT count(*) FROM teams").fetch_one(&pool).await.unwrap();
    assert_eq!(teams, 1);
    // The team's queue quota (2 here): a second job lands, a third is a 429.
    assert_eq!(train(json!({})).status, 201);
    refused(&train(json!({})), 429, "jobs queued, its quota");
    let after_requests = peak_rss_mib(pid);

    // 5,000 CSV rows of 3 KB bad values (15 MB) and 2 good ones: reasons are cut,
    // 2,000 errors are stored (the cap set above), all are counted, the good rows land.
    let mut csv = String::from("id,text,published_at\ng1,Great battery,\n");
    for i in 0..5000 {
        csv.push_str(&format!("b{i},Fine,{}\n", "y".repeat(3000)));
    }
    csv.push_str("g2,Dim screen,\n");
    let a = api.upload(Some(&analyst), "/v1/corpora?name=bad-csv&format=csv", csv.as_bytes());
    assert_eq!(a.status, 201, "{:?}", a.body.get("error"));
    assert_eq!((a.body["documents_added"].as_i64(), a.body["error_count"].as_i64(), a.body["errors_stored"].as_i64()), (Some(2), Some(5000), Some(2000)));
    let listed = a.body["errors"].as_array().unwrap();
    assert_eq!(listed.len(), 1000);
    let longest = listed.iter().map(|e| e["reason"].as_str().unwrap().len()).max().unwrap();
    assert!(longest < 400 && listed[0]["reason"].as_str().unwrap().contains("more bytes"), "reasons are cut: {}", listed[0]);
    let answer_bytes = a.body.to_string().len();
    assert!(answer_bytes < 500_000, "the answer to 15 MB of bad rows is {answer_bytes} bytes");
    let corpus_id = a.body["corpus_id"].as_str().unwrap();
    let stored: (i64, i64) = sqlx::query_as("SELECT count(*), coalesce(sum(length(reason)), 0) FROM row_errors WHERE corpus_id = $1::uuid")
        .bind(corpus_id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(stored.0 == 2000 && stored.1 < 2000 * 400, "stored errors {stored:?}");
    // They are read back a page at a time (default 1,000), by line: 1,000 + 1,000.
    let first = api.get(Some(&analyst), &format!("/v1/corpora/{corpus_id}/errors")).body;
    let after = first["next_after"].as_str().unwrap_or_else(|| panic!("no next page: {}", first["has_more"])).to_owned();
    let second = api.get(Some(&analyst), &format!("/v1/corpora/{corpus_id}/errors?after={after}")).body;
    let lines: Vec<i64> = [&first, &second].iter().flat_map(|p| p["errors"].as_array().unwrap().iter().map(|e| e["line"].as_i64().unwrap())).collect();
    assert_eq!((first["has_more"].as_bool(), second["has_more"].as_bool(), lines.len()), (Some(true), Some(false), 2000));
    assert!(lines.windows(2).all(|w| w[0] < w[1]), "by line, none twice");
    assert_eq!(api.get(Some(&analyst), &format!("/v1/corpora/{corpus_id}/errors?limit=10001")).status, 422);
    let after_csv = peak_rss_mib(pid);

    // A 100,000,000-character Parquet cell (a few KB of zstd) is a row error; the two
    // good rows around it land.
    let bomb = parquet_bomb();
    assert!(bomb.len() < 100_000, "the bomb is {} bytes", bomb.len());
    let a = api.upload(Some(&analyst), "/v1/corpora?name=bomb&format=parquet", &bomb);
    assert_eq!(a.status, 201, "{a:?}");
    assert_eq!(a.body["documents_added"], 2, "{a:?}");
    let reasons: Vec<&str> = a.body["errors"].as_array().unwrap().iter().map(|e| e["reason"].as_str().unwrap()).collect();
    assert_eq!(reasons, vec!["column \"text\" holds 100000000 bytes, over the limit of 1048576 bytes a row"], "{a:?}");
    let longest_text: i32 = sqlx::query_scalar("SELECT max(length(text)) FROM documents").fetch_one(&pool).await.unwrap();
    assert!(longest_text < 100, "{longest_text}");
    let after_bomb = peak_rss_mib(pid);
    // Over the footer's declared size cap (set to 50 MB below), the same file is refused
    // whole before any page is read.
    let capped = Service::start_with(&[("ABSA_API__MAX_PARQUET_UNCOMPRESSED_BYTES", "50000000"), ("ABSA_API__METRICS_KEY", "scrape-key-0123")]).await;
    let capped_admin = capped.bootstrap_key("capped");
    assert_eq!(capped.api.get(None, "/metrics").status, 401, "this API's metrics need its key");
    assert_eq!(capped.api.get(Some("wrong"), "/metrics").status, 401);
    assert_eq!(capped.api.get(Some(&capped_admin), "/metrics").status, 200, "an API key works too");
    let scraped = capped.api.get(Some("scrape-key-0123"), "/metrics");
    assert!(scraped.status == 200 && scraped.body.as_str().unwrap().contains("absa_build_info{"), "{scraped:?}");
    let a = capped.api.upload(Some(&capped_admin), "/v1/corpora?name=bomb&format=parquet", &bomb);
    refused(&a, 400, "bytes uncompressed, over the limit of 50000000 bytes");
    let capped_peak = peak_rss_mib(capped.processes.iter().find(|p| p.name == "api").unwrap().pid());
    capped.stop().await;
    eprintln!("API peak RSS: {before:.0} MiB after set-up, {after_requests:.0} after the refused requests, {after_csv:.0} after 15 MB of bad CSV, {after_bomb:.0} after the Parquet bomb; {capped_peak:.0} for an API that refused it by its footer");
    assert!(after_requests - before < REQUESTS_GROWTH_MIB, "refused requests grew the API's peak by {:.0} MiB", after_requests - before);
    assert!(after_csv - before < CSV_GROWTH_MIB, "15 MB of bad rows grew the API's peak by {:.0} MiB", after_csv - before);
    assert!(after_bomb - before < BOMB_GROWTH_MIB, "the Parquet bomb grew the API's peak by {:.0} MiB", after_bomb - before);
    assert!(capped_peak < FOOTER_CAPPED_PEAK_MIB, "an API that refused the bomb by its footer peaked at {capped_peak:.0} MiB");
    pool.close().await;
    svc.stop().await;
}
