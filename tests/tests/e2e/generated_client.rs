//! A client generated from the served OpenAPI document (openapi-python-client) is
//! enough to train a model, page jobs by cursor and download the model: the document
//! describes what the routes really take and answer. The Rust side then checks the
//! downloads' contents and the 404 of an unknown artifact.

use std::io::Read;
use std::time::Duration;

use absa_e2e::service::{jsonl, laptops, Service};
use serde_json::{json, Value};

/// The regular files of a tar archive, without the leading `./`.
fn tar_files(bytes: &[u8]) -> Vec<String> {
    let mut archive = tar::Archive::new(bytes);
    let mut names: Vec<String> = archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.header().entry_type().is_file())
        .map(|e| e.path().unwrap().display().to_string().trim_start_matches("./").to_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread")]
async fn a_generated_client_trains_pages_jobs_and_downloads_the_model() {
    let python =
        std::env::var("ABSA_PYTHON").expect("ABSA_PYTHON: a Python with openapi-python-client (scripts/python-env.sh makes one; scripts/test.sh sets it)");
    let mut svc = Service::start_in_process(&[]).await;
    let admin = svc.bootstrap_key("alpha");
    let (mlops, _) = svc.key(&admin, "mlops");
    let api = &svc.api;
    let a = api.upload(Some(&mlops), "/v1/datasets?name=laptops", jsonl(&laptops("train")[..120]).as_bytes());
    assert_eq!(a.status, 201, "{a:?}");
    let dataset = a.body["dataset_id"].as_str().unwrap().to_owned();

    // A job queued and cancelled before any worker runs: the listing has two jobs.
    let first = api.post(&mlops, "/v1/jobs/train", &json!({ "dataset_id": dataset, "base_model": "all-minilm-l6-v2" }));
    assert_eq!(first.status, 201, "{first:?}");
    let first = first.body["id"].as_str().unwrap().to_owned();
    let cancelled = api.send("POST", Some(&mlops), &format!("/v1/jobs/{first}/cancel"), None, &[]);
    assert_eq!((cancelled.status, cancelled.body["state"].as_str()), (200, Some("cancelled")), "{cancelled:?}");

    svc.run("absa-scheduler", &["run"], "scheduler");
    svc.run("absa-trainer", &["work"], "trainer");
    let api = &svc.api;
    let work = svc.dir.join("generated-client");
    std::fs::create_dir_all(&work).unwrap();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python/generated_client.py");
    let out = std::process::Command::new(&python).arg(&script).args([svc.api.base.as_str(), &mlops, &dataset]).arg(&work).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the generated client failed:\n{stdout}\n{stderr}\n{}", svc.logs());
    let seen: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap_or_else(|e| panic!("{e}: {stdout}"));

    // Newest first, one job a page, the cursor followed to the end.
    let trained = seen["job_id"].as_str().unwrap();
    assert_eq!((seen["pages"].as_i64(), &seen["jobs_seen"]), (Some(2), &json!([trained, first])), "{seen}");
    let job = svc.wait_job(&mlops, trained, Duration::from_secs(5));
    assert_eq!(job["model_version_id"], seen["model_version_id"]);

    // The ONNX bundle: the hash the ETag names, the files scoring needs.
    assert_eq!(seen["sha256"], seen["etag"], "{seen}");
    let files: Vec<&str> = seen["files"].as_array().unwrap().iter().map(|f| f.as_str().unwrap()).collect();
    for needed in ["absa_model.json", "model.onnx", "model.int8.onnx", "tokenizer.json"] {
        assert!(files.contains(&needed), "{needed} missing from the ONNX bundle: {files:?}");
    }

    // The checkpoint in Hugging Face layout, streamed the same way.
    let version = seen["model_version_id"].as_str().unwrap();
    let (status, bytes) = api.get_bytes(&mlops, &format!("/v1/models/{version}/artifacts/checkpoint"));
    assert_eq!(status, 200);
    let files = tar_files(&bytes);
    for needed in ["config.json", "model.safetensors", "tokenizer.json"] {
        assert!(files.contains(&needed.to_owned()), "{needed} missing from the checkpoint: {files:?}");
    }
    let mut config = String::new();
    let mut archive = tar::Archive::new(bytes.as_slice());
    let mut entry = archive.entries().unwrap().map(|e| e.unwrap()).find(|e| e.path().unwrap().ends_with("config.json")).unwrap();
    entry.read_to_string(&mut config).unwrap();
    let config: Value = serde_json::from_str(&config).unwrap();
    assert_eq!(config["model_type"], "bert", "{config}");

    // The CLI's `models download`: the same bytes, checked against the ETag itself.
    let saved = svc.dir.join("model-onnx.tar");
    let out = std::process::Command::new(absa_e2e::binary("absa"))
        .args(["--api-url", &api.base, "models", "download", version, "--artifact", "onnx"])
        .arg(&saved)
        .env("ABSA_API_KEY", &mlops)
        .output()
        .unwrap();
    assert!(out.status.success(), "absa models download: {}", String::from_utf8_lossy(&out.stderr));
    let sha = format!("{:x}", <sha2::Sha256 as sha2::Digest>::digest(std::fs::read(&saved).unwrap()));
    assert_eq!(seen["sha256"].as_str(), Some(sha.as_str()));
    let out = std::process::Command::new(absa_e2e::binary("absa"))
        .args(["--api-url", &api.base, "models", "download", &uuid::Uuid::new_v4().to_string()])
        .arg(svc.dir.join("none.tar"))
        .env("ABSA_API_KEY", &mlops)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "an unknown version: {}", String::from_utf8_lossy(&out.stderr));
    assert!(!svc.dir.join("none.tar").exists() && !svc.dir.join("none.tar.part").exists());

    let missing = api.get(Some(&mlops), &format!("/v1/models/{version}/artifacts/weights"));
    assert_eq!((missing.status, missing.body["status"].as_i64()), (404, Some(404)), "{missing:?}");
    svc.stop().await;
}
