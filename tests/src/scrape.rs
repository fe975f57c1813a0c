//! Scraping a process's `/metrics`: the Prometheus/OpenMetrics text parsed into
//! samples, the family names it declares, and a sample's value by labels.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::service::Service;

/// One sample: metric name, labels, value.
pub type Sample = (String, BTreeMap<String, String>, f64);

/// Parses the Prometheus/OpenMetrics text format (comments skipped; label values may
/// hold braces and commas, as route templates do).
pub fn parse(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
        };
        let (name, mut rest) = match series.find('{') {
            Some(i) => (&series[..i], &series[i + 1..]),
            None => (series, ""),
        };
        let mut labels = BTreeMap::new();
        while let Some(eq) = rest.find("=\"") {
            let key = rest[..eq].trim_start_matches(',').to_owned();
            let mut chars = rest[eq + 2..].char_indices();
            let mut val = String::new();
            let end = loop {
                match chars.next() {
                    Some((i, '"')) => break eq + 2 + i,
                    Some((_, '\\')) => val.extend(chars.next().map(|(_, c)| c)),
                    Some((_, c)) => val.push(c),
                    None => panic!("unterminated label in {line}"),
                }
            };
            labels.insert(key, val);
            rest = &rest[end + 1..];
        }
        out.push((name.to_owned(), labels, value));
    }
    out
}

/// The value of the sample `name` whose labels include `labels`; 0 when there is none
/// (a counter never incremented has no sample).
pub fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<f64> =
        samples.iter().filter(|(n, l, _)| n == name && labels.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))).map(|s| s.2).collect();
    assert!(found.len() <= 1, "{name} {labels:?} matches {} samples", found.len());
    found.first().copied().unwrap_or(0.0)
}

pub fn get(url: &str) -> (u16, String) {
    let agent = ureq::Agent::new_with_config(ureq::Agent::config_builder().http_status_as_error(false).build());
    match agent.get(url).call() {
        Ok(mut r) => (r.status().as_u16(), r.body_mut().read_to_string().unwrap_or_default()),
        // Not listening yet.
        Err(e) => (0, e.to_string()),
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Waits until `url` answers 200.
pub fn wait_ok(url: &str, svc: &Service) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while get(url).0 != 200 {
        assert!(Instant::now() < deadline, "{url} never answered 200\n{}", svc.logs());
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn scrape(url: &str) -> (Vec<Sample>, BTreeSet<String>) {
    let (status, text) = get(url);
    assert_eq!(status, 200, "{url}: {text}");
    assert!(text.trim_end().ends_with("# EOF"), "{url}: OpenMetrics text ends with # EOF");
    (parse(&text), declared(&text))
}

/// The sample names every `# TYPE` line declares: a family is served even before its
/// first sample (a gauge over no rows, a counter never incremented).
pub fn declared(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else { continue };
        let (name, kind) = rest.split_once(' ').unwrap_or_else(|| panic!("bad TYPE line: {line}"));
        let suffixes: &[&str] = match kind {
            // OpenMetrics names a counter's family without the `_total` of its samples.
            "counter" if !name.ends_with("_total") => &["_total"],
            "histogram" => &["_bucket", "_sum", "_count"],
            _ => &[""],
        };
        names.extend(suffixes.iter().map(|suffix| format!("{name}{suffix}")));
        names.insert(name.to_owned());
    }
    names
}

/// [`scrape`] of the API's `/metrics`, which needs a key.
pub fn scrape_with_key(url: &str, key: &str) -> (Vec<Sample>, BTreeSet<String>) {
    let mut r = ureq::get(url).header("Authorization", format!("Bearer {key}")).call().unwrap_or_else(|e| panic!("{url}: {e}"));
    assert_eq!(r.status().as_u16(), 200, "{url}");
    let text = r.body_mut().read_to_string().expect("body");
    (parse(&text), declared(&text))
}

/// `ABSA_METRICS__BIND` on a free local port, for [`Service::run_with`]; the port.
pub fn metrics_port() -> (u16, [(&'static str, String); 1]) {
    let port = free_port();
    (port, [("ABSA_METRICS__BIND", format!("127.0.0.1:{port}"))])
}
