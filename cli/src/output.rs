//! Turning JSON answers into tables, CSV and lines for people, and writing them out.

use std::io::Write;
use std::sync::OnceLock;

use clap::ValueEnum;
use serde_json::Value;

/// How answers are printed (`-o`): tables and `key: value` lines for people, the API's
/// JSON answer as it came, or the tables as CSV for spreadsheets and scripts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    #[default]
    Table,
    Json,
    Csv,
}

/// Set once from `-o` before any command runs: every table the commands build is
/// written in it, so no rendering function needs to know about CSV.
static FORMAT: OnceLock<Format> = OnceLock::new();

pub fn set_format(format: Format) {
    let _ = FORMAT.set(format);
}

pub fn format() -> Format {
    FORMAT.get().copied().unwrap_or_default()
}

/// Writes to standard output; a closed pipe (`absa jobs list | head`) ends the program quietly.
pub fn print(s: &str) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(s.as_bytes()).and_then(|_| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: writing output: {e}");
        std::process::exit(1);
    }
}

pub fn print_json(v: &Value) {
    print(&format!("{}\n", serde_json::to_string_pretty(v).expect("JSON values serialize")));
}

/// The API's answer under `-o json`, else `render` of it (a table, CSV or lines).
pub fn show(v: &Value, render: impl FnOnce(&Value) -> String) {
    if format() == Format::Json {
        print_json(v)
    } else {
        print(&render(v))
    }
}

/// RFC 4180 CSV: a header line, then one line per row; cells with a comma, quote or
/// line break are quoted, quotes doubled.
pub fn csv(headers: &[&str], rows: &[Vec<String>]) -> String {
    let quote = |cell: &str| {
        if cell.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", cell.replace('"', "\"\""))
        } else {
            cell.to_owned()
        }
    };
    let line = |cells: &mut dyn Iterator<Item = &str>| cells.map(quote).collect::<Vec<_>>().join(",") + "\n";
    let mut out = line(&mut headers.iter().copied());
    for row in rows {
        out.push_str(&line(&mut row.iter().map(String::as_str)));
    }
    out
}

/// A table in the format `-o` chose: CSV under `-o csv`, else aligned text.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    if format() == Format::Csv {
        return csv(headers, rows);
    }
    text_table(headers, rows)
}

/// A left-aligned table, columns two spaces apart; numbers are right-aligned.
fn text_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let cols = headers.len();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(cols) {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    // A column is numeric when every non-empty cell parses as a number.
    let numeric: Vec<bool> = (0..cols)
        .map(|i| {
            // Trailing `%`, `*` (best of a row) and padding do not count.
            let mut cells = rows.iter().filter_map(|r| r.get(i)).map(|c| c.trim_end_matches(['%', '*', ' '])).filter(|c| *c != "-" && !c.is_empty()).peekable();
            cells.peek().is_some() && cells.all(|c| c.replace(',', "").parse::<f64>().is_ok())
        })
        .collect();
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>, header: bool| {
        let mut s = String::new();
        for (i, cell) in cells.enumerate().take(cols) {
            let pad = widths[i] - cell.chars().count();
            if i > 0 {
                s.push_str("  ");
            }
            if numeric[i] && !header {
                s.push_str(&" ".repeat(pad));
                s.push_str(cell);
            } else {
                s.push_str(cell);
                if i + 1 < cols {
                    s.push_str(&" ".repeat(pad));
                }
            }
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(&mut headers.iter().copied(), true);
    for row in rows {
        line(&mut row.iter().map(String::as_str), false);
    }
    out
}

/// `key: value` lines with the values aligned (under `-o csv`, a FIELD,VALUE table).
pub fn fields(pairs: &[(&str, String)]) -> String {
    if format() == Format::Csv {
        let rows: Vec<Vec<String>> = pairs.iter().map(|(k, v)| vec![(*k).to_owned(), v.clone()]).collect();
        return csv(&["FIELD", "VALUE"], &rows);
    }
    let width = pairs.iter().map(|(k, _)| k.chars().count()).max().unwrap_or(0);
    pairs.iter().map(|(k, v)| format!("{:<w$}  {}\n", format!("{k}:"), v, w = width + 1)).collect()
}

/// A JSON value as a cell: strings bare, null as `-`, numbers short, the rest compact JSON.
pub fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => i.to_string(),
            (None, Some(f)) => float(f),
            _ => n.to_string(),
        },
        Value::Bool(b) => if *b { "yes" } else { "no" }.into(),
        Value::Array(a) if a.iter().all(Value::is_string) => {
            if a.is_empty() {
                "-".into()
            } else {
                a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(",")
            }
        }
        other => other.to_string(),
    }
}

/// The field `key` of an object as a cell (`-` when missing).
pub fn get(v: &Value, key: &str) -> String {
    cell(v.get(key).unwrap_or(&Value::Null))
}

/// Metric-like floats with four decimals, trailing zeros kept for alignment.
pub fn float(f: f64) -> String {
    if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e15 {
        format!("{f:.0}")
    } else {
        format!("{f:.4}")
    }
}

/// A float field with four decimals, `-` when missing.
pub fn metric(v: &Value, key: &str) -> String {
    match v.get(key).and_then(Value::as_f64) {
        Some(f) => format!("{f:.4}"),
        None => "-".into(),
    }
}

/// Progress 0..1 as a percentage.
pub fn percent(progress: Option<f64>) -> String {
    match progress {
        Some(p) => format!("{:.0}%", (p * 100.0).clamp(0.0, 100.0)),
        None => "-".into(),
    }
}

/// An RFC 3339 timestamp to the second, in the zone the server wrote it in:
/// `2026-01-02T03:04:05.123456Z` → `2026-01-02 03:04:05Z`.
pub fn time(v: &Value, key: &str) -> String {
    let Some(s) = v.get(key).and_then(Value::as_str) else { return "-".into() };
    if s.len() < 19 || !s.is_char_boundary(19) || s.as_bytes().get(10) != Some(&b'T') {
        return s.to_owned();
    }
    let (date_time, rest) = s.split_at(19);
    let rest = rest.trim_start_matches(|c: char| c == '.' || c.is_ascii_digit());
    let zone = if rest == "+00:00" { "Z" } else { rest };
    format!("{}{}", date_time.replacen('T', " ", 1), zone)
}

/// Integers with thousands separators: 1234567 → 1,234,567.
pub fn count(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

/// A count field with separators, `-` when missing.
pub fn count_of(v: &Value, key: &str) -> String {
    v.get(key).and_then(Value::as_i64).map(count).unwrap_or_else(|| "-".into())
}

/// Cuts long text (an error in a table) to `max` characters.
pub fn truncate(s: &str, max: usize) -> String {
    let s = s.lines().next().unwrap_or("");
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
    t.push('…');
    t
}

/// The items of `key` in an object (`{"jobs": [...]}`), empty when missing.
pub fn list<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key).and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
}

/// Upload row errors: `  line 17: reason` for the first `show`, then how many more.
pub fn row_errors(errors: &[Value], error_count: i64, show: usize) -> String {
    let mut out = String::new();
    if error_count == 0 && errors.is_empty() {
        return out;
    }
    let total = error_count.max(errors.len() as i64);
    out.push_str(&format!("{} row error{}:\n", count(total), if total == 1 { "" } else { "s" }));
    for e in errors.iter().take(show) {
        out.push_str(&format!("  line {}: {}\n", get(e, "line"), get(e, "reason")));
    }
    let shown = errors.len().min(show) as i64;
    if total > shown {
        out.push_str(&format!("  … {} more\n", count(total - shown)));
    }
    out
}

/// Whether a job state is final.
pub fn is_final(state: &str) -> bool {
    matches!(state, "succeeded" | "failed" | "cancelled")
}

/// One line for a job while it runs: `running 45%`, plus `shards 3/10` for score jobs.
pub fn job_status(job: &Value) -> String {
    let state = job.get("state").and_then(Value::as_str).unwrap_or("?");
    let mut s = format!("{state} {}", percent(job.get("progress").and_then(Value::as_f64)));
    if let Some(sh) = job.get("shards").filter(|v| v.is_object()) {
        let n = |k: &str| sh.get(k).and_then(Value::as_i64).unwrap_or(0);
        s.push_str(&format!(" · shards {}/{} done", n("succeeded"), n("total")));
        let mut more = Vec::new();
        for k in ["running", "queued", "failed"] {
            if n(k) > 0 {
                more.push(format!("{} {k}", n(k)));
            }
        }
        if !more.is_empty() {
            s.push_str(&format!(" ({})", more.join(", ")));
        }
    }
    s
}

/// A comparison: one row per metric, one column per model (its id's first 8
/// characters), the best value of each row marked `*` (lowest for losses).
pub fn compare(ids: &[String], metrics: &serde_json::Map<String, Value>) -> String {
    let short: Vec<String> = ids.iter().map(|id| id.chars().take(8).collect()).collect();
    let unique = short.iter().collect::<std::collections::HashSet<_>>().len() == short.len();
    let columns: Vec<&str> = if unique { short.iter().map(String::as_str).collect() } else { ids.iter().map(String::as_str).collect() };
    let mut headers = vec!["METRIC"];
    headers.extend(columns);
    let mut names: Vec<&String> = metrics.keys().collect();
    names.sort();
    let rows: Vec<Vec<String>> = names
        .into_iter()
        .map(|name| {
            let values: Vec<Option<f64>> = ids.iter().map(|id| metrics[name].get(id).and_then(Value::as_f64)).collect();
            let lower_is_better = name.contains("loss");
            let best = values.iter().flatten().copied().fold(None, |acc: Option<f64>, v| match acc {
                Some(a) if (lower_is_better && a <= v) || (!lower_is_better && a >= v) => Some(a),
                _ => Some(v),
            });
            let several = values.iter().flatten().count() > 1;
            let mut row = vec![name.clone()];
            row.extend(values.iter().map(|v| match v {
                Some(v) if several && Some(*v) == best => format!("{v:.4}*"),
                Some(v) => format!("{v:.4} "),
                None => "- ".into(),
            }));
            row
        })
        .collect();
    table(&headers, &rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn csv_quotes_cells_with_commas_quotes_or_line_breaks() {
        let rows = vec![vec!["d1".to_owned(), "negative,neutral".to_owned(), "say \"hi\"".to_owned(), "two\nlines".to_owned(), "-".to_owned()]];
        assert_eq!(csv(&["ID", "LABELS", "TEXT", "NOTE", "X"], &rows), "ID,LABELS,TEXT,NOTE,X\nd1,\"negative,neutral\",\"say \"\"hi\"\"\",\"two\nlines\",-\n");
    }

    #[test]
    fn tables_align_text_left_and_numbers_right() {
        let rows =
            vec![vec!["a1".to_string(), "train".into(), "5%".into(), "running".into()], vec!["b22222".to_string(), "score".into(), "100%".into(), "-".into()]];
        let t = table(&["ID", "KIND", "PROGRESS", "STATE"], &rows);
        assert_eq!(
            t,
            "ID      KIND   PROGRESS  STATE\n\
             a1      train        5%  running\n\
             b22222  score      100%  -\n"
        );
        assert_eq!(table(&["A", "B"], &[]), "A  B\n");
    }

    #[test]
    fn cells_and_fields() {
        assert_eq!(cell(&json!(null)), "-");
        assert_eq!(cell(&json!("x")), "x");
        assert_eq!(cell(&json!(3)), "3");
        assert_eq!(cell(&json!(0.123456)), "0.1235");
        assert_eq!(cell(&json!(true)), "yes");
        assert_eq!(cell(&json!(["production", "candidate"])), "production,candidate");
        assert_eq!(cell(&json!([])), "-");
        assert_eq!(cell(&json!({"lr": 0.001})), r#"{"lr":0.001}"#);
        assert_eq!(get(&json!({}), "missing"), "-");
        assert_eq!(fields(&[("id", "x".into()), ("state", "queued".into())]), "id:     x\nstate:  queued\n");
        assert_eq!(metric(&json!({"f1": 0.5}), "f1"), "0.5000");
        assert_eq!(metric(&json!({"f1": null}), "f1"), "-");
    }

    #[test]
    fn times_percentages_and_counts() {
        let v = json!({"a": "2026-01-02T03:04:05.123456Z", "b": "2026-01-02T03:04:05+00:00", "c": "2026-01-02T03:04:05+02:00", "d": "soon"});
        assert_eq!(time(&v, "a"), "2026-01-02 03:04:05Z");
        assert_eq!(time(&v, "b"), "2026-01-02 03:04:05Z");
        assert_eq!(time(&v, "c"), "2026-01-02 03:04:05+02:00");
        assert_eq!(time(&v, "d"), "soon");
        assert_eq!(time(&v, "e"), "-");
        assert_eq!(percent(Some(0.456)), "46%");
        assert_eq!(percent(Some(1.0)), "100%");
        assert_eq!(percent(None), "-");
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1000), "1,000");
        assert_eq!(count(-1234567), "-1,234,567");
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(truncate("a long error message\nsecond line", 8), "a long …");
    }

    #[test]
    fn row_errors_show_the_first_and_count_the_rest() {
        let errors = vec![json!({"line": 3, "reason": "missing field `label`"}), json!({"line": 9, "reason": "end before start"})];
        assert_eq!(row_errors(&[], 0, 10), "");
        assert_eq!(row_errors(&errors, 2, 10), "2 row errors:\n  line 3: missing field `label`\n  line 9: end before start\n");
        assert_eq!(row_errors(&errors, 1500, 1), "1,500 row errors:\n  line 3: missing field `label`\n  … 1,499 more\n");
    }

    #[test]
    fn job_status_lines() {
        assert_eq!(job_status(&json!({"state": "queued", "progress": 0.0})), "queued 0%");
        let score = json!({"state": "running", "progress": 0.3,
            "shards": {"total": 10, "succeeded": 3, "failed": 0, "running": 2, "queued": 5}});
        assert_eq!(job_status(&score), "running 30% · shards 3/10 done (2 running, 5 queued)");
        assert!(is_final("cancelled") && !is_final("dispatched"));
    }

    #[test]
    fn comparisons_mark_the_best_model_per_metric() {
        let ids = vec!["aaaaaaaa-1".to_string(), "bbbbbbbb-2".to_string()];
        let metrics = json!({
            "validation_macro_f1": {"aaaaaaaa-1": 0.8, "bbbbbbbb-2": 0.85},
            "validation_loss": {"aaaaaaaa-1": 0.4, "bbbbbbbb-2": 0.5},
            "test_accuracy": {"aaaaaaaa-1": 0.9}
        });
        let t = compare(&ids, metrics.as_object().unwrap());
        assert_eq!(
            t,
            "METRIC               aaaaaaaa  bbbbbbbb\n\
             test_accuracy         0.9000         -\n\
             validation_loss       0.4000*   0.5000\n\
             validation_macro_f1   0.8000    0.8500*\n"
        );
    }
}
