//! Webhooks end to end: the API registers a URL, a job's state changes (submitted,
//! dispatched by the scheduler, cancelled) are queued by the database trigger and sent
//! by the scheduler. The receiver is down at first (connection refused), then answers
//! 500 once, then 200: every change arrives, in order, signed with the webhook's secret
//! (checked here with an independent HMAC), and the delivery log shows the retries.

use std::io::{BufRead, BufReader, Read, Write};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use absa_e2e::scrape::free_port;
use absa_e2e::service::{jsonl, laptops, Service};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

/// One request the receiver got: its headers (lower-case names) and body.
struct Received {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> &str {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).unwrap_or_else(|| panic!("no {name} header"))
    }
}

/// A receiver on `port` that answers the first request 500 and the others 200, one
/// request per connection, handing each to the channel.
fn receiver(port: u16) -> mpsc::Receiver<Received> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("the receiver's port");
    let (sender, received) = mpsc::channel();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().flatten().enumerate() {
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut headers = Vec::new();
            let mut line = String::new();
            reader.read_line(&mut line).expect("request line");
            loop {
                line.clear();
                reader.read_line(&mut line).expect("header");
                match line.trim_end().split_once(':') {
                    Some((k, v)) => headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned())),
                    None => break,
                }
            }
            let length: usize = headers.iter().find(|(k, _)| k == "content-length").map_or(0, |(_, v)| v.parse().expect("length"));
            let mut body = vec![0u8; length];
            reader.read_exact(&mut body).expect("body");
            let status = if n == 0 { "500 Internal Server Error" } else { "200 OK" };
            let mut stream = stream;
            let _ = stream.write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes());
            let _ = sender.send(Received { headers, body });
        }
    });
    received
}

fn deliveries(svc: &Service, key: &str, webhook: &str) -> Vec<Value> {
    let a = svc.api.get(Some(key), &format!("/v1/webhooks/{webhook}/deliveries"));
    assert_eq!(a.status, 200, "{a:?}");
    let mut list = a.body["deliveries"].as_array().expect("deliveries").clone();
    list.reverse(); // oldest first
    list
}

#[tokio::test(flavor = "multi_thread")]
async fn job_state_changes_reach_a_webhook_signed_and_in_order_after_the_receiver_was_down() {
    let mut svc = Service::start_in_process(&[("ABSA_WEBHOOKS__RETRY_SECS", "0.5"), ("ABSA_WEBHOOKS__TIMEOUT_SECS", "5")]).await;
    svc.run("absa-scheduler", &["run"], "scheduler");
    let admin = svc.bootstrap_key("hooks");
    let (mlops, _) = svc.key(&admin, "mlops");
    let (analyst, _) = svc.key(&admin, "analyst");
    let other = svc.bootstrap_key("others");
    let api = &svc.api;

    // Registration: mlops and up, an http(s) URL; the secret is shown once.
    let port = free_port(); // nothing listens there yet: the receiver is down
    let url = format!("http://127.0.0.1:{port}/hook");
    assert_eq!(api.post(&analyst, "/v1/webhooks", &json!({ "url": url })).status, 403);
    for bad in ["ftp://example.com/x", "not a url", "http://"] {
        let a = api.post(&mlops, "/v1/webhooks", &json!({ "url": bad }));
        assert_eq!(a.status, 422, "{bad}: {a:?}");
    }
    let a = api.post(&mlops, "/v1/webhooks", &json!({ "url": url }));
    assert_eq!(a.status, 201, "{a:?}");
    let webhook = a.body["id"].as_str().unwrap().to_owned();
    let secret = a.body["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_") && secret.len() == 70, "{secret}");
    let listed = api.get(Some(&analyst), "/v1/webhooks").body;
    assert_eq!(listed["webhooks"][0]["url"], url.as_str(), "{listed}");
    assert!(listed["webhooks"][0].get("secret").is_none(), "the secret is not shown again: {listed}");
    assert_eq!(api.get(Some(&other), &format!("/v1/webhooks/{webhook}/deliveries")).status, 404, "another team's webhook");
    assert_eq!(api.get(Some(&other), "/v1/webhooks").body["webhooks"], json!([]));

    // A job's life with no trainer: queued, dispatched by the scheduler, cancelled.
    let a = api.upload(Some(&mlops), "/v1/datasets?name=hooks", jsonl(&laptops("train")[..20]).as_bytes());
    assert_eq!(a.status, 201, "{a:?}");
    let a = api.post(&mlops, "/v1/jobs/train", &json!({ "dataset_id": a.body["dataset_id"], "base_model": "all-minilm-l6-v2" }));
    assert_eq!(a.status, 201, "{a:?}");
    let job = a.body["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    while api.get(Some(&mlops), &format!("/v1/jobs/{job}")).body["state"] != "dispatched" {
        assert!(Instant::now() < deadline, "the job was never dispatched\n{}", svc.logs());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(api.send("POST", Some(&mlops), &format!("/v1/jobs/{job}/cancel"), None, &[]).status, 200);

    // The receiver is down: the first delivery fails and is retried; the later ones
    // wait behind it (in order).
    let deadline = Instant::now() + Duration::from_secs(30);
    let first = loop {
        let log = deliveries(&svc, &mlops, &webhook);
        if log.len() == 3 && log[0]["attempts"].as_i64() >= Some(2) {
            break log;
        }
        assert!(Instant::now() < deadline, "no retried delivery: {log:?}\n{}", svc.logs());
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(first[0]["state"], "pending");
    assert!(first[0]["last_error"].as_str().is_some_and(|e| !e.is_empty()) && first[0]["last_status"].is_null(), "{:?}", first[0]);
    assert!(first[1..].iter().all(|d| d["attempts"] == 0 && d["state"] == "pending"), "{first:?}");

    // Up again (500 once, then 200): all three arrive, in order, signed.
    let received = receiver(port);
    let mut got = Vec::new();
    while got.len() < 4 {
        got.push(received.recv_timeout(Duration::from_secs(30)).unwrap_or_else(|_| panic!("{} requests arrived\n{}", got.len(), svc.logs())));
    }
    assert_eq!(got[0].body, got[1].body, "the delivery answered 500 is sent again");
    let mut states = Vec::new();
    for r in &got[1..] {
        let timestamp = r.header("x-absa-timestamp");
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{timestamp}.").as_bytes());
        mac.update(&r.body);
        let expected: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(r.header("x-absa-signature"), format!("sha256={expected}"), "signature of {}", String::from_utf8_lossy(&r.body));
        assert!((chrono::Utc::now().timestamp() - timestamp.parse::<i64>().unwrap()).abs() < 120);
        assert_eq!(r.header("content-type"), "application/json");
        let event: Value = serde_json::from_slice(&r.body).expect("a JSON body");
        assert_eq!((event["type"].as_str(), event["job_id"].as_str(), event["kind"].as_str()), (Some("job.state_changed"), Some(job.as_str()), Some("train")));
        states.push((event["previous_state"].clone(), event["state"].as_str().unwrap().to_owned()));
    }
    assert_eq!(states, vec![(Value::Null, "queued".to_owned()), (json!("queued"), "dispatched".to_owned()), (json!("dispatched"), "cancelled".to_owned())]);

    // The log: delivered, the first after its failures (refused, then the 500).
    let deadline = Instant::now() + Duration::from_secs(10);
    let log = loop {
        let log = deliveries(&svc, &mlops, &webhook);
        if log.iter().all(|d| d["state"] == "delivered") {
            break log;
        }
        assert!(Instant::now() < deadline, "{log:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(log[0]["attempts"].as_i64().unwrap() >= 3, "{:?}", log[0]);
    assert!(log.iter().all(|d| d["last_status"] == 200 && d["last_error"].is_null()), "{log:?}");
    let ids: Vec<String> = log.iter().map(|d| d["id"].to_string()).collect();
    let headers: Vec<&str> = got[1..].iter().map(|r| r.header("x-absa-delivery")).collect();
    assert_eq!(ids, headers, "X-Absa-Delivery names the logged delivery");

    // Deleted: its log goes with it.
    assert_eq!(api.send("DELETE", Some(&analyst), &format!("/v1/webhooks/{webhook}"), None, &[]).status, 403);
    assert_eq!(api.send("DELETE", Some(&mlops), &format!("/v1/webhooks/{webhook}"), None, &[]).status, 204);
    assert_eq!(api.get(Some(&mlops), &format!("/v1/webhooks/{webhook}/deliveries")).status, 404);
    svc.stop().await;
}
