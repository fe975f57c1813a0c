//! `absa datasets` and `absa corpora`: the rows a team uploads (labelled rows that train
//! models, documents that scoring jobs read), their listings and their row errors.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};

use crate::client::{pages, seg, Client};
use crate::output::{self, count_of, fields, get, list, show, table, time};
use crate::{exit, name_of};

#[derive(Subcommand)]
pub enum DatasetCmd {
    /// List the team's datasets, newest first
    List(ListArgs),
    /// Show a dataset: rows per split, labels
    Get {
        /// Dataset id or name
        dataset: String,
    },
    /// Append labelled rows (text, aspect, start, end, label) to a dataset, created if new (mlops)
    Upload {
        /// File to upload (jsonl, csv or parquet)
        file: PathBuf,
        /// Dataset name
        #[arg(long)]
        name: String,
        /// Split the rows go to [default: the server's]
        #[arg(long, value_parser = ["train", "validation", "test"])]
        split: Option<String>,
        /// File format [default: from the extension]
        #[arg(long, value_enum)]
        format: Option<FileFormat>,
        /// Column holding the text
        #[arg(long, value_name = "COLUMN")]
        text_column: Option<String>,
        /// Column holding the aspect
        #[arg(long, value_name = "COLUMN")]
        aspect_column: Option<String>,
        /// Column holding the span start
        #[arg(long, value_name = "COLUMN")]
        start_column: Option<String>,
        /// Column holding the span end
        #[arg(long, value_name = "COLUMN")]
        end_column: Option<String>,
        /// Column naming a target without offsets (stance toward something the text may not mention)
        #[arg(long, value_name = "COLUMN")]
        target_column: Option<String>,
        /// Column holding the label
        #[arg(long, value_name = "COLUMN")]
        label_column: Option<String>,
        #[command(flatten)]
        show: ShowErrors,
    },
    /// Every row error of the dataset's uploads, by line (every page)
    Errors {
        /// Dataset id or name
        dataset: String,
    },
}

#[derive(Subcommand)]
pub enum CorpusCmd {
    /// List the team's corpora, newest first
    List(ListArgs),
    /// Show a corpus
    Get {
        /// Corpus id or name
        corpus: String,
    },
    /// Append documents (text, optional id, aspect, start, end, target, published_at) to a corpus, created if new
    Upload {
        /// File to upload (jsonl, csv or parquet)
        file: PathBuf,
        /// Corpus name
        #[arg(long)]
        name: String,
        /// File format [default: from the extension]
        #[arg(long, value_enum)]
        format: Option<FileFormat>,
        #[command(flatten)]
        show: ShowErrors,
    },
    /// Every row error of the corpus's uploads, by line (every page)
    Errors {
        /// Corpus id or name
        corpus: String,
    },
}

#[derive(Args)]
pub struct ListArgs {
    /// Only the one of this name
    #[arg(long)]
    name: Option<String>,
    /// Only those created at or after this time (RFC 3339)
    #[arg(long, value_name = "TIME")]
    created_after: Option<String>,
    /// Only those created before this time (RFC 3339)
    #[arg(long, value_name = "TIME")]
    created_before: Option<String>,
    /// At most this many [default: all, page after page]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    limit: Option<u32>,
}

impl ListArgs {
    fn query(&self) -> Vec<(&'static str, String)> {
        [("name", &self.name), ("created_after", &self.created_after), ("created_before", &self.created_before)]
            .into_iter()
            .filter_map(|(k, v)| v.clone().map(|v| (k, v)))
            .collect()
    }
}

#[derive(Args)]
pub struct ShowErrors {
    /// How many row errors to print
    #[arg(long, default_value_t = 10, value_name = "N")]
    show_errors: usize,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum FileFormat {
    Jsonl,
    Csv,
    Parquet,
}

pub fn run_datasets(c: &Client, cmd: DatasetCmd) -> Result<ExitCode> {
    match cmd {
        DatasetCmd::List(args) => {
            let items = pages(c, "/v1/datasets", &args.query(), "datasets", args.limit.map(|n| n as usize))?;
            show(&json!({ "datasets": items }), datasets_table);
        }
        DatasetCmd::Get { dataset } => {
            let id = id_of(c, Named::Dataset, &dataset)?;
            show(&c.get(&format!("/v1/datasets/{}", seg(&id)), &[])?, dataset_details);
        }
        DatasetCmd::Upload { file, name, split, format, text_column, aspect_column, start_column, end_column, target_column, label_column, show } => {
            let mut query: Vec<(&str, String)> = split.map(|s| ("split", s)).into_iter().collect();
            for (k, v) in [
                ("text_column", text_column),
                ("aspect_column", aspect_column),
                ("start_column", start_column),
                ("end_column", end_column),
                ("target_column", target_column),
                ("label_column", label_column),
            ] {
                query.extend(v.map(|v| (k, v)));
            }
            upload(c, Named::Dataset, &file, name, format, query, show.show_errors)?;
        }
        DatasetCmd::Errors { dataset } => {
            let id = id_of(c, Named::Dataset, &dataset)?;
            show_errors(c, &format!("/v1/datasets/{}/errors", seg(&id)))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn run_corpora(c: &Client, cmd: CorpusCmd) -> Result<ExitCode> {
    match cmd {
        CorpusCmd::List(args) => {
            let items = pages(c, "/v1/corpora", &args.query(), "corpora", args.limit.map(|n| n as usize))?;
            show(&json!({ "corpora": items }), corpora_table);
        }
        CorpusCmd::Get { corpus } => {
            let id = id_of(c, Named::Corpus, &corpus)?;
            show(&c.get(&format!("/v1/corpora/{}", seg(&id)), &[])?, |v| {
                fields(&[("id", get(v, "id")), ("name", get(v, "name")), ("documents", count_of(v, "documents")), ("created", time(v, "created_at"))])
            });
        }
        CorpusCmd::Upload { file, name, format, show } => upload(c, Named::Corpus, &file, name, format, Vec::new(), show.show_errors)?,
        CorpusCmd::Errors { corpus } => {
            let id = id_of(c, Named::Corpus, &corpus)?;
            show_errors(c, &format!("/v1/corpora/{}/errors", seg(&id)))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Every row error at `path` (a dataset's, corpus's or job's), one line each.
pub fn show_errors(c: &Client, path: &str) -> Result<()> {
    let errors = pages(c, path, &[], "errors", None)?;
    show(&json!({ "errors": errors }), |v| {
        let rows: Vec<Vec<String>> = list(v, "errors").iter().map(|e| vec![get(e, "line"), get(e, "reason")]).collect();
        table(&["LINE", "REASON"], &rows)
    });
    Ok(())
}

/// What a name can stand for on the command line.
#[derive(Clone, Copy)]
pub enum Named {
    Dataset,
    Corpus,
}

impl Named {
    fn word(self) -> &'static str {
        match self {
            Named::Dataset => "dataset",
            Named::Corpus => "corpus",
        }
    }

    fn listing(self) -> (&'static str, &'static str) {
        match self {
            Named::Dataset => ("/v1/datasets", "datasets"),
            Named::Corpus => ("/v1/corpora", "corpora"),
        }
    }
}

/// `given` when it is an id, else the id of the team's dataset or corpus of that name
/// (the listing's `name` filter); an unknown name is a not-found error (exit code 4).
pub fn id_of(c: &Client, kind: Named, given: &str) -> Result<String> {
    let is_uuid = given.len() == 36 && given.chars().enumerate().all(|(i, ch)| if [8, 13, 18, 23].contains(&i) { ch == '-' } else { ch.is_ascii_hexdigit() });
    if is_uuid {
        return Ok(given.to_owned());
    }
    let (path, field) = kind.listing();
    let page = c.get(path, &[("name", given.to_owned())])?;
    match page.get(field).and_then(Value::as_array).and_then(|items| items.first()) {
        Some(item) => Ok(get(item, "id")),
        None => Err(exit::Refused::not_found(format!("no {} named {given:?} in the team", kind.word())).into()),
    }
}

fn format_of(path: &Path, given: Option<FileFormat>) -> Result<FileFormat> {
    if let Some(f) = given {
        return Ok(f);
    }
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    Ok(match ext.as_str() {
        "jsonl" | "ndjson" => FileFormat::Jsonl,
        "csv" => FileFormat::Csv,
        "parquet" | "pq" => FileFormat::Parquet,
        _ => bail!("cannot tell the format of {} from its extension; pass --format jsonl|csv|parquet", path.display()),
    })
}

/// Streams `path` to the dataset or corpus `name` with a progress bar; prints what was
/// added and the first `show_errors` row errors.
fn upload(c: &Client, kind: Named, path: &Path, name: String, format: Option<FileFormat>, mut query: Vec<(&str, String)>, show_errors: usize) -> Result<()> {
    let format = format_of(path, format)?;
    query.insert(0, ("name", name));
    query.insert(1, ("format", name_of(format)));
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let len = file.metadata().with_context(|| format!("reading {}", path.display()))?.len();
    // Checked before sending: a server refusing a large body mid-stream closes the
    // connection, and the client would only see a broken pipe instead of the reason.
    let me = c.get("/v1/me", &[])?;
    if let Some(cap) = me.get("max_upload_bytes").and_then(Value::as_u64) {
        if len > cap {
            bail!("{}: {len} bytes; the API accepts uploads of at most {cap} bytes (its api.max_upload_bytes)", path.display());
        }
    }
    if matches!(kind, Named::Dataset) && me.get("role").and_then(Value::as_str) == Some("analyst") {
        return Err(exit::Refused::key("uploading datasets needs the mlops role; this key has analyst").into());
    }
    let content_type = match format {
        FileFormat::Jsonl => "application/x-ndjson",
        FileFormat::Csv => "text/csv",
        FileFormat::Parquet => "application/vnd.apache.parquet",
    };

    let bar = ProgressBar::new(len)
        .with_style(ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}").expect("valid template").progress_chars("=> "));
    bar.set_message(format!("uploading {}", path.display()));
    let reader = EndNotice { inner: bar.wrap_read(file), bar: bar.clone() };
    let result = c.upload(kind.listing().0, &query, content_type, len, reader);
    bar.finish_and_clear();
    let v = result?.body;
    show(&v, |v| {
        let (id, added, total, unit) = match kind {
            Named::Dataset => ("dataset_id", "rows_added", "rows_total", "rows"),
            Named::Corpus => ("corpus_id", "documents_added", "documents_total", "documents"),
        };
        let mut s = format!("{} {} ({}): {} {unit} added, {} in total\n", kind.word(), get(v, "name"), get(v, id), count_of(v, added), count_of(v, total));
        let errors = list(v, "errors");
        let error_count = v.get("error_count").and_then(Value::as_i64).unwrap_or(errors.len() as i64);
        s.push_str(&output::row_errors(errors, error_count, show_errors));
        s
    });
    Ok(())
}

/// Says "waiting for the server" on the bar once the whole file has been read.
struct EndNotice<R> {
    inner: R,
    bar: ProgressBar,
}

impl<R: Read> Read for EndNotice<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.bar.set_message("sent; waiting for the server");
        }
        Ok(n)
    }
}

/// Rows per split (`{"train": 60}`) as `train 60`, or a total as it is.
fn rows_cell(rows: Option<&Value>) -> String {
    match rows {
        Some(Value::Object(m)) if !m.is_empty() => m.iter().map(|(k, n)| format!("{k} {}", output::cell(n))).collect::<Vec<_>>().join(", "),
        Some(n @ Value::Number(_)) => output::cell(n),
        _ => "-".into(),
    }
}

fn datasets_table(v: &Value) -> String {
    let rows: Vec<Vec<String>> = list(v, "datasets")
        .iter()
        .map(|d| vec![get(d, "id"), get(d, "name"), rows_cell(d.get("rows")), get(d, "label_names"), time(d, "created_at")])
        .collect();
    table(&["ID", "NAME", "ROWS", "LABELS", "CREATED"], &rows)
}

fn dataset_details(d: &Value) -> String {
    fields(&[
        ("id", get(d, "id")),
        ("name", get(d, "name")),
        ("rows", rows_cell(d.get("rows"))),
        ("labels", get(d, "label_names")),
        ("created", time(d, "created_at")),
    ])
}

fn corpora_table(v: &Value) -> String {
    let rows: Vec<Vec<String>> =
        list(v, "corpora").iter().map(|d| vec![get(d, "id"), get(d, "name"), count_of(d, "documents"), time(d, "created_at")]).collect();
    table(&["ID", "NAME", "DOCUMENTS", "CREATED"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_come_from_extensions() {
        assert!(matches!(format_of(Path::new("a.JSONL"), None).unwrap(), FileFormat::Jsonl));
        assert!(matches!(format_of(Path::new("a.csv"), None).unwrap(), FileFormat::Csv));
        assert!(matches!(format_of(Path::new("a.parquet"), None).unwrap(), FileFormat::Parquet));
        assert!(matches!(format_of(Path::new("a.txt"), Some(FileFormat::Csv)).unwrap(), FileFormat::Csv));
        assert!(format_of(Path::new("a.txt"), None).unwrap_err().to_string().contains("--format"));
    }

    #[test]
    fn dataset_rows_show_per_split_or_in_total() {
        assert_eq!(rows_cell(Some(&json!({"train": 60, "test": 5}))), "test 5, train 60");
        assert_eq!(rows_cell(Some(&json!(60))), "60");
        assert_eq!(rows_cell(None), "-");
    }
}
