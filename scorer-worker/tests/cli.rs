//! The `absa-scorer` binary's local mode: one JSON summary line on stdout, the rejected
//! rows in their file, and a clear refusal of a graph the model directory lacks.

#[path = "../../scorer/tests/common/mod.rs"]
mod common;

use std::path::PathBuf;

use common::{corpus, read_records, write_lines, ToyModel};
use serde_json::{json, Value};

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_absa-scorer"))
}

#[test]
fn the_cli_prints_a_one_line_summary_and_refuses_a_missing_graph() {
    let dir = tempfile::tempdir().unwrap();
    ToyModel::write(dir.path(), 64);
    let (lines, wants, errors) = corpus();
    let input = dir.path().join("corpus.jsonl");
    write_lines(&input, &lines);
    let lexicon = dir.path().join("lexicon.txt");
    std::fs::write(&lexicon, "# aspect terms\nbattery life\nbattery\n\nscreen\nkeyboard\n").unwrap();
    let out = dir.path().join("out.parquet");
    let run = std::process::Command::new(bin())
        .args(["score", "--model"])
        .arg(dir.path())
        .arg("--input")
        .arg(&input)
        .arg("--output")
        .arg(&out)
        .arg("--targets")
        .arg(&lexicon)
        .args(["--max-line-bytes", "2000", "--threads", "1"])
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let stdout = String::from_utf8(run.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let summary: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(summary["rows_read"], json!(lines.len()));
    assert_eq!(summary["instances_scored"], json!(wants.len()));
    assert_eq!(summary["rows_rejected"], json!(6));
    for key in ["instances_per_second", "wall_seconds", "peak_rss_mib"] {
        assert!(summary[key].as_f64().unwrap() > 0.0, "{key}: {summary}");
    }
    let error_file = PathBuf::from(summary["errors"].as_str().unwrap());
    assert_eq!(read_records(&error_file).len(), errors.len());
    assert_eq!(read_records(&out).len(), wants.len());

    let int8 = std::process::Command::new(bin())
        .args(["score", "--int8", "--model"])
        .arg(dir.path())
        .arg("--input")
        .arg(&input)
        .arg("--output")
        .arg(dir.path().join("int8.jsonl"))
        .output()
        .unwrap();
    assert_eq!(int8.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&int8.stderr);
    assert!(stderr.contains("no int8 graph"), "{stderr}");
}
