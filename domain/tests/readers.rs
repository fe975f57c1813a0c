//! The corpus readers on real files: CSV with quoting and bad rows, Parquet written by
//! the parquet crate with nulls, several row groups and invalid UTF-8, and file-level
//! failures.

use std::path::Path;
use std::sync::Arc;

use absa_domain::readers::{self, ReadError, ReaderOptions, RowResult};
use parquet::basic::{Compression, ZstdLevel};
use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use serde_json::json;

fn read_all(path: &Path) -> Vec<RowResult> {
    readers::open(path, &ReaderOptions::default()).unwrap().map(|r| r.unwrap()).collect()
}

#[test]
fn csv_records_have_header_names_start_lines_and_row_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("corpus.csv");
    let mut data = b"\xef\xbb\xbfid,text\n1,plain\n2,\"two\nlines, quoted\"\n3,too,many\n".to_vec();
    data.extend_from_slice(b"4,bad \xff byte\n5,\"\"\"quoted\"\" word\"\n");
    std::fs::write(&path, data).unwrap();
    let got = read_all(&path);
    assert_eq!(got.len(), 5);
    let first = got[0].as_ref().unwrap();
    assert_eq!((first.line, &first.fields["id"], &first.fields["text"]), (2, &json!("1"), &json!("plain")));
    let multi = got[1].as_ref().unwrap();
    assert_eq!((multi.line, &multi.fields["text"]), (3, &json!("two\nlines, quoted")));
    let wrong = got[2].as_ref().unwrap_err();
    assert_eq!((wrong.line, wrong.reason.as_str()), (5, "3 fields where the header has 2"));
    let utf8 = got[3].as_ref().unwrap_err();
    assert_eq!((utf8.line, utf8.reason.as_str()), (6, "invalid UTF-8 in field \"text\""));
    assert_eq!(got[4].as_ref().unwrap().fields["text"], json!("\"quoted\" word"));
}

#[test]
fn an_oversize_csv_record_is_a_row_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.csv");
    std::fs::write(&path, format!("text\nshort\n{}\nafter\n", "z".repeat(300))).unwrap();
    let got: Vec<RowResult> = readers::open(&path, &ReaderOptions { max_line_bytes: 100, ..ReaderOptions::default() }).unwrap().map(|r| r.unwrap()).collect();
    assert!(got[0].is_ok());
    assert_eq!(got[1].as_ref().unwrap_err().line, 3);
    assert_eq!(got[2].as_ref().unwrap().fields["text"], json!("after"));
}

/// Writes `n` rows (`id` int64 required, `text` optional UTF8) in row groups of
/// `group` rows; every 7th text is null, row `bad` holds invalid UTF-8.
fn write_parquet(path: &Path, n: usize, group: usize, bad: usize) {
    let schema = Arc::new(parse_message_type("message corpus { required int64 id; optional binary text (UTF8); }").unwrap());
    let props = Arc::new(WriterProperties::builder().set_compression(Compression::ZSTD(ZstdLevel::default())).build());
    let mut writer = SerializedFileWriter::new(std::fs::File::create(path).unwrap(), schema, props).unwrap();
    for start in (0..n).step_by(group) {
        let rows: Vec<usize> = (start..(start + group).min(n)).collect();
        let mut rg = writer.next_row_group().unwrap();
        let mut col = rg.next_column().unwrap().unwrap();
        let ids: Vec<i64> = rows.iter().map(|&i| i as i64).collect();
        col.typed::<Int64Type>().write_batch(&ids, None, None).unwrap();
        col.close().unwrap();
        let mut col = rg.next_column().unwrap().unwrap();
        let defs: Vec<i16> = rows.iter().map(|&i| i16::from(i % 7 != 3)).collect();
        let texts: Vec<ByteArray> = rows
            .iter()
            .filter(|&&i| i % 7 != 3)
            .map(|&i| if i == bad { ByteArray::from(vec![b'a', 0xff]) } else { ByteArray::from(format!("text {i} é").as_str()) })
            .collect();
        col.typed::<ByteArrayType>().write_batch(&texts, Some(&defs), None).unwrap();
        col.close().unwrap();
        rg.close().unwrap();
    }
    writer.close().unwrap();
}

#[test]
fn parquet_rows_stream_across_row_groups_with_nulls_and_bad_utf8() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("corpus.parquet");
    write_parquet(&path, 2500, 1100, 1500);
    let got = read_all(&path);
    assert_eq!(got.len(), 2500);
    for (i, row) in got.iter().enumerate() {
        if i == 1500 {
            let e = row.as_ref().unwrap_err();
            assert_eq!((e.line, e.reason.as_str()), (1501, "invalid UTF-8 in column \"text\""));
            continue;
        }
        let row = row.as_ref().unwrap();
        assert_eq!(row.line, i + 1);
        assert_eq!(row.fields["id"], json!(i));
        let expected = if i % 7 == 3 { json!(null) } else { json!(format!("text {i} é")) };
        assert_eq!(row.fields["text"], expected, "row {i}");
    }
}

#[test]
fn file_level_failures_are_read_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = readers::open(&dir.path().join("nope.jsonl"), &ReaderOptions::default()).err().unwrap();
    assert!(matches!(missing, ReadError::Io { .. }), "{missing}");
    let fake = dir.path().join("fake.parquet");
    std::fs::write(&fake, b"this is not parquet at all").unwrap();
    let bad = readers::open(&fake, &ReaderOptions::default()).err().unwrap();
    assert!(matches!(bad, ReadError::Parquet { .. }), "{bad}");
    assert!(bad.to_string().contains("fake.parquet"), "{bad}");
    let empty = dir.path().join("empty.csv");
    std::fs::write(&empty, b"").unwrap();
    assert!(matches!(readers::open(&empty, &ReaderOptions::default()).err().unwrap(), ReadError::CsvHeader { .. }));
}
