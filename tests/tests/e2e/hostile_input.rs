//! Hostile input through the API: every bad row is reported with its line and reason,
//! every good row is stored, nothing crashes, and SQL-looking text is just text; a
//! Parquet file with the wrong schema has each of its rows reported.

use absa_e2e::http::Answer;
use absa_e2e::service::Service;
use serde_json::json;

/// Three rows of `text` int64, `aspect` string, `start`/`end` int64, no `label`.
fn wrong_schema_parquet() -> Vec<u8> {
    use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use std::sync::Arc;
    let schema = "message rows { required int64 text; required binary aspect (UTF8); required int64 start; required int64 end; }";
    let schema = Arc::new(parquet::schema::parser::parse_message_type(schema).unwrap());
    let mut out = Vec::new();
    let mut writer = SerializedFileWriter::new(&mut out, schema, Arc::new(WriterProperties::builder().build())).unwrap();
    let mut group = writer.next_row_group().unwrap();
    let ints = |group: &mut parquet::file::writer::SerializedRowGroupWriter<'_, &mut Vec<u8>>, values: &[i64]| {
        let mut col = group.next_column().unwrap().unwrap();
        col.typed::<Int64Type>().write_batch(values, None, None).unwrap();
        col.close().unwrap();
    };
    ints(&mut group, &[7, 8, 9]);
    let mut col = group.next_column().unwrap().unwrap();
    col.typed::<ByteArrayType>().write_batch(&[ByteArray::from("a"), ByteArray::from("b"), ByteArray::from("c")], None, None).unwrap();
    col.close().unwrap();
    ints(&mut group, &[0, 0, 0]);
    ints(&mut group, &[1, 1, 1]);
    group.close().unwrap();
    writer.close().unwrap();
    out
}

fn lines_and_reasons(a: &Answer) -> Vec<(i64, String)> {
    a.body["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("{a:?}"))
        .iter()
        .map(|e| (e["line"].as_i64().unwrap(), e["reason"].as_str().unwrap().to_owned()))
        .collect()
}

const GOOD: &str = r#"{"text": "Great battery life", "aspect": "battery life", "start": 6, "end": 18, "label": "positive"}"#;

#[tokio::test(flavor = "multi_thread")]
async fn bad_rows_are_reported_by_line_and_good_rows_kept() {
    // A cap above the 10 MB line, so the line reaches the row checks.
    let svc = Service::start_in_process(&[("ABSA_API__MAX_UPLOAD_BYTES", "30000000")]).await;
    let admin = svc.bootstrap_key("hostile");
    let (mlops, _) = svc.key(&admin, "mlops");
    let api = &svc.api;

    let mut body: Vec<u8> = Vec::new();
    body.extend_from_slice("\u{feff}".as_bytes()); // a BOM before line 1
    body.extend_from_slice(GOOD.as_bytes()); // 1
    body.extend_from_slice(b"\r\n");
    body.extend_from_slice(b"{\"text\": \"caf\xc3\x28\", \"aspect\": \"x\", \"start\": 0, \"end\": 1, \"label\": \"positive\"}\n"); // 2: invalid UTF-8
    body.extend_from_slice(b"{\"text\": \"nul \\u0000 here\", \"aspect\": \"nul\", \"start\": 0, \"end\": 3, \"label\": \"negative\"}\n"); // 3: NUL
    body.extend_from_slice(
        format!("{{\"text\": \"{}\", \"aspect\": \"x\", \"start\": 0, \"end\": 1, \"label\": \"positive\"}}\n", "x".repeat(10 << 20)).as_bytes(),
    ); // 4: 10 MB line
    body.extend_from_slice(format!("{}\n", "[".repeat(100_000)).as_bytes()); // 5: deeply nested
    body.extend_from_slice(b"{\"text\": {\"a\": 1}, \"aspect\": \"x\", \"start\": 0, \"end\": 1, \"label\": \"positive\"}\n"); // 6: wrong type
    body.extend_from_slice(b"{\"text\": \"abc\", \"aspect\": \"ab\", \"start\": \"zero\", \"end\": 2, \"label\": \"positive\"}\n"); // 7: wrong type
    body.extend_from_slice(b"{\"text\": \"abc\", \"aspect\": \"ab\", \"start\": -1, \"end\": 2, \"label\": \"positive\"}\n"); // 8: negative
    body.extend_from_slice(b"{\"text\": \"abc\", \"aspect\": \"ab\", \"start\": 2, \"end\": 0, \"label\": \"positive\"}\n"); // 9: reversed
    body.extend_from_slice("{\"text\": \"I \u{1F642} it\", \"aspect\": \"\u{1F642} \", \"start\": 2, \"end\": 4, \"label\": \"positive\"}\n".as_bytes()); // 10: code points: ok
    body.extend_from_slice("{\"text\": \"I \u{1F642} it\", \"aspect\": \"\u{1F642}\", \"start\": 2, \"end\": 5, \"label\": \"positive\"}\n".as_bytes()); // 11: span is not the aspect
    body.extend_from_slice(b"{\"text\": \"abc\", \"aspect\": \"ab\", \"start\": 0, \"end\": 2, \"label\": \"sarcastic\"}\n"); // 12: unknown label
    body.extend_from_slice(b"\n   \n"); // 13, 14: blank, skipped
    body.extend_from_slice(b"{\"text\": \"Robert'); DROP TABLE datasets; --\", \"aspect\": \"Robert\", \"start\": 0, \"end\": 6, \"label\": \"neutral\"}\n"); // 15: just text
    body.extend_from_slice(b"[1, 2]\n"); // 16: not an object
    let a = api.upload(Some(&mlops), "/v1/datasets?name=x%27%3B%20DROP%20TABLE%20jobs%3B%20--&labels=positive,negative,neutral", &body);
    assert_eq!(a.status, 201, "{:?}", a.body.get("error"));
    let errors = lines_and_reasons(&a);
    let lines: Vec<i64> = errors.iter().map(|e| e.0).collect();
    assert_eq!(lines, vec![2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 16], "{errors:#?}");
    let reason = |line: i64| errors.iter().find(|e| e.0 == line).unwrap().1.clone();
    for (line, needle) in [
        (2, "UTF-8"),
        (3, "NUL"),
        (4, "exceeds the limit"),
        (5, "not JSON"),
        (6, "\"text\""),
        (7, "\"start\""),
        (8, "negative"),
        (12, "unknown label"),
        (16, "not a JSON object"),
    ] {
        assert!(reason(line).contains(needle), "line {line}: {}", reason(line));
    }
    assert_eq!(a.body["rows_added"], 3, "lines 1, 10 and 15: {a:?}");
    assert_eq!(a.body["name"], "x'; DROP TABLE jobs; --");
    let listed = api.get(Some(&mlops), "/v1/datasets").body;
    assert_eq!(listed["datasets"][0]["name"], "x'; DROP TABLE jobs; --", "{listed}");
    assert_eq!(api.get(Some(&mlops), "/v1/jobs").status, 200, "the jobs table is still there");

    // Corpora: duplicate ids, a CSV with a BOM and CRLF, an empty file, junk Parquet.
    let csv =
        "\u{feff}id,text,aspect,start,end\r\nd1,\"Fast, quiet\",quiet,6,11\r\nd1,again,,,\r\nd2,\"'; DELETE FROM documents; --\",,,\r\nd3,short,short,0,99\r\n";
    let a = api.upload(Some(&mlops), "/v1/corpora?name=c&format=csv", csv.as_bytes());
    assert_eq!(a.status, 201, "{a:?}");
    assert_eq!(a.body["documents_added"], 2, "{a:?}");
    let errors = lines_and_reasons(&a);
    assert_eq!(errors.iter().map(|e| e.0).collect::<Vec<_>>(), vec![3, 5], "{errors:?}");
    assert!(errors[0].1.contains("duplicate id"), "{errors:?}");
    for (body, format) in [(&b""[..], "jsonl"), (&b"PAR1\x00\x00junk"[..], "parquet"), (&b"\xff\xfe not a header\n"[..], "csv")] {
        let a = api.upload(Some(&mlops), &format!("/v1/corpora?name=bad&format={format}"), body);
        assert_eq!(a.status, 400, "{format}: {a:?}");
    }
    // Parquet with the wrong schema: `text` is a number and there is no `label` column.
    // Each row is reported with its reason (good Parquet rows landing next to bad ones:
    // hostile_limits.rs).
    let parquet = wrong_schema_parquet();
    let a = api.upload(Some(&mlops), "/v1/datasets?name=pq&format=parquet", &parquet);
    assert_eq!(a.status, 201, "{a:?}");
    assert_eq!(a.body["rows_added"], 0, "{a:?}");
    let errors = lines_and_reasons(&a);
    assert_eq!(errors.iter().map(|e| e.0).collect::<Vec<_>>(), vec![1, 2, 3], "{errors:?}");
    assert!(errors.iter().all(|e| e.1 == "missing field \"label\""), "{errors:?}");
    let a = api.upload(Some(&mlops), "/v1/corpora?name=pq&format=parquet", &parquet);
    assert_eq!((a.status, a.body["documents_added"].as_i64()), (201, Some(0)), "{a:?}");
    let errors = lines_and_reasons(&a);
    assert_eq!(errors.iter().map(|e| e.0).collect::<Vec<_>>(), vec![1, 2, 3], "{errors:?}");
    assert!(errors.iter().all(|e| e.1 == "field \"text\" is not a string"), "{errors:?}");

    // A JSON body that is not what the route takes is a 400 or 422 with a message.
    for body in [json!([1, 2]), json!({ "dataset_id": "not-a-uuid", "base_model": "m" }), json!({ "dataset_id": uuid::Uuid::nil(), "base_model": "../../etc" })]
    {
        let a = api.post(&mlops, "/v1/jobs/train", &body);
        assert!(matches!(a.status, 400 | 404 | 422) && a.body["error"].is_string(), "{body}: {a:?}");
    }
    svc.stop().await;
}

/// A request and the problem it must get: method, path, key, body, status, kind, field.
type ErrorCase<'a> = (&'a str, String, Option<&'a str>, Option<&'a [u8]>, u16, &'a str, Option<&'a str>);

/// One request by hand: the status, `Content-Type`, `X-Request-Id`, `Allow` and the body as JSON.
fn raw(base: &str, method: &str, path: &str, key: Option<&str>, body: Option<&[u8]>) -> (u16, String, String, String, serde_json::Value) {
    let agent = ureq::Agent::new_with_config(ureq::Agent::config_builder().http_status_as_error(false).build());
    let mut request = ureq::http::Request::builder().method(method).uri(format!("{base}{path}")).header("X-Request-Id", format!("problem-{method}"));
    if let Some(key) = key {
        request = request.header("Authorization", format!("Bearer {key}"));
    }
    let request = request.header("Content-Type", "application/json").body(body.unwrap_or(b"").to_vec()).expect("a request");
    let mut answer = agent.run(request).expect("an answer");
    let header = |name: &str| answer.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let (content_type, id, allow) = (header("content-type"), header("x-request-id"), header("allow"));
    let text = answer.body_mut().read_to_string().unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {text}"));
    (answer.status().as_u16(), content_type, id, allow, body)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_error_answer_is_problem_json_naming_the_offending_field() {
    let svc = Service::start_in_process(&[]).await;
    let admin = svc.bootstrap_key("problems");
    let (analyst, _) = svc.key(&admin, "analyst");
    let (mlops, _) = svc.key(&admin, "mlops");
    let base = svc.api.base.clone();
    let unknown = uuid::Uuid::new_v4();
    let train_with = |hyperparameters: serde_json::Value| {
        serde_json::to_vec(&json!({ "dataset_id": unknown, "base_model": "all-minilm-l6-v2", "hyperparameters": hyperparameters })).unwrap()
    };
    let (bad_rate, unknown_name) = (train_with(json!({ "learning_rate": 5 })), train_with(json!({ "lr": 0.1 })));
    let cases: Vec<ErrorCase> = vec![
        ("GET", "/v1/jobs".into(), None, None, 401, "unauthorized", None),
        ("POST", "/v1/jobs/train".into(), Some(&analyst), Some(b"{}"), 403, "forbidden", None),
        ("GET", format!("/v1/jobs/{unknown}"), Some(&analyst), None, 404, "not-found", None),
        // Answers axum makes, not the handlers: a malformed path id, an unknown route, a
        // wrong method.
        ("GET", "/v1/jobs/not-a-uuid".into(), Some(&analyst), None, 400, "bad-request", None),
        ("GET", "/v1/no-such-thing".into(), Some(&analyst), None, 404, "not-found", None),
        ("DELETE", "/v1/jobs".into(), Some(&analyst), None, 405, "method-not-allowed", None),
        ("POST", "/v1/jobs/train".into(), Some(&mlops), Some(b"{not json"), 400, "bad-request", None),
        ("POST", "/v1/webhooks".into(), Some(&mlops), Some(br#"{"url": "https://x.example", "colour": 1}"#), 400, "bad-request", Some("colour")),
        ("POST", "/v1/webhooks".into(), Some(&mlops), Some(br#"{"url": "gopher://x"}"#), 422, "invalid", Some("url")),
        ("POST", "/v1/jobs/train".into(), Some(&mlops), Some(&bad_rate), 422, "invalid", Some("hyperparameters.learning_rate")),
        ("POST", "/v1/jobs/train".into(), Some(&mlops), Some(&unknown_name), 422, "invalid", Some("hyperparameters.lr")),
    ];
    for (method, path, key, body, status, kind, field) in cases {
        let (got, content_type, id, allow, problem) = raw(&base, method, &path, key, body);
        let what = format!("{method} {path}: {problem}");
        assert_eq!(got, status, "{what}");
        assert_eq!(content_type, "application/problem+json", "{what}");
        assert_eq!(problem["type"], format!("urn:absa:problem:{kind}").as_str(), "{what}");
        assert_eq!(problem["status"], status, "{what}");
        assert!(problem["title"].as_str().is_some_and(|t| !t.is_empty()), "{what}");
        let detail = problem["detail"].as_str().unwrap_or_else(|| panic!("no detail: {what}"));
        assert!(!detail.is_empty() && problem["error"] == detail, "{what}");
        assert_eq!((problem["request_id"].as_str(), id.as_str()), (Some(format!("problem-{method}").as_str()), format!("problem-{method}").as_str()), "{what}");
        assert_eq!(problem["field"].as_str(), field, "{what}");
        if status == 405 {
            assert!(allow.contains("GET"), "405 keeps its Allow header: {allow:?}");
        }
    }
    svc.stop().await;
}
