//! Where predictions and rejected rows go. Predictions: JSON Lines or Parquet, chosen
//! by extension, one record per instance with the row's id and line, the target
//! (`aspect`) and its span (null for a target the text does not mention), the label, its probability (confidence) and every class probability.
//! Rejected rows: JSON Lines with the line and the reason.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use absa_domain::{LabelSet, RowError};
use parquet::basic::{Compression, ConvertedType, Repetition, Type as PhysicalType, ZstdLevel};
use parquet::data_type::{ByteArray, ByteArrayType, FloatType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::Type;
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use serde_json::Value;

use crate::ScoreError;

/// One scored instance.
#[derive(Clone, Debug)]
pub struct Prediction {
    pub line: usize,
    pub id: Arc<Value>,
    /// The target: the aspect as written, or a named target.
    pub aspect: String,
    /// The target's span in the text; none for a target the text does not mention.
    pub start: Option<usize>,
    pub end: Option<usize>,
    /// In label order.
    pub probabilities: Vec<f32>,
}

impl Prediction {
    /// The most probable label's index (the first on ties).
    pub fn label_index(&self) -> usize {
        self.probabilities.iter().enumerate().fold((0, f32::MIN), |(bi, bv), (i, &v)| if v > bv { (i, v) } else { (bi, bv) }).0
    }

    pub fn confidence(&self) -> f32 {
        self.probabilities[self.label_index()]
    }
}

/// Receives the predictions of a run, in input order.
pub trait PredictionSink: Send {
    fn write(&mut self, prediction: &Prediction) -> Result<(), ScoreError>;
    /// Flushes and closes; a file is complete only after this.
    fn finish(self: Box<Self>) -> Result<(), ScoreError>;
}

/// The output formats, by extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    Jsonl,
    Parquet,
}

impl OutputFormat {
    pub fn from_path(path: &Path) -> Result<Self, ScoreError> {
        match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
            Some("jsonl" | "ndjson" | "json") => Ok(Self::Jsonl),
            Some("parquet" | "pq") => Ok(Self::Parquet),
            _ => Err(ScoreError::Output(format!("{}: unknown output format (expected .jsonl or .parquet)", path.display()))),
        }
    }
}

/// Opens a sink for `path` in the format its extension names.
pub fn create(path: &Path, labels: &LabelSet) -> Result<Box<dyn PredictionSink>, ScoreError> {
    Ok(match OutputFormat::from_path(path)? {
        OutputFormat::Jsonl => Box::new(JsonlSink::create(path, labels)?),
        OutputFormat::Parquet => Box::new(ParquetSink::create(path, labels)?),
    })
}

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> ScoreError + '_ {
    move |e| ScoreError::Output(format!("{}: {e}", path.display()))
}

// ---------------------------------------------------------------------------- JSONL

pub struct JsonlSink {
    out: BufWriter<File>,
    path: PathBuf,
    labels: Vec<String>,
}

/// Class probabilities as a JSON object in label order.
struct Probabilities<'a>(&'a [String], &'a [f32]);

impl Serialize for Probabilities<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (name, p) in self.0.iter().zip(self.1) {
            map.serialize_entry(name, p)?;
        }
        map.end()
    }
}

#[derive(Serialize)]
struct JsonRecord<'a> {
    id: &'a Value,
    line: usize,
    aspect: &'a str,
    start: Option<usize>,
    end: Option<usize>,
    label: &'a str,
    confidence: f32,
    probabilities: Probabilities<'a>,
}

impl JsonlSink {
    pub fn create(path: &Path, labels: &LabelSet) -> Result<Self, ScoreError> {
        let file = File::create(path).map_err(io_error(path))?;
        Ok(Self { out: BufWriter::with_capacity(1 << 20, file), path: path.to_path_buf(), labels: labels.names().to_vec() })
    }
}

impl PredictionSink for JsonlSink {
    fn write(&mut self, p: &Prediction) -> Result<(), ScoreError> {
        let label = p.label_index();
        let record = JsonRecord {
            id: &p.id,
            line: p.line,
            aspect: &p.aspect,
            start: p.start,
            end: p.end,
            label: &self.labels[label],
            confidence: p.probabilities[label],
            probabilities: Probabilities(&self.labels, &p.probabilities),
        };
        serde_json::to_writer(&mut self.out, &record).map_err(|e| ScoreError::Output(format!("{}: {e}", self.path.display())))?;
        self.out.write_all(b"\n").map_err(io_error(&self.path))
    }

    fn finish(mut self: Box<Self>) -> Result<(), ScoreError> {
        self.out.flush().map_err(io_error(&self.path))
    }
}

// ---------------------------------------------------------------------------- Parquet

/// Rows per Parquet row group: large enough for good compression, small enough that
/// the buffered columns stay a few MiB.
pub const PARQUET_ROW_GROUP: usize = 65_536;

/// Column buffers for the rows of the current row group.
#[derive(Default)]
struct Columns {
    id: Vec<ByteArray>,
    line: Vec<i64>,
    aspect: Vec<ByteArray>,
    /// Present spans only; `span_defined` says which rows have one.
    start: Vec<i64>,
    end: Vec<i64>,
    span_defined: Vec<i16>,
    label: Vec<ByteArray>,
    confidence: Vec<f32>,
    /// One column per label.
    probabilities: Vec<Vec<f32>>,
}

/// Columns `id` (string: numbers are written as their decimal text), `line`,
/// `aspect`, `start`, `end` (optional: null for a target the text does not mention),
/// `label`, `confidence`, then `prob_<label>` per class.
pub struct ParquetSink {
    writer: SerializedFileWriter<BufWriter<File>>,
    path: PathBuf,
    labels: Vec<String>,
    columns: Columns,
}

fn required(name: &str, physical: PhysicalType, converted: ConvertedType) -> Arc<Type> {
    column(name, physical, converted, Repetition::REQUIRED)
}

fn column(name: &str, physical: PhysicalType, converted: ConvertedType, repetition: Repetition) -> Arc<Type> {
    Arc::new(Type::primitive_type_builder(name, physical).with_repetition(repetition).with_converted_type(converted).build().expect("a valid primitive column"))
}

impl ParquetSink {
    pub fn create(path: &Path, labels: &LabelSet) -> Result<Self, ScoreError> {
        let mut fields = vec![
            required("id", PhysicalType::BYTE_ARRAY, ConvertedType::UTF8),
            required("line", PhysicalType::INT64, ConvertedType::NONE),
            required("aspect", PhysicalType::BYTE_ARRAY, ConvertedType::UTF8),
            column("start", PhysicalType::INT64, ConvertedType::NONE, Repetition::OPTIONAL),
            column("end", PhysicalType::INT64, ConvertedType::NONE, Repetition::OPTIONAL),
            required("label", PhysicalType::BYTE_ARRAY, ConvertedType::UTF8),
            required("confidence", PhysicalType::FLOAT, ConvertedType::NONE),
        ];
        fields.extend(labels.names().iter().map(|l| required(&format!("prob_{l}"), PhysicalType::FLOAT, ConvertedType::NONE)));
        let schema = Arc::new(Type::group_type_builder("prediction").with_fields(fields).build().expect("a valid schema"));
        let props = Arc::new(WriterProperties::builder().set_compression(Compression::ZSTD(ZstdLevel::default())).build());
        let file = File::create(path).map_err(io_error(path))?;
        let writer = SerializedFileWriter::new(BufWriter::with_capacity(1 << 20, file), schema, props)
            .map_err(|e| ScoreError::Output(format!("{}: {e}", path.display())))?;
        let columns = Columns { probabilities: vec![Vec::new(); labels.len()], ..Default::default() };
        Ok(Self { writer, path: path.to_path_buf(), labels: labels.names().to_vec(), columns })
    }

    fn flush_row_group(&mut self) -> Result<(), ScoreError> {
        if self.columns.line.is_empty() {
            return Ok(());
        }
        let err = |e: parquet::errors::ParquetError| ScoreError::Output(format!("{}: {e}", self.path.display()));
        let c = std::mem::replace(&mut self.columns, Columns { probabilities: vec![Vec::new(); self.labels.len()], ..Default::default() });
        let mut group = self.writer.next_row_group().map_err(err)?;
        macro_rules! column {
            ($kind:ty, $values:expr) => {
                column!($kind, $values, None)
            };
            ($kind:ty, $values:expr, $defined:expr) => {{
                let mut col = group.next_column().map_err(err)?.expect("the schema has this column");
                col.typed::<$kind>().write_batch($values, $defined, None).map_err(err)?;
                col.close().map_err(err)?;
            }};
        }
        column!(ByteArrayType, &c.id);
        column!(Int64Type, &c.line);
        column!(ByteArrayType, &c.aspect);
        column!(Int64Type, &c.start, Some(&c.span_defined));
        column!(Int64Type, &c.end, Some(&c.span_defined));
        column!(ByteArrayType, &c.label);
        column!(FloatType, &c.confidence);
        for probs in &c.probabilities {
            column!(FloatType, probs);
        }
        group.close().map_err(err)?;
        Ok(())
    }
}

impl PredictionSink for ParquetSink {
    fn write(&mut self, p: &Prediction) -> Result<(), ScoreError> {
        let label = p.label_index();
        let c = &mut self.columns;
        let id = match p.id.as_ref() {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        c.id.push(ByteArray::from(id.into_bytes()));
        c.line.push(p.line as i64);
        c.aspect.push(ByteArray::from(p.aspect.as_str()));
        if let (Some(start), Some(end)) = (p.start, p.end) {
            c.start.push(start as i64);
            c.end.push(end as i64);
        }
        c.span_defined.push(i16::from(p.start.is_some() && p.end.is_some()));
        c.label.push(ByteArray::from(self.labels[label].as_str()));
        c.confidence.push(p.probabilities[label]);
        for (col, &v) in c.probabilities.iter_mut().zip(&p.probabilities) {
            col.push(v);
        }
        if c.line.len() >= PARQUET_ROW_GROUP {
            self.flush_row_group()?;
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<(), ScoreError> {
        self.flush_row_group()?;
        let path = self.path.clone();
        let mut inner = self.writer.into_inner().map_err(|e| ScoreError::Output(format!("{}: {e}", path.display())))?;
        inner.flush().map_err(io_error(&path))
    }
}

/// Keeps predictions in memory (benchmarks and accuracy checks).
#[derive(Default)]
pub struct CollectSink(pub Arc<std::sync::Mutex<Vec<Prediction>>>);

impl PredictionSink for CollectSink {
    fn write(&mut self, p: &Prediction) -> Result<(), ScoreError> {
        self.0.lock().expect("no panics while holding the lock").push(p.clone());
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<(), ScoreError> {
        Ok(())
    }
}

/// Counts predictions and drops them (throughput runs).
#[derive(Default)]
pub struct DiscardSink;

impl PredictionSink for DiscardSink {
    fn write(&mut self, _: &Prediction) -> Result<(), ScoreError> {
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<(), ScoreError> {
        Ok(())
    }
}

// ---------------------------------------------------------------------------- errors

/// Where the engine puts the rows it cannot score, by line and reason.
pub trait ErrorSink: Send {
    fn write(&mut self, error: &RowError) -> Result<(), ScoreError>;
    fn finish(self: Box<Self>) -> Result<(), ScoreError> {
        Ok(())
    }
}

/// Keeps rejected rows in memory (the worker records them as the job's row errors).
#[derive(Default)]
pub struct CollectErrors(pub Arc<std::sync::Mutex<Vec<RowError>>>);

impl ErrorSink for CollectErrors {
    fn write(&mut self, error: &RowError) -> Result<(), ScoreError> {
        self.0.lock().expect("no panics while holding the lock").push(error.clone());
        Ok(())
    }
}

/// Rejected rows as JSON Lines: `{"line": 12, "reason": "..."}` (local mode's file).
pub struct ErrorLog {
    out: Option<BufWriter<File>>,
    path: Option<PathBuf>,
}

impl ErrorLog {
    /// `None` keeps only the count.
    pub fn create(path: Option<&Path>) -> Result<Self, ScoreError> {
        let out = match path {
            Some(p) => Some(BufWriter::new(File::create(p).map_err(io_error(p))?)),
            None => None,
        };
        Ok(Self { out, path: path.map(Path::to_path_buf) })
    }
}

impl ErrorSink for ErrorLog {
    fn write(&mut self, error: &RowError) -> Result<(), ScoreError> {
        if let (Some(out), Some(path)) = (self.out.as_mut(), self.path.as_ref()) {
            let line = serde_json::json!({ "line": error.line, "reason": error.reason });
            writeln!(out, "{line}").map_err(io_error(path))?;
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<(), ScoreError> {
        let this = *self;
        if let (Some(mut out), Some(path)) = (this.out, this.path) {
            out.flush().map_err(io_error(&path))?;
        }
        Ok(())
    }
}
