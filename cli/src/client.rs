//! A small wrapper over ureq: adds the Bearer key, turns connection failures into
//! "could not reach URL" and error statuses into errors carrying the server's message.

use std::io::Read;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use serde_json::Value;
use ureq::http::{Response, StatusCode};
use ureq::{Agent, Body, SendBody};

/// JSON answers are read whole; this bounds them (a job list, a model comparison).
const JSON_LIMIT: u64 = 256 * 1024 * 1024;

pub struct Client {
    agent: Agent,
    base: String,
    key: Option<String>,
}

/// A successful answer: its status (201 created or 200 for a repeated idempotency key)
/// and its JSON body (`Null` when empty).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

/// An error status from the server, with its `{"error": ...}` message and the whole body
/// (a refused promotion carries more fields).
#[derive(Debug)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
    pub body: Value,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let reason = StatusCode::from_u16(self.status).ok().and_then(|s| s.canonical_reason()).unwrap_or("");
        write!(f, "HTTP {} {}: {}", self.status, reason, self.message)
    }
}

impl std::error::Error for ApiError {}

/// A file being downloaded.
pub struct Download<R> {
    pub len: Option<u64>,
    pub etag: Option<String>,
    pub body: R,
}

pub enum Method {
    Get,
    Post,
    Put,
    Delete,
}

impl Client {
    pub fn new(base: &str, key: Option<String>) -> Self {
        let agent: Agent = Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            .user_agent(format!("absa-cli/{}", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        Self { agent, base: base.trim_end_matches('/').to_owned(), key }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value> {
        Ok(self.json(Method::Get, path, query, &[], None)?.body)
    }

    pub fn post(&self, path: &str, body: &Value, headers: &[(&str, String)]) -> Result<Reply> {
        self.json(Method::Post, path, &[], headers, Some(body))
    }

    pub fn put(&self, path: &str, body: &Value) -> Result<Value> {
        Ok(self.json(Method::Put, path, &[], &[], Some(body))?.body)
    }

    pub fn delete(&self, path: &str) -> Result<Value> {
        Ok(self.json(Method::Delete, path, &[], &[], None)?.body)
    }

    /// A request with an optional JSON body whose answer is JSON.
    pub fn json(&self, method: Method, path: &str, query: &[(&str, String)], headers: &[(&str, String)], body: Option<&Value>) -> Result<Reply> {
        let mut headers = headers.to_vec();
        let payload = match body {
            Some(v) => {
                headers.push(("Content-Type", "application/json".into()));
                serde_json::to_vec(v)?
            }
            None => Vec::new(),
        };
        let has_body = matches!(method, Method::Post | Method::Put);
        let send = if has_body { SendBody::from_owned_reader(std::io::Cursor::new(payload.clone())) } else { SendBody::none() };
        if has_body {
            headers.push(("Content-Length", payload.len().to_string()));
        }
        let resp = self.send(method, path, query, &headers, send)?;
        read_reply(resp)
    }

    /// POSTs `reader` as the raw request body, `len` bytes, without reading it whole.
    pub fn upload(&self, path: &str, query: &[(&str, String)], content_type: &str, len: u64, reader: impl Read + 'static) -> Result<Reply> {
        let headers = [("Content-Type", content_type.to_owned()), ("Content-Length", len.to_string())];
        let resp = self.send(Method::Post, path, query, &headers, SendBody::from_owned_reader(reader))?;
        read_reply(resp)
    }

    /// GETs a file; the caller streams the body. Returns it with its length when known
    /// and its `ETag` (unquoted).
    pub fn download(&self, path: &str, query: &[(&str, String)]) -> Result<Download<impl Read>> {
        let resp = self.send(Method::Get, path, query, &[], SendBody::none())?;
        let len = resp.body().content_length();
        let etag = resp.headers().get("etag").and_then(|v| v.to_str().ok()).map(|v| v.trim_matches('"').to_owned());
        Ok(Download { len, etag, body: resp.into_body().into_reader() })
    }

    /// Sends a request: the key added, transport failures and error statuses made errors.
    fn send(&self, method: Method, path: &str, query: &[(&str, String)], headers: &[(&str, String)], body: SendBody) -> Result<Response<Body>> {
        let url = format!("{}{}", self.base, path);
        let mut req = match method {
            Method::Get => self.agent.get(&url).force_send_body(),
            Method::Delete => self.agent.delete(&url).force_send_body(),
            Method::Post => self.agent.post(&url),
            Method::Put => self.agent.put(&url),
        };
        if path.starts_with("/v1/") {
            let key = self
                .key
                .as_deref()
                .ok_or_else(|| crate::exit::Refused::key("no API key: pass --api-key, set ABSA_API_KEY, or put api_key in ~/.config/absa/cli.toml"))?;
            req = req.header("Authorization", format!("Bearer {key}"));
        }
        for (k, v) in query {
            req = req.query(*k, v);
        }
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let mut resp = req.send(body).map_err(|e| self.transport_error(&url, e))?;
        let status = resp.status().as_u16();
        if status >= 400 {
            let text = resp.body_mut().with_config().limit(1024 * 1024).lossy_utf8(true).read_to_string().unwrap_or_default();
            return Err(error_from_body(status, &text).into());
        }
        Ok(resp)
    }

    fn transport_error(&self, url: &str, e: ureq::Error) -> anyhow::Error {
        match e {
            // Connecting, name lookup, a dropped connection, a timeout: the server is not there.
            ureq::Error::Io(io) => anyhow!("could not reach the API at {}: {io}", self.base),
            ureq::Error::HostNotFound | ureq::Error::ConnectionFailed | ureq::Error::Timeout(_) => {
                anyhow!("could not reach the API at {}: {e}", self.base)
            }
            other => anyhow!("request to {url} failed: {other}"),
        }
    }
}

fn read_reply(mut resp: Response<Body>) -> Result<Reply> {
    let status = resp.status().as_u16();
    let text = resp.body_mut().with_config().limit(JSON_LIMIT).read_to_string().context("reading the answer")?;
    let body = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).with_context(|| format!("the server answered {status} with something that is not JSON: {}", snippet(&text)))?
    };
    Ok(Reply { status, body })
}

/// The error for a status >= 400: the `error` field of a JSON body, else the body's text.
pub fn error_from_body(status: u16, text: &str) -> ApiError {
    let body: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    // RFC 9457's `detail`; `error` from services before it.
    let message = match body.get("detail").or_else(|| body.get("error")) {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None if text.trim().is_empty() => "(no message)".to_owned(),
        None => snippet(text),
    };
    ApiError { status, message, body }
}

fn snippet(text: &str) -> String {
    let t = text.trim();
    match t.char_indices().nth(300) {
        Some((i, _)) => format!("{}…", &t[..i]),
        None => t.to_owned(),
    }
}

/// A path segment: ids and names go into URLs percent-encoded.
pub fn seg(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The items of a cursor-paged listing (`has_more`, `next_after`), page after page with
/// `query` on each, until the last page or `at_most` items.
pub fn pages(c: &Client, path: &str, query: &[(&str, String)], field: &str, at_most: Option<usize>) -> Result<Vec<Value>> {
    let mut items = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let want = at_most.map_or(1000, |n| (n - items.len()).min(1000));
        let mut q = query.to_vec();
        q.push(("limit", want.to_string()));
        if let Some(a) = &after {
            q.push(("after", a.clone()));
        }
        let page = c.get(path, &q)?;
        items.extend(page.get(field).and_then(Value::as_array).cloned().unwrap_or_default());
        if at_most.is_some_and(|n| items.len() >= n) {
            return Ok(items);
        }
        match page.get("next_after").filter(|n| !n.is_null()) {
            Some(Value::String(s)) => after = Some(s.clone()),
            Some(other) => after = Some(other.to_string()),
            None => return Ok(items),
        }
    }
}

/// Whether an error is a transport failure worth retrying while polling.
pub fn is_transient(e: &anyhow::Error) -> bool {
    match e.downcast_ref::<ApiError>() {
        Some(api) => api.status >= 500,
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Serves one request with a canned answer; returns the address and what was received.
    fn one_shot(status: &str, body: &'static str) -> (String, std::sync::mpsc::Receiver<(String, Vec<u8>)>) {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        let status = status.to_owned();
        std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut head = String::new();
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                head.push_str(&line);
                if line == "\r\n" {
                    break;
                }
            }
            let len =
                head.lines().find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap())).unwrap_or(0);
            let mut received = vec![0; len];
            reader.read_exact(&mut received).unwrap();
            let mut stream = stream;
            write!(stream, "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).unwrap();
            tx.send((head, received)).unwrap();
        });
        (addr, rx)
    }

    #[test]
    fn uploads_stream_with_a_length_the_key_and_encoded_query() {
        let (addr, rx) = one_shot("201 Created", r#"{"dataset_id":"d1","rows_added":2}"#);
        let c = Client::new(&addr, Some("secret".into()));
        let data = b"{\"text\":\"a\"}\n{\"text\":\"b\"}\n".to_vec();
        let len = data.len() as u64;
        let reply = c
            .upload(
                "/v1/datasets",
                &[("name", "laptops & co".into()), ("format", "jsonl".into())],
                "application/x-ndjson",
                len,
                std::io::Cursor::new(data.clone()),
            )
            .unwrap();
        assert_eq!((reply.status, reply.body["rows_added"].as_i64()), (201, Some(2)));
        let (head, body) = rx.recv().unwrap();
        assert!(head.starts_with("POST /v1/datasets?name=laptops%20%26%20co&format=jsonl HTTP/1.1\r\n"), "{head}");
        assert!(head.contains("authorization: Bearer secret\r\n") || head.contains("Authorization: Bearer secret\r\n"), "{head}");
        assert!(head.to_ascii_lowercase().contains(&format!("content-length: {len}\r\n")), "{head}");
        assert!(!head.to_ascii_lowercase().contains("transfer-encoding"), "{head}");
        assert_eq!(body, data);
    }

    #[test]
    fn error_statuses_become_errors_with_the_server_message() {
        let (addr, rx) = one_shot("403 Forbidden", r#"{"error":"role analyst lacks submit training jobs"}"#);
        let c = Client::new(&addr, Some("k".into()));
        let err = c.post("/v1/jobs/train", &serde_json::json!({"dataset_id": "d"}), &[("Idempotency-Key", "abc".into())]).unwrap_err();
        assert_eq!(err.to_string(), "HTTP 403 Forbidden: role analyst lacks submit training jobs");
        assert!(!is_transient(&err));
        let (head, body) = rx.recv().unwrap();
        assert!(head.to_ascii_lowercase().contains("idempotency-key: abc\r\n"), "{head}");
        assert!(head.to_ascii_lowercase().contains("content-type: application/json\r\n"), "{head}");
        assert_eq!(serde_json::from_slice::<Value>(&body).unwrap(), serde_json::json!({"dataset_id": "d"}));
    }

    #[test]
    fn error_messages_come_from_the_body() {
        let e = error_from_body(403, r#"{"error":"role analyst cannot upload datasets"}"#);
        assert_eq!(e.to_string(), "HTTP 403 Forbidden: role analyst cannot upload datasets");
        let e = error_from_body(502, "Bad gateway\n");
        assert_eq!(e.to_string(), "HTTP 502 Bad Gateway: Bad gateway");
        let e = error_from_body(404, "");
        assert_eq!(e.to_string(), "HTTP 404 Not Found: (no message)");
        let e = error_from_body(409, r#"{"promoted":false,"error":"not better","candidate":0.8,"current":0.9}"#);
        assert_eq!(e.body["current"], 0.9);
    }

    #[test]
    fn connection_refused_names_the_url() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        // Nothing listens once the listener above is dropped.
        let c = Client::new(&format!("http://127.0.0.1:{port}/"), Some("k".into()));
        let err = c.get("/v1/me", &[]).unwrap_err();
        assert!(err.to_string().starts_with(&format!("could not reach the API at http://127.0.0.1:{port}:")), "{err}");
        assert!(is_transient(&err));
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(seg("0f3c-AB_x.y~"), "0f3c-AB_x.y~");
        assert_eq!(seg("a b/c"), "a%20b%2Fc");
    }

    #[test]
    fn a_missing_key_is_reported_before_sending() {
        let c = Client::new("http://127.0.0.1:9", None);
        let err = c.get("/v1/me", &[]).unwrap_err();
        assert!(err.to_string().contains("ABSA_API_KEY"), "{err}");
    }
}
