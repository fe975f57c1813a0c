//! The README's quickstarts and api/API.md's guide, run exactly as written: each
//! reader's `bash` block with `curl` and `jq` against a running service, in the order a
//! team would (MLOps trains and promotes, the analyst scores with `production`, BI reads
//! the views; then the guide's calls: a tagged model downloaded, a refused request, jobs
//! paged, a key made and revoked). What each block prints is checked here.

use std::path::Path;
use std::process::Command;

use absa_e2e::service::Service;

/// The first `bash` block after the heading that starts with `heading`.
fn block(readme: &str, heading: &str) -> String {
    let section = readme.split("\n### ").find(|s| s.starts_with(heading)).unwrap_or_else(|| panic!("no \"### {heading}\" section"));
    let start = section.find("```bash\n").unwrap_or_else(|| panic!("no bash block under {heading}")) + "```bash\n".len();
    let end = section[start..].find("```").unwrap() + start;
    section[start..end].to_owned()
}

/// Runs `script` with bash (`-e -o pipefail`) in `dir` with `env`; its output, or a panic with both streams.
fn run(script: &str, dir: &Path, env: &[(&str, String)]) -> String {
    let out = Command::new("bash").args(["-e", "-o", "pipefail", "-c", script]).current_dir(dir).envs(env.iter().map(|(k, v)| (*k, v))).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the quickstart failed ({}):\n{script}\n--- stdout\n{stdout}\n--- stderr\n{stderr}", out.status);
    stdout
}

#[tokio::test(flavor = "multi_thread")]
async fn each_readers_quickstart_and_api_guide_run_as_the_docs_write_them() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")).unwrap();
    let mut svc = Service::start().await;
    svc.run("absa-scheduler", &["run"], "scheduler");
    svc.run("absa-trainer", &["work"], "trainer");
    svc.run("absa-scorer", &["work"], "scorer");
    let admin = svc.bootstrap_key("quickstart");
    let (mlops, _) = svc.key(&admin, "mlops");
    let (analyst, _) = svc.key(&admin, "analyst");
    let shared = absa_domain::reference::shared_dir().expect("the shared reference folder (set ABSA_SHARED)");
    let work = svc.dir.join("quickstarts");
    std::fs::create_dir_all(&work).unwrap();
    let env = |key: &str| vec![("ABSA_URL", svc.api.base.clone()), ("ABSA_KEY", key.to_owned()), ("ABSA_SHARED", shared.display().to_string())];

    // MLOps: one epoch on laptops train, promoted (nothing to beat yet).
    let printed = run(&block(&readme, "MLOps"), &work, &env(&mlops));
    let lines: Vec<serde_json::Value> = printed.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
    assert_eq!(lines.len(), 3, "one epoch, then the aliases candidate and production:\n{printed}");
    assert_eq!(lines[0]["epoch"], 1, "{printed}");
    let accuracy = lines[0]["accuracy"].as_f64().unwrap();
    // Positive, the commonest class, is 0.427 of laptops train: one epoch learns more than it.
    assert!(accuracy > 0.5, "{printed}");
    assert_eq!((lines[1]["name"].as_str(), lines[2]["name"].as_str()), (Some("candidate"), Some("production")), "{printed}");
    assert_eq!((lines[1]["model"].as_str(), lines[2]["model"].as_str()), (Some("laptops"), Some("laptops")), "{printed}");
    assert_eq!(lines[1]["model_version_id"], lines[2]["model_version_id"]);

    // Analyst: the test texts scored with production; the CSV's header and two rows.
    let printed = run(&block(&readme, "Analyst"), &work, &env(&analyst));
    let rows: Vec<&str> = printed.lines().collect();
    assert_eq!(rows.len(), 3, "{printed}");
    assert!(rows[0].starts_with("external_id,seq,target_index,aspect,span_start,span_end,label,confidence,model_version_id,prob_"), "{printed}");
    let predictions = std::fs::read_to_string(work.join("predictions.csv")).unwrap();
    assert_eq!(predictions.lines().count(), 1 + 638, "a prediction per laptops test aspect");

    // BI: a login of the team, then psql as it; the five commonest (aspect, label) pairs.
    let login = format!("bi_quickstart_{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let mut bi_env = env(&admin);
    bi_env.extend([("BI_LOGIN", login.clone()), ("PGHOST", "127.0.0.1".into()), ("PGPORT", "5432".into()), ("PGDATABASE", svc.db_name.clone())]);
    let printed = run(&block(&readme, "BI"), &work, &bi_env);
    // Dropped before the checks: a login is a role of the whole Postgres cluster.
    assert_eq!(svc.api.send("DELETE", Some(&admin), &format!("/v1/bi-logins/{login}"), None, &[]).status, 204);
    let mut lines = printed.lines().filter(|l| !l.trim().is_empty());
    let created: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(created["role_name"], login.as_str(), "{printed}");
    let table: Vec<&str> = lines.collect();
    assert!(table[0].split('|').map(str::trim).eq(["aspect", "label", "mentions"]), "{printed}");
    assert_eq!((table.len(), table.last().map(|l| l.trim())), (8, Some("(5 rows)")), "header, rule, five rows, count: {printed}");

    // api/API.md's calls, on what the quickstarts left.
    let guide = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../api/API.md")).unwrap();
    let printed = run(&block(&guide, "MLOps"), &work, &env(&mlops));
    let lines: Vec<&str> = printed.lines().collect();
    let described: serde_json::Value = serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("{e}: {printed}"));
    assert_eq!(
        described,
        serde_json::json!({"name": "laptops", "task": "sentiment", "label_names": ["negative", "neutral", "positive"], "tags": {"owner": "mlops"}}),
        "{printed}"
    );
    assert_eq!(lines[1], "2", "model.onnx and model.int8.onnx in a bundle matching its ETag: {printed}");
    let problem: serde_json::Value = serde_json::from_str(lines[2]).unwrap_or_else(|e| panic!("{e}: {printed}"));
    assert_eq!((problem["status"].as_i64(), problem["field"].as_str()), (Some(422), Some("hyperparameters.learning_rate")), "{printed}");
    assert_eq!(lines.len(), 3, "{printed}");

    let printed = run(&block(&guide, "Analyst"), &work, &env(&analyst));
    assert_eq!(
        printed.lines().collect::<Vec<_>>(),
        ["score succeeded", "train succeeded", "submitted", "completed"],
        "two pages, then the first and last events"
    );

    let printed = run(&block(&guide, "Admin"), &work, &env(&admin));
    assert_eq!(printed.lines().collect::<Vec<_>>(), [r#"{"name":"dana","role":"analyst","shown_once":true}"#, "dana analyst null", "204"], "{printed}");
    svc.stop().await;
}
