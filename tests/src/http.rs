//! A small blocking HTTP client for the API tests: every answer (2xx or not) comes
//! back as status + JSON (or text), so tests assert on statuses directly.

use serde_json::Value;

pub struct Api {
    pub base: String,
    agent: ureq::Agent,
}

/// One answer: the status and the body as JSON (`Value::String` when it is not JSON).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl Api {
    pub fn new(base: impl Into<String>) -> Self {
        // No pooled connections: the API answers some requests (403, 413) without
        // reading their body and then closes, and a pooled connection could be one
        // the server is closing ("peer disconnected" on the next request).
        let config = ureq::Agent::config_builder().http_status_as_error(false).max_idle_connections(0).build();
        Self { base: base.into(), agent: ureq::Agent::new_with_config(config) }
    }

    fn answer(result: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Answer {
        let mut response = result.expect("the API answers");
        let status = response.status().as_u16();
        let text = response.body_mut().with_config().limit(1 << 30).read_to_string().unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Answer { status, body }
    }

    pub fn get(&self, key: Option<&str>, path: &str) -> Answer {
        let mut req = self.agent.get(format!("{}{path}", self.base));
        if let Some(k) = key {
            req = req.header("Authorization", format!("Bearer {k}"));
        }
        Self::answer(req.call())
    }

    /// The raw bytes of a GET (exports).
    pub fn get_bytes(&self, key: &str, path: &str) -> (u16, Vec<u8>) {
        let mut response = self.agent.get(format!("{}{path}", self.base)).header("Authorization", format!("Bearer {key}")).call().expect("the API answers");
        let status = response.status().as_u16();
        (status, response.body_mut().with_config().limit(1 << 32).read_to_vec().unwrap_or_default())
    }

    /// `method` with a JSON body (or none), and extra headers.
    pub fn send(&self, method: &str, key: Option<&str>, path: &str, body: Option<&Value>, headers: &[(&str, &str)]) -> Answer {
        let url = format!("{}{path}", self.base);
        let mut builder = ureq::http::Request::builder().method(method).uri(&url);
        if let Some(k) = key {
            builder = builder.header("Authorization", format!("Bearer {k}"));
        }
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        match body {
            Some(b) => {
                builder = builder.header("Content-Type", "application/json");
                Self::answer(self.agent.run(builder.body(serde_json::to_vec(b).expect("JSON")).expect("a valid request")))
            }
            None => Self::answer(self.agent.run(builder.body(()).expect("a valid request"))),
        }
    }

    pub fn post(&self, key: &str, path: &str, body: &Value) -> Answer {
        self.send("POST", Some(key), path, Some(body), &[])
    }

    /// POST raw bytes (uploads).
    pub fn upload(&self, key: Option<&str>, path: &str, bytes: &[u8]) -> Answer {
        let mut req = self.agent.post(format!("{}{path}", self.base)).header("Content-Type", "application/octet-stream");
        if let Some(k) = key {
            req = req.header("Authorization", format!("Bearer {k}"));
        }
        Self::answer(req.send(bytes))
    }
}
