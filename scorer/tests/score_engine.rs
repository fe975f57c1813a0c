//! The scoring engine end to end on files: every target of every good row is scored
//! once, in input order, with the probabilities of its own inputs, through small
//! length-sorted batches and windows; bad rows land in the error file (or, as the
//! worker runs it, an in-memory error sink) with their
//! line; JSONL, CSV and Parquet in, JSONL and Parquet out.

mod common;

use std::path::Path;
use std::sync::{Arc, Mutex};

use absa_domain::readers::{self, ReaderOptions};
use absa_onnx::Precision;
use absa_scorer::engine::{self, EngineOptions, ScoreStats};
use absa_scorer::model::ScoringModel;
use absa_scorer::output::{self, CollectErrors, CollectSink, ErrorLog};
use absa_scorer::rows::FieldNames;
use absa_scorer::runtime::SessionOptions;
use absa_scorer::targets::Lexicon;
use common::{corpus, read_records, want, write_lines, ToyModel, Want, LABELS};
use serde_json::{json, Value};

fn lexicon() -> Arc<Lexicon> {
    Arc::new(Lexicon::new(["battery life", "battery", "screen", "keyboard"]).unwrap())
}

fn small_batches() -> EngineOptions {
    EngineOptions { batch_size: 3, sort_window: 7, chunk_rows: 5, tokenize_threads: 2, ..Default::default() }
}

fn run(model_dir: &Path, input: &Path, output: &Path, errors: &Path) -> ScoreStats {
    let mut model = ScoringModel::open(model_dir, Precision::Fp32, &SessionOptions::with_threads(1)).unwrap();
    let records = engine::documents(readers::open(input, &ReaderOptions { max_line_bytes: 2000, ..ReaderOptions::default() }).unwrap(), FieldNames::default());
    let sink = output::create(output, &model.labels).unwrap();
    let mut updates = 0;
    let stats =
        engine::run(&mut model, records, Some(lexicon()), &small_batches(), sink, Box::new(ErrorLog::create(Some(errors)).unwrap()), &mut |_| updates += 1)
            .unwrap();
    assert!(updates as u64 > stats.batches, "progress is reported after every batch");
    stats
}

fn check_records(records: &[serde_json::Map<String, Value>], wants: &[Want], toy: &ToyModel, id_as_text: bool) {
    assert_eq!(records.len(), wants.len());
    for (r, w) in records.iter().zip(wants) {
        let id = if id_as_text { json!(w.id.as_str().map_or_else(|| w.id.to_string(), str::to_owned)) } else { w.id.clone() };
        assert_eq!((&r["id"], r["aspect"].as_str().unwrap(), &r["start"], &r["end"]), (&id, w.aspect, &json!(w.start), &json!(w.end)));
        let expected = toy.expected(&w.text, w.start, w.end);
        let probs: Vec<f32> = match r.get("probabilities") {
            Some(p) => LABELS.iter().map(|l| p[*l].as_f64().unwrap() as f32).collect(),
            None => LABELS.iter().map(|l| r[&format!("prob_{l}")].as_f64().unwrap() as f32).collect(),
        };
        for (p, e) in probs.iter().zip(&expected) {
            assert!((p - e).abs() < 1e-5, "{}: {probs:?} vs {expected:?}", w.aspect);
        }
        let best = expected.iter().enumerate().fold((0, f32::MIN), |b, (i, &v)| if v > b.1 { (i, v) } else { b }).0;
        assert_eq!(r["label"], json!(LABELS[best]));
        assert!((r["confidence"].as_f64().unwrap() as f32 - expected[best]).abs() < 1e-5);
    }
}

#[test]
fn a_jsonl_corpus_is_scored_in_input_order_with_bad_rows_reported_by_line() {
    let dir = tempfile::tempdir().unwrap();
    let toy = ToyModel::write(dir.path(), 64);
    let (lines, wants, errors) = corpus();
    let input = dir.path().join("corpus.jsonl");
    write_lines(&input, &lines);
    let (out, err) = (dir.path().join("out.jsonl"), dir.path().join("errors.jsonl"));
    let stats = run(dir.path(), &input, &out, &err);

    check_records(&read_records(&out), &wants, &toy, false);
    let logged = read_records(&err);
    let got: Vec<(u64, String)> = logged.iter().map(|e| (e["line"].as_u64().unwrap(), e["reason"].as_str().unwrap().to_owned())).collect();
    assert_eq!(got.len(), errors.len(), "{got:?}");
    for ((line, reason), (want_line, want_reason)) in got.iter().zip(&errors) {
        assert_eq!(*line as usize, *want_line, "{reason}");
        assert!(reason.contains(want_reason), "line {line}: {reason:?} lacks {want_reason:?}");
    }
    assert_eq!(stats.rows_read, lines.len() as u64);
    assert_eq!(stats.instances_scored, wants.len() as u64);
    assert_eq!((stats.rows_rejected, stats.instances_rejected, stats.rows_without_targets), (6, 1, 1));
    assert!(stats.batches >= stats.instances_scored.div_ceil(3), "batches hold at most 3");
    assert!(stats.padded_tokens >= stats.tokens && stats.tokens > 0);
}

#[test]
fn in_memory_the_engine_hands_the_same_predictions_and_row_errors_to_its_sinks() {
    // The worker's way: records from memory, predictions and rejected rows into
    // in-memory sinks, no file on either side.
    let dir = tempfile::tempdir().unwrap();
    let toy = ToyModel::write(dir.path(), 64);
    let (lines, wants, errors) = corpus();
    let input = dir.path().join("corpus.jsonl");
    write_lines(&input, &lines);
    let records: Vec<_> =
        engine::documents(readers::open(&input, &ReaderOptions { max_line_bytes: 2000, ..ReaderOptions::default() }).unwrap(), FieldNames::default()).collect();
    let mut model = ScoringModel::open(dir.path(), Precision::Fp32, &SessionOptions::with_threads(1)).unwrap();
    let (predictions, rejected) = (Arc::new(Mutex::new(Vec::new())), Arc::new(Mutex::new(Vec::new())));
    let sinks = (Box::new(CollectSink(predictions.clone())), Box::new(CollectErrors(rejected.clone())));
    let stats = engine::run(&mut model, records.into_iter(), Some(lexicon()), &small_batches(), sinks.0, sinks.1, &mut |_| {}).unwrap();

    let predictions = predictions.lock().unwrap();
    assert_eq!(predictions.len(), wants.len());
    for (p, w) in predictions.iter().zip(&wants) {
        assert_eq!((p.aspect.as_str(), p.start, p.end), (w.aspect, Some(w.start), Some(w.end)));
        let expected = toy.expected(&w.text, w.start, w.end);
        assert!(p.probabilities.iter().zip(&expected).all(|(a, b)| (a - b).abs() < 1e-5), "{}: {:?} vs {expected:?}", w.aspect, p.probabilities);
    }
    let rejected = rejected.lock().unwrap();
    let got: Vec<(usize, &str)> = rejected.iter().map(|e| (e.line, e.reason.as_str())).collect();
    assert_eq!(got.len(), errors.len(), "{got:?}");
    for ((line, reason), (want_line, want_reason)) in got.iter().zip(&errors) {
        assert_eq!(line, want_line, "{reason}");
        assert!(reason.contains(want_reason), "line {line}: {reason:?} lacks {want_reason:?}");
    }
    assert_eq!((stats.rows_rejected, stats.instances_rejected), (6, 1));
}

#[test]
fn csv_in_parquet_out_keeps_ids_as_text_and_every_class_column() {
    let dir = tempfile::tempdir().unwrap();
    let toy = ToyModel::write(dir.path(), 64);
    let input = dir.path().join("corpus.csv");
    std::fs::write(
        &input,
        "id,text,aspect,start,end\n1,\"The screen, sadly, is dim\",screen,4,10\n2,\"Fan noise; fan speed\",fan,,\n3,no target here,,,\n4,\"multi\nline battery text\",battery,11,18\n",
    )
    .unwrap();
    let out = dir.path().join("out.parquet");
    let stats = run(dir.path(), &input, &out, &dir.path().join("errors.jsonl"));
    assert_eq!((stats.rows_read, stats.instances_scored, stats.rows_without_targets), (4, 3, 1));
    let records = read_records(&out);
    let wants = [want(json!("1"), "The screen, sadly, is dim", "screen", 4), want(json!("4"), "multi\nline battery text", "battery", 11)];
    // Row 2 ("Fan noise; fan speed", aspect "fan" without offsets) has one exact match.
    assert_eq!(records.len(), 3);
    assert_eq!((&records[1]["aspect"], &records[1]["start"], &records[1]["line"]), (&json!("fan"), &json!(11), &json!(3)));
    check_records(&[records[0].clone(), records[2].clone()], &wants, &toy, true);
    assert_eq!(records[2]["line"], json!(5), "a record's line is where it starts");
}

#[test]
fn parquet_input_is_scored_like_jsonl() {
    use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::parser::parse_message_type;

    let dir = tempfile::tempdir().unwrap();
    let toy = ToyModel::write(dir.path(), 64);
    let input = dir.path().join("corpus.parquet");
    let schema =
        Arc::new(parse_message_type("message c { required int64 id; required binary text (UTF8); optional int64 start; optional int64 end; }").unwrap());
    let mut writer = SerializedFileWriter::new(std::fs::File::create(&input).unwrap(), schema, Default::default()).unwrap();
    let mut rg = writer.next_row_group().unwrap();
    let mut col = rg.next_column().unwrap().unwrap();
    col.typed::<Int64Type>().write_batch(&[10, 11], None, None).unwrap();
    col.close().unwrap();
    let mut col = rg.next_column().unwrap().unwrap();
    let texts = [ByteArray::from("great keyboard"), ByteArray::from("the screen and the battery")];
    col.typed::<ByteArrayType>().write_batch(&texts, None, None).unwrap();
    col.close().unwrap();
    for values in [[6i64], [14]] {
        let mut col = rg.next_column().unwrap().unwrap();
        col.typed::<Int64Type>().write_batch(&values, Some(&[1, 0]), None).unwrap();
        col.close().unwrap();
    }
    rg.close().unwrap();
    writer.close().unwrap();

    let out = dir.path().join("out.jsonl");
    let stats = run(dir.path(), &input, &out, &dir.path().join("errors.jsonl"));
    assert_eq!(stats.instances_scored, 3);
    let wants = [
        want(json!(10), "great keyboard", "keyboard", 6),
        want(json!(11), "the screen and the battery", "screen", 4),
        want(json!(11), "the screen and the battery", "battery", 19),
    ];
    check_records(&read_records(&out), &wants, &toy, false);
}

#[test]
fn a_failing_output_stops_the_run_with_the_writer_error() {
    let dir = tempfile::tempdir().unwrap();
    ToyModel::write(dir.path(), 64);
    let (lines, _, _) = corpus();
    let input = dir.path().join("corpus.jsonl");
    write_lines(&input, &lines);
    // Every write to /dev/full fails with "no space left on device".
    let out = dir.path().join("out.jsonl");
    std::os::unix::fs::symlink("/dev/full", &out).unwrap();
    let mut model = ScoringModel::open(dir.path(), Precision::Fp32, &SessionOptions::with_threads(1)).unwrap();
    let records = engine::documents(readers::open(&input, &ReaderOptions { max_line_bytes: 2000, ..ReaderOptions::default() }).unwrap(), FieldNames::default());
    let sink = output::create(&out, &model.labels).unwrap();
    let err = engine::run(&mut model, records, Some(lexicon()), &small_batches(), sink, Box::new(ErrorLog::create(None).unwrap()), &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("No space left on device"), "{err}");
}
