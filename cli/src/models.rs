//! `absa models` (trained model versions: list, get, compare, promote, download) and
//! `absa base-models` (what the trainers can fine-tune).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::client::{pages, seg, ApiError, Client};
use crate::datasets::{id_of, Named};
use crate::output::{self, fields, get, list, metric, show, table, time};
use crate::{exit, name_of};

#[derive(Subcommand)]
pub enum ModelCmd {
    /// List model versions, newest first
    List {
        /// Only versions of this registered model
        #[arg(long, value_name = "NAME")]
        registered_model: Option<String>,
        /// Only versions fine-tuned from this base model
        #[arg(long)]
        base_model: Option<String>,
        /// Only versions trained on this dataset (id or name)
        #[arg(long)]
        dataset: Option<String>,
        /// At most this many [default: all, page after page]
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        limit: Option<u32>,
    },
    /// Show a model version: metrics, lineage, aliases
    Get { version: String },
    /// Compare model versions metric by metric
    Compare {
        #[arg(num_args = 2.., required = true, value_name = "VERSION")]
        versions: Vec<String>,
    },
    /// Promote a model version to an alias if it beats the alias's current version;
    /// exit code 7 when refused
    Promote {
        version: String,
        #[arg(long, default_value = "production")]
        alias: String,
        #[arg(long, value_enum, default_value_t = Metric::MacroF1)]
        metric: Metric,
    },
    /// Download a model version's ONNX bundle or checkpoint: one tar, streamed, its
    /// sha256 checked against the API's ETag
    Download {
        version: String,
        /// Output file
        file: PathBuf,
        /// onnx: fp32 and int8 graphs, tokenizer, manifest; checkpoint: Hugging Face layout
        #[arg(long, value_enum, default_value = "onnx")]
        artifact: Artifact,
    },
}

#[derive(Subcommand)]
pub enum BaseModelCmd {
    /// List the base models the trainers advertise
    List,
}

/// The metric a promotion or a sweep is decided by: the API's own type.
pub use absa_jobs::PromotionMetric as Metric;

#[derive(Clone, Copy, ValueEnum)]
pub enum Artifact {
    Onnx,
    Checkpoint,
}

pub fn run(c: &Client, cmd: ModelCmd) -> Result<ExitCode> {
    match cmd {
        ModelCmd::List { registered_model, base_model, dataset, limit } => {
            let dataset = dataset.map(|d| id_of(c, Named::Dataset, &d)).transpose()?;
            let query: Vec<(&str, String)> =
                [("model", registered_model), ("base_model", base_model), ("dataset_id", dataset)].into_iter().filter_map(|(k, v)| v.map(|v| (k, v))).collect();
            let models = pages(c, "/v1/models", &query, "models", limit.map(|n| n as usize))?;
            show(&json!({ "models": models }), models_table);
        }
        ModelCmd::Get { version } => show(&c.get(&format!("/v1/models/{}", seg(&version)), &[])?, model_details),
        ModelCmd::Compare { versions } => {
            let v = c.get("/v1/models/compare", &[("ids", versions.join(","))])?;
            show(&v, |v| compare_view(v, &versions));
        }
        ModelCmd::Promote { version, alias, metric } => return promote(c, &version, &alias, metric),
        ModelCmd::Download { version, file, artifact } => download(c, &version, artifact, &file)?,
    }
    Ok(ExitCode::SUCCESS)
}

pub fn run_base_models(c: &Client, cmd: BaseModelCmd) -> Result<ExitCode> {
    match cmd {
        BaseModelCmd::List => show(&c.get("/v1/base-models", &[])?, |v| {
            let rows: Vec<Vec<String>> = list(v, "base_models")
                .iter()
                .map(|m| vec![get(m, "name"), get(m, "model_type"), output::count_of(m, "parameters"), time(m, "advertised_at")])
                .collect();
            table(&["NAME", "TYPE", "PARAMETERS", "ADVERTISED"], &rows)
        }),
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether any of `items` has the number `key` (stance's F_avg is only there for labels
/// with against and favor: its column is shown only then).
pub fn has_metric(items: &[Value], key: &str) -> bool {
    items.iter().any(|i| i.get(key).is_some_and(Value::is_number))
}

fn models_table(v: &Value) -> String {
    let models = list(v, "models");
    let metrics_of = |m: &Value| m.get("metrics").cloned().unwrap_or(Value::Null);
    let f_avg = has_metric(&models.iter().map(metrics_of).collect::<Vec<_>>(), "validation_f_avg");
    let rows: Vec<Vec<String>> = models
        .iter()
        .map(|m| {
            let metrics = metrics_of(m);
            let mut row = vec![
                get(m, "id"),
                get(m, "model"),
                get(m, "base_model"),
                get(m, "aliases"),
                metric(&metrics, "validation_macro_f1"),
                metric(&metrics, "validation_accuracy"),
            ];
            if f_avg {
                row.push(metric(&metrics, "validation_f_avg"));
            }
            row.push(time(m, "created_at"));
            row
        })
        .collect();
    let mut heads = vec!["ID", "MODEL", "BASE_MODEL", "ALIASES", "VAL_MACRO_F1", "VAL_ACCURACY"];
    if f_avg {
        heads.push("VAL_F_AVG");
    }
    heads.push("CREATED");
    table(&heads, &rows)
}

fn model_details(m: &Value) -> String {
    let mut s = fields(&[
        ("id", get(m, "id")),
        ("model", get(m, "model")),
        ("base model", get(m, "base_model")),
        ("dataset", get(m, "dataset_id")),
        ("training job", get(m, "training_job_id")),
        ("labels", get(m, "label_names")),
        ("aliases", get(m, "aliases")),
        ("created", time(m, "created_at")),
        ("lineage", get(m, "lineage")),
    ]);
    if let Some(metrics) = m.get("metrics").and_then(Value::as_object).filter(|o| !o.is_empty()) {
        let mut names: Vec<&String> = metrics.keys().collect();
        names.sort();
        let rows: Vec<Vec<String>> = names.into_iter().map(|k| vec![k.clone(), output::cell(&metrics[k])]).collect();
        s.push('\n');
        s.push_str(&table(&["METRIC", "VALUE"], &rows));
    }
    s
}

fn compare_view(v: &Value, ids: &[String]) -> String {
    let models = list(v, "models");
    let rows: Vec<Vec<String>> = models.iter().map(|m| vec![get(m, "id"), get(m, "base_model"), get(m, "aliases"), time(m, "created_at")]).collect();
    let mut s = table(&["ID", "BASE_MODEL", "ALIASES", "CREATED"], &rows);
    s.push('\n');
    let empty = Map::new();
    s.push_str(&output::compare(ids, v.get("metrics").and_then(Value::as_object).unwrap_or(&empty)));
    s
}

fn promote(c: &Client, version_id: &str, alias: &str, metric: Metric) -> Result<ExitCode> {
    let body = json!({ "alias": alias, "metric": name_of(metric) });
    let path = format!("/v1/models/{}/promote", seg(version_id));
    let (v, promoted) = match c.post(&path, &body, &[]) {
        Ok(reply) => (reply.body, true),
        Err(e) => match e.downcast_ref::<ApiError>() {
            Some(api) if api.status == 409 && api.body.get("promoted") == Some(&Value::Bool(false)) => (api.body.clone(), false),
            _ => return Err(e),
        },
    };
    show(&v, |v| {
        let scores = match (v.get("candidate").and_then(Value::as_f64), v.get("current").and_then(Value::as_f64)) {
            (Some(a), Some(b)) => format!(" ({}: candidate {a:.4}, current {b:.4})", name_of(metric)),
            (Some(a), None) => format!(" ({}: candidate {a:.4}, alias was unset)", name_of(metric)),
            _ => String::new(),
        };
        if promoted {
            format!("promoted {version_id} to {alias}{scores}\n")
        } else {
            // The server's message already gives both scores.
            match v.get("detail").or_else(|| v.get("error")).and_then(Value::as_str) {
                Some(err) => format!("not promoted: {err}\n"),
                None => format!("not promoted{scores}\n"),
            }
        }
    });
    Ok(if promoted { ExitCode::SUCCESS } else { exit::code(exit::CONFLICT) })
}

/// `absa models download`: the artifact saved to `output`, refused (and not left behind)
/// when its sha256 differs from the ETag the API sent.
fn download(c: &Client, version_id: &str, artifact: Artifact, output: &Path) -> Result<()> {
    let what = name_of(artifact);
    let download = c.download(&format!("/v1/models/{}/artifacts/{what}", seg(version_id)), &[])?;
    let expected = download.etag.clone();
    let (n, sha256) = save(download.body, download.len, output, &format!("the {what} artifact"))?;
    if let Some(expected) = expected.filter(|e| *e != sha256) {
        let _ = std::fs::remove_file(output);
        bail!("the downloaded {what} artifact has sha256 {sha256}, the API said {expected}: removed {}", output.display());
    }
    eprintln!("wrote {} bytes ({what}, sha256 {sha256}) to {}", output::count(n as i64), output.display());
    Ok(())
}

/// Streams `body` into `output` with a progress bar, hashing it on the way; written
/// beside the target and renamed at the end, so a failed download leaves no partial
/// file. Returns the bytes written and their sha256 (hex).
pub fn save(body: impl Read, len: Option<u64>, output: &Path, what: &str) -> Result<(u64, String)> {
    let mut part = output.as_os_str().to_owned();
    part.push(".part");
    let part = PathBuf::from(part);
    let bar = match len {
        Some(n) => ProgressBar::new(n).with_style(
            ProgressStyle::with_template("downloading [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}").expect("valid template").progress_chars("=> "),
        ),
        None => ProgressBar::new_spinner().with_style(ProgressStyle::with_template("{spinner} downloading {bytes} {bytes_per_sec}").expect("valid template")),
    };
    let result = (|| -> Result<(u64, String)> {
        let file = std::fs::File::create(&part).with_context(|| format!("creating {}", part.display()))?;
        let mut hashing = HashingWriter { inner: file, hasher: Sha256::new() };
        let n = std::io::copy(&mut bar.wrap_read(body), &mut hashing).with_context(|| format!("downloading {what}"))?;
        hashing.inner.sync_all()?;
        std::fs::rename(&part, output).with_context(|| format!("renaming {} to {}", part.display(), output.display()))?;
        Ok((n, format!("{:x}", hashing.hasher.finalize())))
    })();
    bar.finish_and_clear();
    if result.is_err() {
        let _ = std::fs::remove_file(&part);
    }
    result
}

/// A writer that hashes what passes through it.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_f_avg_column_appears_only_for_stance_models() {
        let models = json!({"models": [
            {"id": "a", "base_model": "m", "aliases": [], "metrics": {"validation_macro_f1": 0.6, "validation_accuracy": 0.7, "validation_f_avg": 0.55}},
            {"id": "b", "base_model": "m", "aliases": [], "metrics": {"validation_macro_f1": 0.8, "validation_accuracy": 0.9}}]});
        let t = models_table(&models);
        assert!(t.contains("VAL_F_AVG") && t.contains("0.5500"), "{t}");
        assert!(!models_table(&json!({"models": [{"id": "b", "metrics": {"validation_macro_f1": 0.8}}]})).contains("VAL_F_AVG"), "no stance model");
    }
}
