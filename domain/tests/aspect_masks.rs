//! Aspect masks equal the `tokenizers` library's `char_to_token` masks (fixtures made by
//! scripts/fixtures/make_aspect_masks.py) on every laptops instance and on hand-written
//! non-ASCII texts, for the MiniLM (WordPiece) and XLM-R (SentencePiece) tokenizers.

use std::path::PathBuf;

use absa_domain::records::{read_labelled_file, Columns};
use absa_domain::{AspectEncoder, AspectSpan};
use serde::Deserialize;
use sha2::{Digest, Sha256};

fn shared() -> PathBuf {
    absa_domain::reference::shared_dir().unwrap_or_else(|e| panic!("{e}"))
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn tokenizer_path(which: &str) -> PathBuf {
    match which {
        "minilm" => shared().join("models/all-minilm-l6-v2/tokenizer.json"),
        "xlmr" => shared().join("models/xlmr-tokenizer/tokenizer.json"),
        _ => unreachable!(),
    }
}

#[derive(Deserialize)]
struct ExpectedRow {
    line: usize,
    n_tokens: usize,
    ids_sha256: String,
    mask: Vec<usize>,
    /// Present where transformers' rebuilt pre-tokenizer aligns differently from
    /// `tokenizer.json` itself; our encoder follows `tokenizer.json`.
    mask_tokenizer_json: Option<Vec<usize>>,
}

fn read_jsonl<T: for<'de> Deserialize<'de>>(path: PathBuf) -> Vec<T> {
    std::fs::read_to_string(&path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn mask_indices(mask: &[bool]) -> Vec<usize> {
    mask.iter().enumerate().filter(|(_, &m)| m).map(|(i, _)| i).collect()
}

fn check_split(tokenizer: &str, split: &str) {
    let encoder = AspectEncoder::from_file(&tokenizer_path(tokenizer), 512).unwrap();
    let (rows, errors) = read_labelled_file(&shared().join(format!("data/semeval14_laptops/{split}.jsonl")), &Columns::default()).unwrap();
    assert!(errors.is_empty(), "{errors:?}");
    let expected: Vec<ExpectedRow> = read_jsonl(fixture(&format!("aspect_masks_{tokenizer}_{split}.jsonl")));
    assert_eq!(rows.len(), expected.len());
    let mut differing = Vec::new();
    for (row, exp) in rows.iter().zip(&expected) {
        assert_eq!(row.line, exp.line);
        let span = row.span.expect("laptops rows give their spans");
        let enc = encoder.encode(&row.text, span).unwrap_or_else(|e| panic!("{split}:{}: {e}", row.line));
        assert_eq!(enc.len(), exp.n_tokens, "{split}:{} token count", row.line);
        let joined = enc.input_ids.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(",");
        assert_eq!(format!("{:x}", Sha256::digest(joined.as_bytes())), exp.ids_sha256, "{split}:{} ids", row.line);
        let want = exp.mask_tokenizer_json.as_ref().unwrap_or(&exp.mask);
        if &mask_indices(&enc.aspect_mask) != want {
            differing.push((row.line, mask_indices(&enc.aspect_mask), want.clone()));
        }
    }
    assert!(differing.is_empty(), "{tokenizer} {split}: {} masks differ, first: {:?}", differing.len(), &differing[..differing.len().min(5)]);
}

#[test]
fn minilm_masks_match_on_laptops_train() {
    check_split("minilm", "train");
}

#[test]
fn minilm_masks_match_on_laptops_test() {
    check_split("minilm", "test");
}

#[test]
fn xlmr_masks_match_on_laptops_train() {
    check_split("xlmr", "train");
}

#[test]
fn xlmr_masks_match_on_laptops_test() {
    check_split("xlmr", "test");
}

#[derive(Deserialize)]
struct Case {
    text: String,
    aspect: String,
    start: usize,
    end: usize,
}

#[derive(Deserialize)]
struct ExpectedCase {
    line: usize,
    input_ids: Vec<i64>,
    mask: Vec<usize>,
    mask_tokenizer_json: Option<Vec<usize>>,
}

fn check_unicode(tokenizer: &str) {
    let encoder = AspectEncoder::from_file(&tokenizer_path(tokenizer), 512).unwrap();
    let cases: Vec<Case> = read_jsonl(fixture("unicode_cases.jsonl"));
    let expected: Vec<ExpectedCase> = read_jsonl(fixture(&format!("unicode_masks_{tokenizer}.jsonl")));
    assert_eq!(cases.len(), expected.len());
    for (case, exp) in cases.iter().zip(&expected) {
        let span = AspectSpan::parse(&case.text, Some(&case.aspect), case.start, case.end).unwrap();
        let enc = encoder.encode(&case.text, span).unwrap_or_else(|e| panic!("case {}: {e}", exp.line));
        assert_eq!(enc.input_ids, exp.input_ids, "case {} ids: {:?}", exp.line, case.text);
        let want = exp.mask_tokenizer_json.as_ref().unwrap_or(&exp.mask);
        assert_eq!(&mask_indices(&enc.aspect_mask), want, "case {} mask: {:?} / {:?}", exp.line, case.text, case.aspect);
    }
}

#[test]
fn minilm_masks_match_on_non_ascii_texts() {
    check_unicode("minilm");
}

#[test]
fn xlmr_masks_match_on_non_ascii_texts() {
    check_unicode("xlmr");
}
