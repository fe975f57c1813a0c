//! Sweep jobs through the service: a small sweep (two learning rates, one epoch, a
//! slice of laptops) picks the child with the best validation figure and records the
//! sweep in that version's lineage, and the dashboard draws the children's curves
//! together; cancelling a sweep cancels its children.

use std::time::{Duration, Instant};

use absa_e2e::service::{jsonl, laptops, Service};
use serde_json::json;

#[ignore = "slow: trains models for minutes (scripts/test.sh runs it after the fast tier)"]
#[tokio::test(flavor = "multi_thread")]
async fn a_sweep_picks_the_best_child_on_validation_and_cancels_with_its_children() {
    let mut svc = Service::start().await;
    svc.run("absa-scheduler", &["run"], "scheduler");
    svc.run("absa-trainer", &["work"], "trainer");
    let admin = svc.bootstrap_key("alpha");
    let (mlops, _) = svc.key(&admin, "mlops");
    let (analyst, _) = svc.key(&admin, "analyst");
    let api = &svc.api;
    let a = api.upload(Some(&mlops), "/v1/datasets?name=slice", jsonl(&laptops("train")[..400]).as_bytes());
    assert_eq!(a.status, 201, "{a:?}");
    let dataset = a.body["dataset_id"].as_str().unwrap().to_owned();
    let a = api.upload(Some(&mlops), "/v1/datasets?name=slice&split=test", jsonl(&laptops("test")[..100]).as_bytes());
    assert_eq!(a.status, 201, "{a:?}");

    let spec = json!({ "dataset_id": dataset, "base_model": "all-minilm-l6-v2",
                       "hyperparameters": { "epochs": 1, "warmup_steps": 0, "seed": 7 },
                       "grid": { "learning_rate": [1e-9, 1e-4] }, "max_concurrency": 1, "promote": {} });
    assert_eq!(api.post(&analyst, "/v1/jobs/sweep", &spec).status, 403);
    let bad = api.post(&mlops, "/v1/jobs/sweep", &json!({ "dataset_id": dataset, "base_model": "all-minilm-l6-v2", "grid": { "dropout": [0.1] } }));
    assert_eq!(bad.status, 422, "{bad:?}");
    let a = api.post(&mlops, "/v1/jobs/sweep", &spec);
    assert_eq!((a.status, a.body["trials"].as_i64()), (201, Some(2)), "{a:?}");
    let sweep = a.body["id"].as_str().unwrap().to_owned();
    let done = svc.wait_job(&mlops, &sweep, Duration::from_secs(600));
    assert_eq!(done["state"], "succeeded", "{done}\n{}", svc.logs());
    let children = done["children"].as_array().unwrap();
    assert_eq!(children.len(), 2, "{done}");
    for child in children {
        assert_eq!(child["state"], "succeeded", "{child}");
        assert!(child["test_accuracy"].is_number(), "test figures are stored: {child}");
    }
    let best = children.iter().max_by(|a, b| a["validation_macro_f1"].as_f64().unwrap().total_cmp(&b["validation_macro_f1"].as_f64().unwrap())).unwrap();
    eprintln!("children: {}", serde_json::to_string_pretty(children).unwrap());
    assert_eq!(done["chosen_model_version_id"], best["model_version_id"], "{done}");
    assert_eq!(best["values"]["learning_rate"], 1e-4, "the real learning rate beats 1e-9 on validation: {done}");
    let chosen = best["model_version_id"].as_str().unwrap();
    let version = api.get(Some(&analyst), &format!("/v1/models/{chosen}")).body;
    assert_eq!(version["lineage"]["sweep"]["sweep_id"], sweep.as_str(), "{version}");
    assert_eq!(version["lineage"]["sweep"]["chosen_on"], "validation");
    // Choosing by setting (the default): each learning rate is a setting of one child
    // here, and a child holds out validation rows drawn with its own seed.
    assert_eq!(version["lineage"]["sweep"]["choose_by"], "setting", "{version}");
    let settings = done["settings"].as_array().expect("the settings' means");
    assert_eq!(settings.len(), 2, "{done}");
    for setting in settings {
        let child = children.iter().find(|c| c["values"] == setting["values"]).expect("a child per setting");
        assert_eq!(setting["children"], 1, "{setting}");
        assert!((setting["mean"].as_f64().unwrap() - child["validation_macro_f1"].as_f64().unwrap()).abs() < 1e-9, "{setting} {child}");
    }
    let child_job = api.get(Some(&mlops), &format!("/v1/jobs/{}", best["job_id"].as_str().unwrap())).body;
    assert_eq!(child_job["parameters"]["hyperparameters"]["split_seed"], 7, "{child_job}");
    assert_eq!(version["aliases"], json!(["candidate", "production"]), "{version}");
    assert!(done["events"].as_array().unwrap().iter().any(|e| e["kind"] == "sweep_chosen"));
    // The dashboard draws the children's validation curves together and marks the chosen one.
    let page = absa_e2e::browser::dom(&api.base, &svc.dir, &format!("key={mlops}&job={sweep}"));
    for chart in ["sweep-macro-f1", "sweep-accuracy", "sweep-validation-loss"] {
        assert!(page.contains(&format!("<svg id=\"{chart}\"")), "no {chart} in\n{page}");
    }
    for child in children {
        let series = format!("<path class=\"series\" data-series=\"trial-{}\" data-points=\"1\"", child["trial"]);
        assert_eq!(page.matches(&series).count(), 3, "{series} in each chart:\n{page}");
    }
    assert_eq!(page.matches("class=\"chosen\"").count(), 1, "{page}");
    assert!(page.contains(&format!("<tr data-trial=\"{}\" class=\"chosen\">", best["trial"])), "{page}");
    // The CLI shows the children with their curves' last points.
    std::fs::write(svc.dir.join("cli.toml"), "").unwrap();
    let out = std::process::Command::new(absa_e2e::binary("absa"))
        .args(["jobs", "get", &sweep])
        .env("ABSA_API_URL", &api.base)
        .env("ABSA_API_KEY", &analyst)
        .env("ABSA_CLI_CONFIG", svc.dir.join("cli.toml"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("children (validation figures") && text.contains("chosen version"),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Cancelling a sweep cancels the child in training and creates no more.
    let spec = json!({ "dataset_id": dataset, "base_model": "all-minilm-l6-v2", "hyperparameters": { "epochs": 3 },
                       "grid": { "seed": [1, 2, 3] }, "max_concurrency": 1 });
    let a = api.post(&mlops, "/v1/jobs/sweep", &spec);
    assert_eq!(a.status, 201, "{a:?}");
    let sweep = a.body["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let j = api.get(Some(&mlops), &format!("/v1/jobs/{sweep}")).body;
        if j["children"].as_array().is_some_and(|c| c.iter().any(|c| c["state"] == "running")) {
            break;
        }
        assert!(Instant::now() < deadline, "no child started: {j}\n{}", svc.logs());
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(api.send("POST", Some(&analyst), &format!("/v1/jobs/{sweep}/cancel"), None, &[]).status, 403);
    let a = api.send("POST", Some(&mlops), &format!("/v1/jobs/{sweep}/cancel"), None, &[]);
    assert_eq!((a.status, a.body["state"].as_str()), (200, Some("cancelled")), "{a:?}");
    std::thread::sleep(Duration::from_secs(3)); // a few scheduler passes
    let j = api.get(Some(&mlops), &format!("/v1/jobs/{sweep}")).body;
    let children = j["children"].as_array().unwrap();
    assert_eq!(children.len(), 1, "no child created after the cancellation: {j}");
    assert_eq!(children[0]["state"], "cancelled", "{j}");
    svc.stop().await;
}
