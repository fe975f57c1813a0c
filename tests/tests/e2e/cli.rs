//! The `absa` command-line client end to end: `absa-api serve` as a process on a
//! throwaway Postgres database (the shared `absa_e2e::service::Service`; keys
//! bootstrapped with `absa-api create-key`), driven
//! only through the `absa` binary, asserting exit codes and what it prints (tables,
//! `key: value` lines, `-o json` answers, `-o csv`, errors on standard error), in the
//! CLI's noun-verb form. Covers: `me`; `keys create|list|delete`; `teams create` by a
//! platform admin; `webhooks create|list|deliveries|delete`; `bi-logins create|list|delete`;
//! `registered-models create|update|get|list`; dataset uploads with row errors by line
//! (and the analyst's 403); a CSV corpus upload; `datasets list|get`, `corpora list`;
//! `jobs train` twice with one idempotency key (one job), `jobs list|get|cancel|watch|events`
//! (exit 6 for a cancelled job; 3 for 401/403, 4 for 404, 7 for 409); `schedules
//! create|list|get|delete`; `models promote` of an unknown version (404); an unreachable
//! API; no key at all (refused before anything is sent); a config file named but missing;
//! `login` with profiles; completions.
//! No trainer or scorer runs: the training job is cancelled before anything claims it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use absa_e2e::binary;
use absa_e2e::service::Service;
use serde_json::Value;
use uuid::Uuid;

/// The tests' shared service (`absa-api serve` on a throwaway database and queue prefix)
/// and the `absa` runs against it, each with a config folder of its own.
struct Cli {
    service: Service,
    url: String,
    dir: PathBuf,
}

impl Cli {
    async fn start() -> Self {
        // The bootstrapped team's admins may create teams.
        let service = Service::start_with(&[("ABSA_API__PLATFORM_TEAM", "cli-team")]).await;
        let url = service.api.base.clone();
        let dir = service.dir.join("cli");
        std::fs::create_dir_all(&dir).unwrap();
        Self { service, url, dir }
    }

    fn bootstrap_key(&self, team: &str) -> String {
        self.service.bootstrap_key(team)
    }

    fn logs(&self) -> String {
        self.service.logs()
    }

    fn write(&self, name: &str, content: &str) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, content).unwrap();
        path
    }

    /// `absa ARGS` against this API with `key` from the environment (none when `None`).
    fn absa(&self, key: Option<&str>, args: &[&str]) -> Run {
        run_absa(&self.dir, Some(&self.url), key, args)
    }

    /// `absa ARGS` that must succeed; its standard output.
    fn ok(&self, key: &str, args: &[&str]) -> String {
        let run = self.absa(Some(key), args);
        assert_eq!(run.code, Some(0), "absa {args:?}: {run:?}\n--- api ---\n{}", self.logs());
        run.stdout
    }

    /// `absa -o json ARGS` that must succeed, its output parsed.
    fn json(&self, key: &str, args: &[&str]) -> Value {
        let mut all = vec!["-o", "json"];
        all.extend_from_slice(args);
        let stdout = self.ok(key, &all);
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("absa {all:?} printed no JSON ({e}):\n{stdout}"))
    }
}

/// What one `absa` run left behind.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `absa` with only the given URL and key as settings: a developer's own
/// environment and `~/.config/absa/cli.toml` play no part (an empty config file is
/// named instead; a named file that is missing would be an error).
fn run_absa(dir: &Path, url: Option<&str>, key: Option<&str>, args: &[&str]) -> Run {
    let config = dir.join("cli.toml");
    if !config.exists() {
        std::fs::write(&config, "").unwrap();
    }
    let mut cmd = Command::new(binary("absa"));
    cmd.args(args)
        .env_remove("ABSA_API_URL")
        .env_remove("ABSA_API_KEY")
        .env("ABSA_CLI_CONFIG", &config)
        .env("HOME", dir)
        .env("XDG_CONFIG_HOME", dir.join("xdg"));
    if let Some(u) = url {
        cmd.env("ABSA_API_URL", u);
    }
    if let Some(k) = key {
        cmd.env("ABSA_API_KEY", k);
    }
    let out: Output = cmd.output().expect("running absa");
    Run { code: out.status.code(), stdout: String::from_utf8_lossy(&out.stdout).into_owned(), stderr: String::from_utf8_lossy(&out.stderr).into_owned() }
}

/// The value of a `key:  value` line printed by `absa me`, `absa job`, `schedule show`.
fn field(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|l| l.strip_prefix(&format!("{key}:")).map(|v| v.trim().to_owned()))
}

/// The table row (whitespace-split cells) whose first cell is `id`.
fn row(table: &str, id: &str) -> Option<Vec<String>> {
    table.lines().skip(1).map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>()).find(|cells| cells.first().map(String::as_str) == Some(id))
}

fn str_of(v: &Value, key: &str) -> String {
    v[key].as_str().unwrap_or_else(|| panic!("no string {key:?} in {v}")).to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_drives_the_api() {
    let started = std::time::Instant::now();
    let svc = Cli::start().await;
    let admin = svc.bootstrap_key("cli-team");

    // Who the key belongs to.
    let me = svc.ok(&admin, &["me"]);
    assert_eq!(field(&me, "team").as_deref(), Some("cli-team"), "{me}");
    assert_eq!(field(&me, "role").as_deref(), Some("admin"), "{me}");
    assert_eq!(field(&me, "api").as_deref(), Some(svc.url.as_str()), "{me}");

    // Keys made by the admin; the secret comes back once, in --json.
    let analyst_key = svc.json(&admin, &["keys", "create", "--name", "viewer", "--role", "analyst"]);
    assert_eq!(analyst_key["role"], "analyst", "{analyst_key}");
    let analyst = str_of(&analyst_key, "key");
    let mlops_key = svc.json(&admin, &["keys", "create", "--name", "pipeline", "--role", "mlops"]);
    assert_eq!(mlops_key["role"], "mlops", "{mlops_key}");
    let mlops = str_of(&mlops_key, "key");
    let me = svc.ok(&analyst, &["me"]);
    assert_eq!((field(&me, "team").as_deref(), field(&me, "role").as_deref()), (Some("cli-team"), Some("analyst")), "{me}");
    assert_eq!(svc.json(&mlops, &["me"])["role"], "mlops");
    let text = svc.ok(&admin, &["keys", "create", "--name", "shown-once", "--role", "analyst"]);
    assert!(field(&text, "key").is_some_and(|k| !k.is_empty()) && text.contains("shown only this once"), "{text}");
    let once = field(&text, "id").unwrap();
    assert_eq!(svc.ok(&admin, &["keys", "delete", &once]), format!("key {once} revoked\n"));
    let keys = svc.ok(&admin, &["keys", "list"]);
    let cells = row(&keys, &once).unwrap_or_else(|| panic!("revoked keys stay listed:\n{keys}"));
    assert_eq!((cells[1].as_str(), cells[2].as_str(), cells.len()), ("shown-once", "analyst", 7), "created and revoked times: {keys}");

    // Teams: a platform admin's; the new team's admin key works at once.
    let team = svc.json(&admin, &["teams", "create", "cli-team-2"]);
    let other_admin = str_of(&team, "admin_key");
    assert_eq!((svc.json(&other_admin, &["me"])["team"].as_str()), Some("cli-team-2"), "{team}");
    let denied = svc.absa(Some(&other_admin), &["teams", "create", "cli-team-3"]);
    assert!(denied.code == Some(3) && denied.stderr.contains("platform admin"), "{denied:?}");

    // A webhook (no scheduler runs, so its deliveries stay pending); the secret shown once.
    let hook = svc.ok(&mlops, &["webhooks", "create", "http://127.0.0.1:9/hook"]);
    let hook_id = field(&hook, "id").unwrap_or_else(|| panic!("{hook}"));
    assert!(field(&hook, "secret").is_some_and(|s| s.len() >= 32) && hook.contains("shown only this once"), "{hook}");
    let hooks = svc.json(&analyst, &["webhooks", "list"]);
    assert_eq!((hooks["webhooks"][0]["url"].as_str(), hooks["webhooks"][0]["secret"].as_str()), (Some("http://127.0.0.1:9/hook"), None), "{hooks}");

    // A BI login (a cluster-wide Postgres role: dropped again before anything is asserted).
    let bi_role = format!("bi_cli_{}", &Uuid::new_v4().simple().to_string()[..12]);
    let created = {
        let mut child = Command::new(binary("absa"))
            .args(["-o", "json", "bi-logins", "create", &bi_role, "--valid-days", "7"])
            .env("ABSA_API_URL", &svc.url)
            .env("ABSA_API_KEY", &admin)
            .env("ABSA_CLI_CONFIG", svc.write("empty.toml", ""))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"a-long-bi-password\n").unwrap();
        child.wait_with_output().unwrap()
    };
    let listed = svc.ok(&admin, &["bi-logins", "list"]);
    let dropped = svc.absa(Some(&admin), &["bi-logins", "delete", &bi_role]);
    assert!(created.status.success(), "{created:?}");
    let created: Value = serde_json::from_slice(&created.stdout).unwrap();
    assert_eq!(created["role_name"], bi_role.as_str(), "{created}");
    assert!(created["views"].as_array().is_some_and(|v| !v.is_empty()), "{created}");
    assert!(row(&listed, &bi_role).is_some(), "{listed}");
    assert_eq!((dropped.code, dropped.stdout.as_str()), (Some(0), format!("BI login {bi_role} dropped\n").as_str()), "{dropped:?}");
    assert!(row(&svc.ok(&admin, &["bi-logins", "list"]), &bi_role).is_none(), "still listed after delete");

    // A registered model: created with its task and labels, then described and tagged.
    let created = svc.ok(&mlops, &["registered-models", "create", "laptops", "--task", "sentiment", "--labels", "negative,neutral,positive"]);
    assert_eq!((field(&created, "task").as_deref(), field(&created, "labels").as_deref()), (Some("sentiment"), Some("negative,neutral,positive")), "{created}");
    let again = svc
        .absa(Some(&mlops), &["registered-models", "create", "laptops", "--task", "sentiment", "--labels", "negative,neutral,positive", "--description", "x"]);
    assert!(again.code == Some(7) && again.stderr.contains("already exists"), "a second create of one name: {again:?}");
    assert_eq!(svc.json(&analyst, &["registered-models", "get", "laptops"])["description"], "", "the refused create changed nothing");
    svc.ok(&mlops, &["registered-models", "update", "laptops", "--description", "SemEval-14 laptops", "--tag", "owner=cli", "--tag", "tier=gold"]);
    let model = svc.json(&analyst, &["registered-models", "get", "laptops"]);
    assert_eq!((model["description"].as_str(), &model["tags"]), (Some("SemEval-14 laptops"), &serde_json::json!({"owner": "cli", "tier": "gold"})), "{model}");
    let unknown = svc.absa(Some(&mlops), &["registered-models", "update", "no-such-model", "--description", "x"]);
    assert!(unknown.code == Some(1) && unknown.stderr.contains("HTTP 422"), "update never creates: {unknown:?}");
    assert!(svc.absa(Some(&analyst), &["registered-models", "get", "no-such-model"]).code == Some(4));
    let missing = svc.absa(Some(&mlops), &["registered-models", "update", "laptops"]);
    assert!(missing.code == Some(1) && missing.stderr.contains("nothing to update"), "{missing:?}");
    let table = svc.ok(&analyst, &["registered-models", "list"]);
    assert_eq!(row(&table, "laptops").map(|c| c[1..4].join(" ")).as_deref(), Some("sentiment negative,neutral,positive 0"), "{table}");
    // No trainer ran here: no base model advertised yet.
    assert_eq!(svc.ok(&analyst, &["base-models", "list"]), "NAME  TYPE  PARAMETERS  ADVERTISED\n");

    // A dataset: the first 60 laptop rows and two bad lines, reported by line number.
    let shared = absa_domain::reference::shared_dir().expect("the shared reference folder (set ABSA_SHARED)");
    let train = shared.join("data/semeval14_laptops/train.jsonl");
    let train = std::fs::read_to_string(&train).unwrap_or_else(|e| panic!("{}: {e}", train.display()));
    let mut rows: String = train.lines().take(60).map(|l| format!("{l}\n")).collect();
    assert_eq!(rows.lines().count(), 60);
    rows += "not json\n"; // line 61
    rows += "{\"text\": \"abc\", \"aspect\": \"ab\", \"start\": 0, \"end\": 2}\n"; // line 62: no label
    let file = svc.write("laptops.jsonl", &rows);
    let file = file.to_str().unwrap();

    let denied = svc.absa(Some(&analyst), &["datasets", "upload", file, "--name", "laptops"]);
    assert_eq!(denied.code, Some(3), "a role too weak: {denied:?}");
    // Checked before sending (GET /v1/me), so a large file gets the reason, not a broken pipe.
    assert!(denied.stderr.contains("error: uploading datasets needs the mlops role; this key has analyst"), "{denied:?}");
    assert!(denied.stdout.is_empty(), "{denied:?}");

    let out = svc.ok(&mlops, &["datasets", "upload", file, "--name", "laptops"]);
    let mut lines = out.lines();
    let first = lines.next().unwrap_or_default();
    assert!(first.starts_with("dataset laptops (") && first.ends_with("): 60 rows added, 60 in total"), "{out}");
    let dataset = first["dataset laptops (".len()..first.len() - "): 60 rows added, 60 in total".len()].to_owned();
    assert!(Uuid::parse_str(&dataset).is_ok(), "{out}");
    assert_eq!(lines.next(), Some("2 row errors:"), "{out}");
    assert!(lines.next().is_some_and(|l| l.starts_with("  line 61: ")), "{out}");
    assert!(lines.next().is_some_and(|l| l.starts_with("  line 62: ")), "{out}");
    assert_eq!(lines.next(), None, "{out}");
    // The stored row errors, the dataset named by its name.
    let errors = svc.ok(&analyst, &["datasets", "errors", "laptops"]);
    let lines: Vec<&str> = errors.lines().map(|l| l.split_whitespace().next().unwrap_or_default()).collect();
    assert_eq!(lines, ["LINE", "61", "62"], "{errors}");

    // A corpus from CSV, by the analyst: a repeated id and an empty text are rejected.
    let csv = "id,text,aspect,start,end,source\nr1,Great battery life,battery life,6,18,web\nr2,\"Screen, too dim\",Screen,0,6,app\nr1,duplicate id,,,,web\nr3,,,,,web\nr4,no target here,,,,web\n";
    let csv = svc.write("reviews.csv", csv);
    let out = svc.ok(&analyst, &["corpora", "upload", csv.to_str().unwrap(), "--name", "reviews"]);
    let first = out.lines().next().unwrap_or_default();
    assert!(first.starts_with("corpus reviews (") && first.ends_with("): 3 documents added, 3 in total"), "{out}");
    let corpus = first["corpus reviews (".len()..first.len() - "): 3 documents added, 3 in total".len()].to_owned();
    assert!(out.contains("\n2 row errors:\n  line 4: ") && out.contains("\n  line 5: "), "{out}");

    // Listings.
    let table = svc.ok(&analyst, &["datasets", "list"]);
    assert!(table.starts_with("ID ") && table.lines().count() == 2, "{table}");
    let cells = row(&table, &dataset).unwrap_or_else(|| panic!("dataset {dataset} not listed:\n{table}"));
    assert_eq!(cells[1], "laptops", "{table}");
    assert_eq!(&cells[2..4], ["60", "negative,neutral,positive"], "{table}");
    // The same listing as CSV: the labels cell quoted, for it holds commas.
    let csv_out = svc.ok(&analyst, &["datasets", "list", "-o", "csv"]);
    let mut lines = csv_out.lines();
    assert_eq!(lines.next(), Some("ID,NAME,ROWS,LABELS,CREATED"), "{csv_out}");
    assert!(lines.next().is_some_and(|l| l.starts_with(&format!("{dataset},laptops,60,\"negative,neutral,positive\","))), "{csv_out}");
    let details = svc.ok(&analyst, &["datasets", "get", "laptops"]);
    assert_eq!((field(&details, "id"), field(&details, "rows")), (Some(dataset.clone()), Some("train 60".into())), "{details}");
    let listed = svc.json(&analyst, &["datasets", "list"]);
    assert_eq!((listed["datasets"][0]["id"].as_str(), listed["datasets"][0]["name"].as_str()), (Some(dataset.as_str()), Some("laptops")), "{listed}");
    let table = svc.ok(&analyst, &["corpora", "list"]);
    let cells = row(&table, &corpus).unwrap_or_else(|| panic!("corpus {corpus} not listed:\n{table}"));
    assert_eq!(&cells[1..3], ["reviews", "3"], "{table}");

    // Training: the same idempotency key twice is one job.
    let submit = ["jobs", "train", "--dataset", &dataset, "--base-model", "all-minilm-l6-v2", "--epochs", "1", "--idempotency-key", "k1"];
    let denied = svc.absa(Some(&analyst), &submit);
    assert!(denied.code == Some(3) && denied.stderr.contains("HTTP 403 Forbidden: this needs the mlops role"), "{denied:?}");
    let first = svc.json(&mlops, &submit);
    let again = svc.json(&mlops, &submit);
    let job = str_of(&first, "id");
    assert_eq!(again["id"], first["id"], "{first}\n{again}");
    assert_eq!((first["kind"].as_str(), first["parameters"]["hyperparameters"]["epochs"].as_i64()), (Some("train"), Some(1)), "{first}");
    let text = svc.ok(&mlops, &submit);
    assert!(text.starts_with(&format!("train job {job} already submitted with this idempotency key (")), "{text}");
    // The dataset by name: the same request, so the same job.
    let by_name = svc.json(&mlops, &["jobs", "train", "--dataset", "laptops", "--base-model", "all-minilm-l6-v2", "--epochs", "1", "--idempotency-key", "k1"]);
    assert_eq!(by_name["id"], first["id"], "{by_name}");
    let events = svc.ok(&analyst, &["jobs", "events", &job]);
    assert!(events.starts_with("AT ") && events.contains(" submitted "), "{events}");
    let unknown = svc.absa(Some(&mlops), &["jobs", "train", "--dataset", "no-such-set", "--base-model", "all-minilm-l6-v2"]);
    assert!(unknown.code == Some(4) && unknown.stderr.contains("no dataset named \"no-such-set\""), "{unknown:?}");

    let table = svc.ok(&analyst, &["jobs", "list"]);
    assert!(table.starts_with("ID ") && table.lines().count() == 2, "one job only:\n{table}");
    let cells = row(&table, &job).unwrap_or_else(|| panic!("job {job} not listed:\n{table}"));
    assert_eq!(cells[1], "train", "{table}");
    assert!(["queued", "dispatched"].contains(&cells[2].as_str()), "nothing runs it: {table}");
    let details = svc.ok(&analyst, &["jobs", "get", &job]);
    assert_eq!(field(&details, "id").as_deref(), Some(job.as_str()), "{details}");
    assert_eq!(field(&details, "kind").as_deref(), Some("train"), "{details}");
    assert!(details.contains("\nevents (last ") && details.contains("submitted"), "{details}");

    let out = svc.ok(&mlops, &["jobs", "cancel", &job]);
    assert_eq!(out, format!("job {job} cancelled\n"));
    let again = svc.absa(Some(&mlops), &["jobs", "cancel", &job]);
    assert!(again.code == Some(7) && again.stderr.starts_with("error: HTTP 409 Conflict: "), "{again:?}");
    assert_eq!(field(&svc.ok(&analyst, &["jobs", "get", &job]), "state").as_deref(), Some("cancelled"));
    let table = svc.ok(&analyst, &["jobs", "list", "--state", "cancelled"]);
    assert_eq!(row(&table, &job).map(|c| c[2].clone()).as_deref(), Some("cancelled"), "{table}");
    let watched = svc.absa(Some(&analyst), &["jobs", "watch", &job]);
    assert_eq!(watched.code, Some(6), "a cancelled job: {watched:?}");
    assert!(watched.stderr.lines().last() == Some(&format!("job {job} cancelled")), "{watched:?}");
    assert!(watched.stdout.is_empty(), "{watched:?}");
    let watched = svc.absa(Some(&analyst), &["-o", "json", "jobs", "watch", &job]);
    assert_eq!(watched.code, Some(6), "{watched:?}");
    let final_job: Value = serde_json::from_str(&watched.stdout).unwrap_or_else(|e| panic!("{e}: {watched:?}"));
    assert_eq!(final_job["state"], "cancelled");

    // The webhook was told of the job's states; nothing delivers here, so they wait.
    let deliveries = svc.ok(&analyst, &["webhooks", "deliveries", &hook_id]);
    let states: Vec<(String, String)> =
        deliveries.lines().skip(1).map(|l| l.split_whitespace().collect::<Vec<_>>()).map(|c| (c[2].to_owned(), c[3].to_owned())).collect();
    assert!(states.contains(&("cancelled".into(), "pending".into())), "{deliveries}");
    assert_eq!(svc.ok(&mlops, &["webhooks", "delete", &hook_id]), format!("webhook {hook_id} deleted\n"));
    assert_eq!(svc.json(&analyst, &["webhooks", "list"])["webhooks"], serde_json::json!([]));

    // Tags on a job, and the listing's tag filter.
    let tagged =
        svc.json(&mlops, &["jobs", "train", "--dataset", "laptops", "--base-model", "all-minilm-l6-v2", "--tag", "owner=cli", "--tag", "ticket=ABSA-1"]);
    assert_eq!(tagged["tags"], serde_json::json!({"owner": "cli", "ticket": "ABSA-1"}), "{tagged}");
    let tagged = str_of(&tagged, "id");
    let listed = svc.ok(&analyst, &["jobs", "list", "--tag", "owner=cli"]);
    assert!(listed.lines().count() == 2 && row(&listed, &tagged).is_some(), "only the tagged job: {listed}");
    let details = svc.ok(&analyst, &["jobs", "get", &tagged]);
    assert_eq!(field(&details, "tags").as_deref(), Some(r#"{"owner":"cli","ticket":"ABSA-1"}"#), "{details}");
    svc.ok(&mlops, &["jobs", "cancel", &tagged]);

    // A retrain schedule on a cron (no scheduler runs, so it never fires here).
    let add =
        ["schedules", "create", "--name", "nightly", "--dataset", &dataset, "--base-model", "all-minilm-l6-v2", "--cron", "0 3 * * *", "--hp", "epochs=1"];
    let denied = svc.absa(Some(&analyst), &add);
    assert!(denied.code == Some(3) && denied.stderr.contains("HTTP 403 Forbidden"), "{denied:?}");
    let bad =
        svc.absa(Some(&mlops), &["schedules", "create", "--name", "bad", "--dataset", &dataset, "--base-model", "all-minilm-l6-v2", "--cron", "61 * * * *"]);
    assert!(bad.code == Some(1) && bad.stderr.starts_with("error: HTTP 422 Unprocessable Entity: "), "{bad:?}");
    let out = svc.ok(&mlops, &add);
    let schedule = field(&out, "id").unwrap_or_else(|| panic!("no id:\n{out}"));
    assert_eq!((field(&out, "name").as_deref(), field(&out, "cron").as_deref()), (Some("nightly"), Some("0 3 * * *")), "{out}");
    assert!(field(&out, "next run").is_some_and(|t| t != "-"), "{out}");
    let table = svc.ok(&analyst, &["schedules", "list"]);
    let cells = row(&table, &schedule).unwrap_or_else(|| panic!("schedule {schedule} not listed:\n{table}"));
    assert_eq!(cells[1..7].join(" "), "nightly 0 3 * * *", "{table}");
    let shown = svc.json(&analyst, &["schedules", "get", &schedule]);
    assert_eq!((shown["dataset_id"].as_str(), shown["cron"].as_str()), (Some(dataset.as_str()), Some("0 3 * * *")), "{shown}");
    assert_eq!(shown["job_parameters"]["hyperparameters"]["epochs"], 1, "--hp epochs=1 reached the server: {shown}");
    let out = svc.ok(&mlops, &["schedules", "delete", &schedule]);
    assert_eq!(out, format!("schedule {schedule} deleted\n"));
    assert!(row(&svc.ok(&analyst, &["schedules", "list"]), &schedule).is_none(), "still listed after rm");
    let gone = svc.absa(Some(&mlops), &["schedules", "delete", &schedule]);
    assert!(gone.code == Some(4) && gone.stderr.contains(&format!("HTTP 404 Not Found: schedule {schedule} not found")), "{gone:?}");

    // Promoting a version that does not exist: the server's 404.
    let unknown = Uuid::new_v4().to_string();
    let out = svc.absa(Some(&mlops), &["models", "promote", &unknown]);
    assert_eq!(out.code, Some(4), "{out:?}");
    assert_eq!(out.stderr.trim_end(), format!("error: HTTP 404 Not Found: model version {unknown} not found"), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");

    // A made-up key: 401 with the server's message.
    let out = svc.absa(Some("absa_not-a-key"), &["me"]);
    assert!(out.code == Some(3) && out.stderr.starts_with("error: HTTP 401 Unauthorized: "), "{out:?}");

    // Nothing listening: the flag beats ABSA_API_URL, and the message names the URL.
    let out = svc.absa(Some(&admin), &["--api-url", "http://127.0.0.1:1", "me"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.starts_with("error: could not reach the API at http://127.0.0.1:1: "), "{out:?}");

    // No key anywhere: refused before anything is sent (nothing connects to the listener).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let out = run_absa(&svc.dir, Some(&url), None, &["me"]);
    assert_eq!(out.code, Some(3), "{out:?}");
    assert!(out.stderr.starts_with("error: no API key: pass --api-key, set ABSA_API_KEY"), "{out:?}");
    assert!(matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock), "absa connected without a key");
    let out = run_absa(&svc.dir, Some(&url), Some(""), &["jobs", "list"]);
    assert!(out.code == Some(3) && out.stderr.starts_with("error: no API key"), "an empty key counts as none: {out:?}");

    // A config file that is named but missing is an error, not silently skipped.
    let out = svc.absa(Some(&admin), &["--config", svc.dir.join("missing.toml").to_str().unwrap(), "me"]);
    assert!(out.code == Some(1) && out.stderr.contains("reading config file"), "{out:?}");

    // login: the key from standard input, checked, saved as a profile only its owner reads.
    let config = svc.dir.join("login").join("cli.toml");
    let login = |key: &str, profile: &str| {
        let mut child = Command::new(binary("absa"))
            .args(["--config", config.to_str().unwrap(), "--profile", profile, "--api-url", &svc.url, "login"])
            .env_remove("ABSA_API_KEY")
            .env_remove("ABSA_API_URL")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), format!("{key}\n").as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, _, stderr) = login("absa_not-a-key", "ci");
    assert!(code == Some(3) && stderr.contains("HTTP 401"), "{code:?} {stderr}");
    assert!(!config.exists(), "a refused key is not saved");
    let (code, stdout, stderr) = login(&analyst, "ci");
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.starts_with(&format!("logged in to {} as analyst of team ", svc.url)), "{stdout}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&config).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::metadata(config.parent().unwrap()).unwrap().permissions().mode() & 0o777, 0o700);
    let with_profile = |profile: &str| {
        Command::new(binary("absa"))
            .args(["--config", config.to_str().unwrap(), "--profile", profile, "me"])
            .env_remove("ABSA_API_KEY")
            .env_remove("ABSA_API_URL")
            .output()
            .unwrap()
    };
    let me = with_profile("ci");
    assert!(me.status.success() && field(&String::from_utf8_lossy(&me.stdout), "role").as_deref() == Some("analyst"), "{me:?}");
    let other = with_profile("prod");
    assert!(other.status.code() == Some(1) && String::from_utf8_lossy(&other.stderr).contains("no profile \"prod\""), "{other:?}");

    // Completion scripts for the shells, naming the commands.
    for shell in ["bash", "zsh", "fish"] {
        let script = svc.ok(&admin, &["completions", shell]);
        assert!(script.contains("absa") && script.contains("download") && script.contains("watch"), "{shell}: {script}");
    }

    eprintln!("the CLI test took {:.1}s", started.elapsed().as_secs_f64());
    svc.service.stop().await;
}
