//! Scoring at scale through the whole service: a corpus of N documents (default
//! 1,000,000: laptops test texts with their given targets, repeated) uploaded through
//! the API and scored by one scorer worker, then by two, each worker with its own ONNX
//! Runtime threads. Prints instances/s (submission to success, fan-out and dispatch
//! included), each worker's peak RSS and the speed-up of two workers over one, and
//! checks one prediction per document. Own database and queue names, removed at the end.
//!
//!   absa-scale-bench [--documents N] [--single N] [--threads T] [--precision fp32|int8] [--shard-size S]
//!
//! `--single` is the corpus size of the one-worker run (default N/5: the rate is the
//! figure, and a fifth of the corpus gives it in a fifth of the time).

use std::time::{Duration, Instant};

use absa_e2e::service::{corpus_documents, jsonl, Service};
use serde_json::json;

struct Options {
    documents: usize,
    single: usize,
    threads: usize,
    precision: String,
    shard_size: usize,
}

fn options() -> Options {
    let mut o = Options { documents: 1_000_000, single: 0, threads: 1, precision: "int8".into(), shard_size: 5_000 };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let value = args.get(i + 1).unwrap_or_else(|| panic!("{} needs a value", args[i]));
        match args[i].as_str() {
            "--documents" => o.documents = value.parse().expect("--documents N"),
            "--single" => o.single = value.parse().expect("--single N"),
            "--threads" => o.threads = value.parse().expect("--threads T"),
            "--precision" => o.precision = value.clone(),
            "--shard-size" => o.shard_size = value.parse().expect("--shard-size S"),
            other => panic!("unknown option {other}"),
        }
        i += 2;
    }
    if o.single == 0 {
        o.single = (o.documents / 5).max(1);
    }
    o
}

struct Run {
    workers: usize,
    documents: usize,
    seconds: f64,
    peak_rss_mib: Vec<f64>,
}

impl Run {
    fn rate(&self) -> f64 {
        self.documents as f64 / self.seconds
    }
}

async fn score(svc: &mut Service, key: &str, version: &str, corpus: &str, documents: usize, workers: usize, shard_size: usize) -> Run {
    let tags: Vec<String> = (1..=workers).map(|w| format!("scorer-{workers}-{w}")).collect();
    for tag in &tags {
        svc.run("absa-scorer", &["work"], tag);
    }
    std::thread::sleep(Duration::from_secs(2)); // the workers connect before the clock starts
    let started = Instant::now();
    let a = svc.api.post(key, "/v1/jobs/score", &json!({ "corpus_id": corpus, "model_version_id": version, "shard_size": shard_size }));
    assert_eq!(a.status, 201, "{a:?}");
    let job = a.body["id"].as_str().unwrap().to_owned();
    let done = svc.wait_job(key, &job, Duration::from_secs(6 * 3600));
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(done["state"], "succeeded", "{done}\n{}", svc.logs());
    let pool = sqlx::PgPool::connect(&svc.db_url).await.unwrap();
    let (count, distinct): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT seq) FROM predictions WHERE job_id = $1::uuid").bind(&job).fetch_one(&pool).await.unwrap();
    pool.close().await;
    assert_eq!((count, distinct), (documents as i64, documents as i64), "one prediction per document");
    let mut peak = Vec::new();
    for tag in &tags {
        let mut p = svc.take(tag);
        peak.push(absa_memory::peak_rss_mib_of(p.pid()));
        p.terminate(Duration::from_secs(60));
    }
    Run { workers, documents, seconds, peak_rss_mib: peak }
}

fn upload_corpus(svc: &Service, key: &str, name: &str, n: usize) -> String {
    let body = jsonl(&corpus_documents(n)).into_bytes();
    let started = Instant::now();
    let a = svc.api.upload(Some(key), &format!("/v1/corpora?name={name}&format=jsonl"), &body);
    assert_eq!(a.status, 201, "{:?}", a.body.get("error"));
    assert_eq!(a.body["documents_added"].as_u64(), Some(n as u64), "{:?}", a.body);
    eprintln!("[scale] uploaded {name}: {n} documents, {:.0} MB, {:.1} s", body.len() as f64 / 1e6, started.elapsed().as_secs_f64());
    a.body["corpus_id"].as_str().unwrap().to_owned()
}

#[tokio::main]
async fn main() {
    let o = options();
    let threads = o.threads.to_string();
    let mut svc = Service::start_with(&[
        ("ABSA_API__MAX_UPLOAD_BYTES", "2000000000"),
        ("ABSA_ONNX__INTRA_THREADS", &threads),
        ("ABSA_ONNX__PRECISION", &o.precision),
        ("ABSA_LOG__FILTER", "warn"),
    ])
    .await;
    let admin = svc.bootstrap_key("scale");
    let (mlops, _) = svc.key(&admin, "mlops");

    svc.run("absa-scheduler", &["run"], "scheduler");
    let version = svc.train_small_model(&mlops);

    let single_corpus = upload_corpus(&svc, &mlops, "single", o.single);
    let corpus = upload_corpus(&svc, &mlops, "full", o.documents);
    eprintln!("[scale] load average before scoring: {}", std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim());
    let one = score(&mut svc, &mlops, &version, &single_corpus, o.single, 1, o.shard_size).await;
    eprintln!("[scale] one worker: {:.1} instances/s", one.rate());
    let two = score(&mut svc, &mlops, &version, &corpus, o.documents, 2, o.shard_size).await;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "scoring through the service: {} precision, {} ONNX Runtime thread(s) per worker, shards of {}, {cpus} CPUs",
        o.precision, o.threads, o.shard_size
    );
    println!("| workers | documents | seconds | instances/s | peak RSS per worker (MiB) |");
    println!("|---|---|---|---|---|");
    for r in [&one, &two] {
        let rss: Vec<String> = r.peak_rss_mib.iter().map(|m| format!("{m:.0}")).collect();
        println!("| {} | {} | {:.1} | {:.1} | {} |", r.workers, r.documents, r.seconds, r.rate(), rss.join(", "));
    }
    println!("speed-up of two workers over one: {:.2}x", two.rate() / one.rate());
    println!(
        "{}",
        json!({ "precision": o.precision, "threads_per_worker": o.threads, "shard_size": o.shard_size, "cpus": cpus,
                "one": { "documents": one.documents, "seconds": one.seconds, "instances_per_s": one.rate(), "peak_rss_mib": one.peak_rss_mib },
                "two": { "documents": two.documents, "seconds": two.seconds, "instances_per_s": two.rate(), "peak_rss_mib": two.peak_rss_mib },
                "speed_up": two.rate() / one.rate() })
    );
    svc.stop().await;
}
