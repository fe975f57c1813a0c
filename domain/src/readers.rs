//! Streaming readers for tabular corpora: JSON Lines, CSV with a header row, and
//! Parquet, chosen by file extension.
//!
//! Every format yields the same thing: a [`RawRecord`] per row, with its position in
//! the file and its fields as JSON values. Nothing here knows what the fields mean, so
//! the same reader serves labelled training data and corpora to score.
//!
//! Errors come in two kinds. A row that cannot be read (invalid UTF-8, a line that is
//! not a JSON object, a CSV row with the wrong number of fields, a line over the size
//! cap) is a [`RowError`] in the stream, and reading goes on. A file that cannot be read
//! at all (missing, a bad Parquet footer, a CSV header that is not UTF-8) or that fails
//! half-way (an I/O error, a corrupt Parquet page) is a [`ReadError`], after which the
//! stream ends.
//!
//! Memory stays flat whatever the file's size: JSONL and CSV read one line or record
//! at a time through a buffered reader, Parquet reads [`PARQUET_BATCH_ROWS`] rows of
//! one row group at a time.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use parquet::basic::{ConvertedType, LogicalType, Type as PhysicalType};
use parquet::column::reader::ColumnReader;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::schema::types::ColumnDescPtr;
use serde_json::{Map, Value};
use thiserror::Error;

use crate::records::RowError;

/// Lines longer than this are rejected by default: a text of a few thousand words is
/// ~30 KiB, so 1 MiB only stops runaway lines (a missing newline, a binary file).
pub const DEFAULT_MAX_LINE_BYTES: usize = 1 << 20;

/// Rows read from each Parquet column per step.
pub const PARQUET_BATCH_ROWS: usize = 1024;

/// The formats a corpus can come in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `.jsonl`, `.ndjson`, `.json`: one JSON object per line.
    Jsonl,
    /// `.csv`: comma-separated with a header row naming the fields.
    Csv,
    /// `.parquet`, `.pq`: flat columns of strings, integers, floats and booleans.
    Parquet,
}

impl Format {
    /// The format a file's extension names.
    pub fn from_path(path: &Path) -> Result<Self, ReadError> {
        let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).unwrap_or_default();
        match ext.as_str() {
            "jsonl" | "ndjson" | "json" => Ok(Self::Jsonl),
            "csv" => Ok(Self::Csv),
            "parquet" | "pq" => Ok(Self::Parquet),
            _ => Err(ReadError::UnknownFormat(path.to_path_buf())),
        }
    }
}

/// A file that cannot be read, or stopped being readable.
#[derive(Debug, Error)]
pub enum ReadError {
    #[error("{0}: unknown corpus format (expected .jsonl, .ndjson, .json, .csv, .parquet or .pq)")]
    UnknownFormat(PathBuf),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: CSV header: {reason}")]
    CsvHeader { path: PathBuf, reason: String },
    #[error("{path}: CSV: {reason}")]
    Csv { path: PathBuf, reason: String },
    #[error("{path}: Parquet: {source}")]
    Parquet { path: PathBuf, source: parquet::errors::ParquetError },
}

/// One row as read: where it was, and its fields by name.
#[derive(Clone, Debug, PartialEq)]
pub struct RawRecord {
    /// 1-based line for JSONL and CSV (where the record starts), 1-based row number
    /// for Parquet.
    pub line: usize,
    pub fields: Map<String, Value>,
}

/// What the stream yields for one row: the record, or why it was skipped.
pub type RowResult = Result<RawRecord, RowError>;

/// Reading options.
#[derive(Clone, Debug)]
pub struct ReaderOptions {
    /// A JSONL or CSV line (record), or a Parquet row's text, longer than this many
    /// bytes is a row error.
    pub max_line_bytes: usize,
    /// A Parquet file whose row groups hold more than this many bytes uncompressed (as
    /// its footer says) is refused before any page is read: a few KB of zstd can hold
    /// gigabytes. Unlimited by default (local mode reads the user's own files).
    pub max_uncompressed_bytes: u64,
}

impl Default for ReaderOptions {
    fn default() -> Self {
        Self { max_line_bytes: DEFAULT_MAX_LINE_BYTES, max_uncompressed_bytes: u64::MAX }
    }
}

/// A stream of rows from one file. Yields `Ok(row)` per row (a record or a row error)
/// and at most one `Err` (the file failed), after which it ends.
pub struct Records {
    inner: Box<dyn Iterator<Item = Result<RowResult, ReadError>> + Send>,
    failed: bool,
}

impl Iterator for Records {
    type Item = Result<RowResult, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let item = self.inner.next();
        self.failed = matches!(item, Some(Err(_)));
        item
    }
}

/// Opens `path` in the format its extension names.
pub fn open(path: &Path, options: &ReaderOptions) -> Result<Records, ReadError> {
    let format = Format::from_path(path)?;
    open_as(path, format, options)
}

/// Opens `path` as `format`, whatever its extension.
pub fn open_as(path: &Path, format: Format, options: &ReaderOptions) -> Result<Records, ReadError> {
    let file = File::open(path).map_err(|source| ReadError::Io { path: path.to_path_buf(), source })?;
    let inner: Box<dyn Iterator<Item = Result<RowResult, ReadError>> + Send> = match format {
        Format::Jsonl => Box::new(JsonlRecords::new(BufReader::with_capacity(1 << 16, file), path, options.max_line_bytes)),
        Format::Csv => Box::new(CsvRecords::new(file, path, options.max_line_bytes)?),
        Format::Parquet => Box::new(ParquetRecords::new(file, path, options)?),
    };
    Ok(Records { inner, failed: false })
}

/// JSON Lines from any buffered reader (a file, stdin, bytes in a test).
pub fn jsonl<R: BufRead + Send + 'static>(reader: R, options: &ReaderOptions) -> Records {
    Records { inner: Box::new(JsonlRecords::new(reader, Path::new("<stream>"), options.max_line_bytes)), failed: false }
}

// ---------------------------------------------------------------------------- JSONL

struct JsonlRecords<R> {
    reader: R,
    path: PathBuf,
    max_line_bytes: usize,
    line_no: usize,
    buf: Vec<u8>,
    done: bool,
}

/// What reading one physical line found.
enum Line {
    Eof,
    /// The line's bytes are in the buffer (without the newline).
    Read,
    /// The line was longer than the cap; it was consumed but not kept.
    Oversize(usize),
}

impl<R: BufRead> JsonlRecords<R> {
    fn new(reader: R, path: &Path, max_line_bytes: usize) -> Self {
        Self { reader, path: path.to_path_buf(), max_line_bytes, line_no: 0, buf: Vec::new(), done: false }
    }

    /// Reads up to the next newline, keeping at most `max_line_bytes` bytes, so one
    /// huge line never makes the reader hold it whole.
    fn read_line(&mut self) -> std::io::Result<Line> {
        self.buf.clear();
        let mut total = 0usize;
        let mut seen_any = false;
        loop {
            let available = match self.reader.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if available.is_empty() {
                return Ok(match (seen_any, total > self.max_line_bytes) {
                    (false, _) => Line::Eof,
                    (true, true) => Line::Oversize(total),
                    (true, false) => Line::Read,
                });
            }
            seen_any = true;
            let (chunk, found_newline) = match memchr::memchr(b'\n', available) {
                Some(i) => (&available[..i], true),
                None => (available, false),
            };
            let room = (self.max_line_bytes + 1).saturating_sub(self.buf.len());
            self.buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
            total += chunk.len();
            let consumed = chunk.len() + found_newline as usize;
            self.reader.consume(consumed);
            if found_newline {
                let len = if self.buf.last() == Some(&b'\r') { total - 1 } else { total };
                return Ok(if len > self.max_line_bytes { Line::Oversize(len) } else { Line::Read });
            }
        }
    }
}

impl<R: BufRead> Iterator for JsonlRecords<R> {
    type Item = Result<RowResult, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            let line = match self.read_line() {
                Ok(l) => l,
                Err(source) => {
                    self.done = true;
                    return Some(Err(ReadError::Io { path: self.path.clone(), source }));
                }
            };
            self.line_no += 1;
            let line_no = self.line_no;
            let row_error = |reason: String| Some(Ok(Err(RowError { line: line_no, reason })));
            match line {
                Line::Eof => self.done = true,
                Line::Oversize(len) => return row_error(format!("line of {len} bytes exceeds the limit of {} bytes", self.max_line_bytes)),
                Line::Read => {
                    let Ok(text) = std::str::from_utf8(&self.buf) else {
                        return row_error("invalid UTF-8".into());
                    };
                    let text = text.trim_end_matches('\r');
                    let text = if line_no == 1 { text.trim_start_matches('\u{feff}') } else { text };
                    if text.trim().is_empty() {
                        continue;
                    }
                    return match serde_json::from_str::<Value>(text) {
                        Ok(Value::Object(fields)) => Some(Ok(Ok(RawRecord { line: line_no, fields }))),
                        Ok(other) => row_error(format!("not a JSON object but {}", json_kind(&other))),
                        Err(e) => row_error(format!("not JSON: {e}")),
                    };
                }
            }
        }
        None
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

// ---------------------------------------------------------------------------- CSV

/// Turns CRLF line ends into LF while streaming. The csv crate records a CRLF file's
/// record positions one line early (the `\n` of the previous line end is read as part
/// of the next record), so row errors would name the wrong line.
struct CrlfToLf<R> {
    inner: R,
    /// Converted bytes not yet handed out, from `pos` on.
    buf: Vec<u8>,
    pos: usize,
    /// A `\r` ended the last chunk: a CR of a CRLF unless the next byte says otherwise.
    pending_cr: bool,
}

impl<R> CrlfToLf<R> {
    fn new(inner: R) -> Self {
        Self { inner, buf: Vec::new(), pos: 0, pending_cr: false }
    }
}

impl<R: Read> Read for CrlfToLf<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let mut raw = [0u8; 1 << 16];
        while self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
            let n = self.inner.read(&mut raw)?;
            if n == 0 {
                if !std::mem::take(&mut self.pending_cr) {
                    return Ok(0);
                }
                self.buf.push(b'\r'); // a lone CR at the very end stays
                break;
            }
            for &b in &raw[..n] {
                if std::mem::take(&mut self.pending_cr) && b != b'\n' {
                    self.buf.push(b'\r');
                }
                if b == b'\r' {
                    self.pending_cr = true;
                } else {
                    self.buf.push(b);
                }
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

struct CsvRecords {
    reader: csv::Reader<BufReader<CrlfToLf<File>>>,
    headers: Vec<String>,
    path: PathBuf,
    max_line_bytes: usize,
    record: csv::ByteRecord,
    done: bool,
}

impl CsvRecords {
    fn new(file: File, path: &Path, max_line_bytes: usize) -> Result<Self, ReadError> {
        let mut reader = csv::ReaderBuilder::new().has_headers(true).flexible(false).from_reader(BufReader::with_capacity(1 << 16, CrlfToLf::new(file)));
        let header_error = |reason: String| ReadError::CsvHeader { path: path.to_path_buf(), reason };
        let raw = reader.byte_headers().map_err(|e| header_error(e.to_string()))?.clone();
        let mut headers = Vec::with_capacity(raw.len());
        for (i, h) in raw.iter().enumerate() {
            let h = std::str::from_utf8(h).map_err(|_| header_error(format!("column {} is not UTF-8", i + 1)))?;
            // Spreadsheet exports put a byte-order mark before the first name.
            let h = if i == 0 { h.trim_start_matches('\u{feff}') } else { h };
            headers.push(h.to_owned());
        }
        if headers.is_empty() || headers.iter().all(|h| h.is_empty()) {
            return Err(header_error("no header row".into()));
        }
        Ok(Self { reader, headers, path: path.to_path_buf(), max_line_bytes, record: csv::ByteRecord::new(), done: false })
    }
}

impl Iterator for CsvRecords {
    type Item = Result<RowResult, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let read = self.reader.read_byte_record(&mut self.record);
        let line = |pos: Option<&csv::Position>| pos.map_or(0, |p| p.line() as usize);
        match read {
            Ok(false) => {
                self.done = true;
                None
            }
            Err(e) => match e.kind() {
                csv::ErrorKind::UnequalLengths { pos, expected_len, len } => {
                    Some(Ok(Err(RowError { line: line(pos.as_ref()), reason: format!("{len} fields where the header has {expected_len}") })))
                }
                csv::ErrorKind::Utf8 { pos, .. } => Some(Ok(Err(RowError { line: line(pos.as_ref()), reason: "invalid UTF-8".into() }))),
                _ => {
                    self.done = true;
                    Some(Err(ReadError::Csv { path: self.path.clone(), reason: e.to_string() }))
                }
            },
            Ok(true) => {
                let line_no = line(self.record.position());
                let size = self.record.as_slice().len() + self.record.len();
                if size > self.max_line_bytes {
                    return Some(Ok(Err(RowError {
                        line: line_no,
                        reason: format!("record of {size} bytes exceeds the limit of {} bytes", self.max_line_bytes),
                    })));
                }
                let mut fields = Map::new();
                for (name, value) in self.headers.iter().zip(self.record.iter()) {
                    let Ok(value) = std::str::from_utf8(value) else {
                        return Some(Ok(Err(RowError { line: line_no, reason: format!("invalid UTF-8 in field {name:?}") })));
                    };
                    fields.insert(name.clone(), Value::String(value.to_owned()));
                }
                Some(Ok(Ok(RawRecord { line: line_no, fields })))
            }
        }
    }
}

// ---------------------------------------------------------------------------- Parquet

/// A flat column this reader converts, by its leaf index.
struct ParquetColumn {
    name: String,
    leaf: usize,
    descr: ColumnDescPtr,
    /// Whether byte arrays are text (annotated UTF8/STRING/JSON/ENUM, or unannotated:
    /// some writers omit the annotation); decimals and other annotations are skipped.
    text: bool,
}

/// One column's values for the rows of the current batch, nulls included.
enum Cells {
    Bool(Vec<Option<bool>>),
    Int(Vec<Option<i64>>),
    Float(Vec<Option<f64>>),
    Text(Vec<Option<Result<String, CellError>>>),
}

/// Why a text cell was not converted.
#[derive(Clone, Copy, Debug)]
enum CellError {
    InvalidUtf8,
    /// More bytes than a row may hold: left unconverted (no copy of a huge cell).
    TooLong(usize),
}

impl Cells {
    fn take(&mut self, row: usize) -> Result<Value, CellError> {
        Ok(match self {
            Cells::Bool(v) => v[row].map_or(Value::Null, Value::Bool),
            Cells::Int(v) => v[row].map_or(Value::Null, Value::from),
            Cells::Float(v) => v[row].and_then(serde_json::Number::from_f64).map_or(Value::Null, Value::Number),
            Cells::Text(v) => match v[row].take() {
                None => Value::Null,
                Some(Ok(s)) => Value::String(s),
                Some(Err(e)) => return Err(e),
            },
        })
    }
}

struct ParquetRecords {
    reader: SerializedFileReader<File>,
    path: PathBuf,
    /// A row whose text cells hold more bytes than this is a row error (a Parquet cell
    /// can hold 100 MB that compress to a few KB).
    max_row_bytes: usize,
    columns: Vec<ParquetColumn>,
    row_group: usize,
    readers: Vec<ColumnReader>,
    rows_left_in_group: usize,
    pending: VecDeque<RowResult>,
    next_row: usize,
    done: bool,
}

impl ParquetRecords {
    fn new(file: File, path: &Path, options: &ReaderOptions) -> Result<Self, ReadError> {
        let err = |source| ReadError::Parquet { path: path.to_path_buf(), source };
        let reader = SerializedFileReader::new(file).map_err(err)?;
        let uncompressed: u64 = reader.metadata().row_groups().iter().map(|g| g.total_byte_size().max(0) as u64).sum();
        if uncompressed > options.max_uncompressed_bytes {
            let why = format!("{uncompressed} bytes uncompressed, over the limit of {} bytes", options.max_uncompressed_bytes);
            return Err(err(parquet::errors::ParquetError::General(why)));
        }
        let max_row_bytes = options.max_line_bytes;
        let schema = reader.metadata().file_metadata().schema_descr_ptr();
        let mut columns = Vec::new();
        for (leaf, descr) in schema.columns().iter().enumerate() {
            // Only top-level, non-repeated primitive columns: a corpus is a flat table,
            // nested columns (lists, structs) are left out.
            if descr.path().parts().len() != 1 || descr.max_rep_level() > 0 {
                continue;
            }
            let text = match descr.physical_type() {
                PhysicalType::BYTE_ARRAY => {
                    let logical_text = matches!(descr.logical_type_ref(), Some(LogicalType::String | LogicalType::Json | LogicalType::Enum));
                    let converted_text = matches!(descr.converted_type(), ConvertedType::UTF8 | ConvertedType::JSON | ConvertedType::ENUM);
                    let unannotated = descr.logical_type_ref().is_none() && descr.converted_type() == ConvertedType::NONE;
                    if !(logical_text || converted_text || unannotated) {
                        continue;
                    }
                    true
                }
                PhysicalType::BOOLEAN | PhysicalType::INT32 | PhysicalType::INT64 | PhysicalType::FLOAT | PhysicalType::DOUBLE => false,
                _ => continue,
            };
            columns.push(ParquetColumn { name: descr.name().to_owned(), leaf, descr: descr.clone(), text });
        }
        Ok(Self {
            reader,
            path: path.to_path_buf(),
            max_row_bytes,
            columns,
            row_group: 0,
            readers: Vec::new(),
            rows_left_in_group: 0,
            pending: VecDeque::new(),
            next_row: 1,
            done: false,
        })
    }

    /// Reads the next batch of rows into `pending`; `Ok(false)` at the end of the file.
    fn fill(&mut self) -> Result<bool, parquet::errors::ParquetError> {
        while self.rows_left_in_group == 0 {
            if self.row_group >= self.reader.num_row_groups() {
                return Ok(false);
            }
            let group = self.reader.get_row_group(self.row_group)?;
            self.rows_left_in_group = group.metadata().num_rows() as usize;
            self.readers = self.columns.iter().map(|c| group.get_column_reader(c.leaf)).collect::<Result<_, _>>()?;
            self.row_group += 1;
        }
        let n = self.rows_left_in_group.min(PARQUET_BATCH_ROWS);
        let mut cells = Vec::with_capacity(self.columns.len());
        for (column, reader) in self.columns.iter().zip(self.readers.iter_mut()) {
            cells.push(read_cells(reader, column, n, self.max_row_bytes)?);
        }
        for row in 0..n {
            let line = self.next_row + row;
            let mut fields = Map::new();
            let mut bad = None;
            for (column, cells) in self.columns.iter().zip(cells.iter_mut()) {
                match cells.take(row) {
                    Ok(v) => {
                        fields.insert(column.name.clone(), v);
                    }
                    Err(e) => bad = bad.or(Some((column.name.as_str(), e))),
                }
            }
            let bytes: usize = fields.values().map(|v| v.as_str().map_or(8, str::len)).sum();
            let max = self.max_row_bytes;
            self.pending.push_back(match bad {
                Some((name, CellError::InvalidUtf8)) => Err(RowError { line, reason: format!("invalid UTF-8 in column {name:?}") }),
                Some((name, CellError::TooLong(n))) => {
                    Err(RowError { line, reason: format!("column {name:?} holds {n} bytes, over the limit of {max} bytes a row") })
                }
                None if bytes > max => Err(RowError { line, reason: format!("row of {bytes} bytes exceeds the limit of {max} bytes") }),
                None => Ok(RawRecord { line, fields }),
            });
        }
        self.next_row += n;
        self.rows_left_in_group -= n;
        Ok(true)
    }
}

/// Reads `n` rows of one column, placing nulls by the definition levels.
fn read_cells(reader: &mut ColumnReader, column: &ParquetColumn, n: usize, max_cell_bytes: usize) -> Result<Cells, parquet::errors::ParquetError> {
    let max_def = column.descr.max_def_level();
    let mut defs: Vec<i16> = Vec::with_capacity(n);
    macro_rules! read {
        ($r:expr, $values:expr) => {{
            let mut values = $values;
            let (records, _, _) = $r.read_records(n, if max_def > 0 { Some(&mut defs) } else { None }, None, &mut values)?;
            if records != n {
                return Err(parquet::errors::ParquetError::General(format!("column {:?}: expected {n} rows, found {records}", column.name)));
            }
            values
        }};
    }
    // Spread the dense values over the rows: a row is null where its level is below max.
    fn spread<T, U>(values: Vec<T>, defs: &[i16], max_def: i16, n: usize, f: impl Fn(T) -> U) -> Vec<Option<U>> {
        if max_def == 0 {
            return values.into_iter().map(|v| Some(f(v))).collect();
        }
        let mut values = values.into_iter();
        (0..n).map(|i| if defs[i] == max_def { values.next().map(&f) } else { None }).collect()
    }
    Ok(match reader {
        ColumnReader::BoolColumnReader(r) => Cells::Bool(spread(read!(r, Vec::<bool>::new()), &defs, max_def, n, |v| v)),
        ColumnReader::Int32ColumnReader(r) => Cells::Int(spread(read!(r, Vec::<i32>::new()), &defs, max_def, n, i64::from)),
        ColumnReader::Int64ColumnReader(r) => Cells::Int(spread(read!(r, Vec::<i64>::new()), &defs, max_def, n, |v| v)),
        ColumnReader::FloatColumnReader(r) => Cells::Float(spread(read!(r, Vec::<f32>::new()), &defs, max_def, n, f64::from)),
        ColumnReader::DoubleColumnReader(r) => Cells::Float(spread(read!(r, Vec::<f64>::new()), &defs, max_def, n, |v| v)),
        ColumnReader::ByteArrayColumnReader(r) => {
            debug_assert!(column.text);
            let values = read!(r, Vec::<parquet::data_type::ByteArray>::new());
            Cells::Text(spread(values, &defs, max_def, n, |b| match b.len() {
                len if len > max_cell_bytes => Err(CellError::TooLong(len)),
                _ => String::from_utf8(b.data().to_vec()).map_err(|_| CellError::InvalidUtf8),
            }))
        }
        _ => unreachable!("columns of other types are not selected"),
    })
}

impl Iterator for ParquetRecords {
    type Item = Result<RowResult, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(row) = self.pending.pop_front() {
            return Some(Ok(row));
        }
        if self.done {
            return None;
        }
        match self.fill() {
            Ok(true) => self.pending.pop_front().map(Ok),
            Ok(false) => {
                self.done = true;
                None
            }
            Err(source) => {
                self.done = true;
                Some(Err(ReadError::Parquet { path: self.path.clone(), source }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(data: &[u8], max_line_bytes: usize) -> Vec<RowResult> {
        jsonl(std::io::Cursor::new(data.to_vec()), &ReaderOptions { max_line_bytes, ..ReaderOptions::default() }).map(|r| r.unwrap()).collect()
    }

    #[test]
    fn jsonl_rows_keep_their_line_numbers_and_bad_lines_are_row_errors() {
        let data = b"\xef\xbb\xbf{\"a\":1}\n\n{\"a\":2}\r\nnot json\n[1,2]\n\xff\xfe\n{\"a\":3}";
        let got = rows(data, 100);
        let lines: Vec<(usize, bool)> = got.iter().map(|r| (r.as_ref().map_or_else(|e| e.line, |r| r.line), r.is_ok())).collect();
        assert_eq!(lines, vec![(1, true), (3, true), (4, false), (5, false), (6, false), (7, true)]);
        assert_eq!(got[0].as_ref().unwrap().fields["a"], 1, "a byte-order mark is dropped");
        assert!(got[2].as_ref().unwrap_err().reason.starts_with("not JSON"));
        assert_eq!(got[3].as_ref().unwrap_err().reason, "not a JSON object but an array");
        assert_eq!(got[4].as_ref().unwrap_err().reason, "invalid UTF-8");
        assert_eq!(got[5].as_ref().unwrap().fields["a"], 3, "a last line without newline counts");
    }

    #[test]
    fn an_oversize_line_is_skipped_without_losing_the_next_one() {
        let long = format!("{{\"t\":\"{}\"}}", "x".repeat(5000));
        let data = format!("{{\"a\":1}}\n{long}\n{{\"a\":2}}\n{long}");
        let got = rows(data.as_bytes(), 1000);
        assert_eq!(got.len(), 4);
        let e = got[1].as_ref().unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.reason.contains("5008 bytes exceeds the limit of 1000"), "{}", e.reason);
        assert_eq!(got[2].as_ref().unwrap().line, 3);
        assert_eq!(got[3].as_ref().unwrap_err().line, 4);
    }

    #[test]
    fn a_line_exactly_at_the_cap_is_kept() {
        let line = format!("{{\"t\":\"{}\"}}", "y".repeat(92));
        assert_eq!(line.len(), 100);
        let got = rows(format!("{line}\r\n").as_bytes(), 100);
        assert!(got[0].is_ok(), "{:?}", got[0]);
    }

    #[test]
    fn formats_follow_the_extension() {
        assert_eq!(Format::from_path(Path::new("a/b.JSONL")).unwrap(), Format::Jsonl);
        assert_eq!(Format::from_path(Path::new("b.csv")).unwrap(), Format::Csv);
        assert_eq!(Format::from_path(Path::new("b.parquet")).unwrap(), Format::Parquet);
        assert!(matches!(Format::from_path(Path::new("b.txt")), Err(ReadError::UnknownFormat(_))));
    }

    #[test]
    fn crlf_csv_rows_keep_their_line_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("crlf.csv");
        std::fs::write(&path, "id,text\r\n1,a\r\n2,\"b\r\nc\"\r\n3\r\n4,d\r").unwrap();
        let rows: Vec<(usize, Result<String, String>)> = open(&path, &ReaderOptions::default())
            .unwrap()
            .map(|r| match r.unwrap() {
                Ok(rec) => (rec.line, Ok(rec.fields["text"].as_str().unwrap().to_owned())),
                Err(e) => (e.line, Err(e.reason)),
            })
            .collect();
        assert_eq!(rows[0], (2, Ok("a".into())));
        assert_eq!(rows[1], (3, Ok("b\nc".into())), "a quoted CRLF becomes LF");
        assert_eq!(rows[2].0, 5, "{rows:?}");
        assert!(rows[2].1.is_err());
        assert_eq!(rows[3], (6, Ok("d".into())), "a lone CR at the end is a line end to the csv crate: {rows:?}");
    }

    #[test]
    fn crlf_to_lf_across_chunk_boundaries() {
        // One byte at a time: every CR is at a chunk's end.
        struct OneByte<'a>(&'a [u8]);
        impl Read for OneByte<'_> {
            fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
                match self.0.split_first() {
                    Some((&b, rest)) if !out.is_empty() => {
                        out[0] = b;
                        self.0 = rest;
                        Ok(1)
                    }
                    _ => Ok(0),
                }
            }
        }
        let mut text = String::new();
        CrlfToLf::new(OneByte(b"a\r\nb\rc\r\r\nd\r")).read_to_string(&mut text).unwrap();
        assert_eq!(text, "a\nb\rc\r\nd\r");
    }
}
