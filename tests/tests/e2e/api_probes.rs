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

/// `absa-api serve` on a free port with `env` added, its stderr to `stderr` (or
/// nowhere), once it answers `/healthz`; the process and its port.
fn start_api(env: &[(&str, String)], stderr: Option<std::fs::File>) -> (std::process::Child, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut command = Command::new(binary("absa-api"));
    command.arg("serve").env("ABSA_HTTP__BIND", format!("127.0.0.1:{port}")).stdout(Stdio::null());
    command.stderr(stderr.map_or_else(Stdio::null, Stdio::from));
    for (k, v) in env {
        command.env(k, v);
    }
    let child = command.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(port, "/healthz").is_none() {
        assert!(Instant::now() < deadline, "absa-api did not start listening");
        std::thread::sleep(Duration::from_millis(100));
    }
    (child, port)
}

#[test]
fn the_api_answers_its_probes_and_stops_on_sigterm() {
    let (mut child, port) = start_api(&[], None);
    let health = get(port, "/healthz").unwrap();
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
    let log = std::env::temp_dir().join(format!("absa-api-request-ids-{}.log", std::process::id()));
    let env = [("ABSA_LOG__JSON", "true".to_owned()), ("ABSA_LOG__FILTER", "info".to_owned())];
    let (mut child, port) = start_api(&env, Some(std::fs::File::create(&log).unwrap()));

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

/// A stand-in OTLP/HTTP collector on a free port: answers every POST with 200 and hands
/// each request's path and protobuf body to the returned channel.
fn collector() -> (u16, std::sync::mpsc::Receiver<(String, Vec<u8>)>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (sender, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let sender = sender.clone();
            std::thread::spawn(move || {
                let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
                let mut stream = stream;
                // Requests on one kept-alive connection, one after another.
                loop {
                    let mut head = Vec::new();
                    while !head.ends_with(b"\r\n\r\n") {
                        let mut byte = [0u8; 1];
                        if reader.read(&mut byte).unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    let head = String::from_utf8_lossy(&head).into_owned();
                    let path = head.split_whitespace().nth(1).unwrap_or("").to_owned();
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-length")).map(|(_, v)| v.trim().parse().unwrap()))
                        .unwrap_or(0);
                    let mut body = vec![0u8; length];
                    reader.read_exact(&mut body).unwrap();
                    let _ = sender.send((path, body));
                    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n");
                }
            });
        }
    });
    (port, received)
}

#[test]
fn with_an_otlp_endpoint_each_request_is_a_span_at_the_collector_with_its_request_id() {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use prost::Message;

    let (collector_port, received) = collector();
    let env = [("ABSA_LOG__FILTER", "info".to_owned()), ("ABSA_LOG__OTLP_TRACES_ENDPOINT", format!("http://127.0.0.1:{collector_port}/v1/traces"))];
    let (mut child, port) = start_api(&env, None);
    let answer = send(port, "GET /v1/jobs HTTP/1.1\r\nX-Request-Id: traced-42\r\n");
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    // Spans are batched (every 5 s by default): the shutdown sends what is left.
    unsafe { libc_kill(child.id() as i32, 15) };
    assert!(child.wait().unwrap().success());

    let text = |v: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>| match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        other => format!("{other:?}"),
    };
    let mut spans = Vec::new();
    while let Ok((path, body)) = received.recv_timeout(Duration::from_secs(2)) {
        assert_eq!(path, "/v1/traces");
        let export = ExportTraceServiceRequest::decode(body.as_slice()).expect("an OTLP protobuf export");
        for resource in export.resource_spans {
            let attributes = resource.resource.map(|r| r.attributes).unwrap_or_default();
            let service = attributes.iter().find(|a| a.key == "service.name").map(|a| text(&a.value));
            assert_eq!(service.as_deref(), Some("absa-api"));
            for span in resource.scope_spans.into_iter().flat_map(|s| s.spans) {
                let attributes: Vec<(String, String)> = span.attributes.iter().map(|a| (a.key.clone(), text(&a.value))).collect();
                let events: Vec<Vec<(String, String)>> =
                    span.events.iter().map(|e| e.attributes.iter().map(|a| (a.key.clone(), text(&a.value))).collect()).collect();
                spans.push((span.name.clone(), attributes, events));
            }
        }
    }
    let traced: Vec<_> = spans.iter().filter(|(_, attributes, _)| attributes.contains(&("request_id".into(), "traced-42".into()))).collect();
    assert_eq!(traced.len(), 1, "one span for the request: {spans:?}");
    let (name, attributes, events) = traced[0];
    assert_eq!(name, "request");
    assert!(attributes.contains(&("route".into(), "/v1/jobs".into())) && attributes.contains(&("method".into(), "GET".into())), "{attributes:?}");
    // The access-log line is an event of the span, with the answer's status.
    assert!(events.iter().any(|e| e.contains(&("status".into(), "401".into()))), "{events:?}");
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}
