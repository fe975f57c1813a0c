//! The API process serves its probes against the real Postgres and stops on SIGTERM.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use absa_e2e::binary;

fn get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

#[test]
fn the_api_answers_its_probes_and_stops_on_sigterm() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = Command::new(binary("absa-api"))
        .arg("serve")
        .env("ABSA_HTTP__BIND", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let health = loop {
        if let Some(r) = get(port, "/healthz") {
            break r;
        }
        assert!(Instant::now() < deadline, "absa-api did not start listening");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let ready = get(port, "/readyz").unwrap();
    assert!(ready.starts_with("HTTP/1.1 200") && ready.contains(r#""postgres":"ok""#), "{ready}");

    unsafe { libc_kill(child.id() as i32, 15) };
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "absa-api ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
}

/// Sends a raw request (headers as written) and returns the whole answer.
fn send(port: u16, head: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("the API listens");
    write!(s, "{head}Host: localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    answer
}

/// The value of header `name` (lower case) in a raw answer.
fn header<'a>(answer: &'a str, name: &str) -> Option<&'a str> {
    let head = answer.split("\r\n\r\n").next()?;
    head.lines().find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.trim()))
}

fn body_json(answer: &str) -> serde_json::Value {
    let body = answer.split_once("\r\n\r\n").expect("a body").1;
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

#[test]
fn every_answer_error_body_and_access_log_line_carries_the_request_id() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let log = std::env::temp_dir().join(format!("absa-api-request-ids-{}.log", std::process::id()));
    let mut child = Command::new(binary("absa-api"))
        .arg("serve")
        .env("ABSA_HTTP__BIND", format!("127.0.0.1:{port}"))
        .env("ABSA_LOG__JSON", "true")
        .env("ABSA_LOG__FILTER", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(port, "/healthz").is_none() {
        assert!(Instant::now() < deadline, "absa-api did not start listening");
        std::thread::sleep(Duration::from_millis(100));
    }

    // The caller's id is kept: in the answer's header and in the error body.
    let answer = send(port, "GET /v1/jobs HTTP/1.1\r\nX-Request-Id: probe-123\r\n");
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert_eq!(header(&answer, "x-request-id"), Some("probe-123"), "{answer}");
    assert_eq!(body_json(&answer)["request_id"], "probe-123");
    // Without one (or with one that could forge log lines), a new UUID, the same in both.
    for head in ["GET /v1/models HTTP/1.1\r\n".to_owned(), format!("GET /v1/models HTTP/1.1\r\nX-Request-Id: {}\r\n", "x".repeat(65))] {
        let answer = send(port, &head);
        let id = header(&answer, "x-request-id").unwrap_or_else(|| panic!("no X-Request-Id: {answer}")).to_owned();
        assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
        assert_eq!(body_json(&answer)["request_id"], id.as_str());
    }
    // A successful answer carries it too.
    let answer = send(port, "GET /healthz HTTP/1.1\r\nX-Request-Id: health-1\r\n");
    assert!(answer.starts_with("HTTP/1.1 200") && header(&answer, "x-request-id") == Some("health-1"), "{answer}");

    unsafe { libc_kill(child.id() as i32, 15) };
    child.wait().unwrap();
    // The access log: one line for the request, inside its span (JSON logs).
    let text = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_file(&log);
    let lines: Vec<serde_json::Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let access: Vec<&serde_json::Value> = lines.iter().filter(|l| l["fields"]["message"] == "request" && l["span"]["request_id"] == "probe-123").collect();
    assert_eq!(access.len(), 1, "one access-log line for probe-123 in\n{text}");
    assert_eq!(access[0]["fields"]["status"], 401);
    assert_eq!(access[0]["span"]["route"], "/v1/jobs");
    assert_eq!(access[0]["span"]["method"], "GET");
    assert!(access[0]["fields"]["millis"].as_f64().is_some_and(|ms| ms < 10_000.0), "{}", access[0]);
    // Probes are not in the info-level access log.
    assert!(!lines.iter().any(|l| l["span"]["request_id"] == "health-1"), "a probe was logged at info level");
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}
