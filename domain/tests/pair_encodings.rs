//! The text-target sentence pair equals transformers' `tokenizer(text, target,
//! truncation="only_first")` on every SemEval-2016 stance test row (fixtures made by
//! scripts/fixtures/make_pair_encodings.py at max length 48, so long tweets are cut):
//! the same ids, the same segment ids (1 for BERT's target segment, 0 for XLM-R) and
//! the target's tokens masked, for the MiniLM (WordPiece) and XLM-R (SentencePiece)
//! tokenizers.

use std::path::PathBuf;

use absa_domain::records::{read_labelled_file, Columns};
use absa_domain::{AspectEncoder, InputForm};
use serde::Deserialize;
use sha2::{Digest, Sha256};

const MAX_LENGTH: usize = 48;

fn shared() -> PathBuf {
    absa_domain::reference::shared_dir().unwrap_or_else(|e| panic!("{e}"))
}

#[derive(Deserialize)]
struct Expected {
    line: usize,
    n_tokens: usize,
    ids_sha256: String,
    types_sha256: String,
    target: Vec<usize>,
}

fn sha(values: &[i64]) -> String {
    let joined = values.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(",");
    format!("{:x}", Sha256::digest(joined.as_bytes()))
}

fn check(name: &str, tokenizer: &str) {
    let encoder = AspectEncoder::from_file(&shared().join(tokenizer).join("tokenizer.json"), MAX_LENGTH).unwrap();
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/pair_encodings_{name}_stance_test.jsonl"));
    let expected: Vec<Expected> = std::fs::read_to_string(fixture).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let (rows, errors) = read_labelled_file(&shared().join("data/semeval16_stance/test.jsonl"), &Columns::default()).unwrap();
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(rows.len(), expected.len());
    let mut cut = 0;
    for (row, exp) in rows.iter().zip(&expected) {
        assert_eq!(row.line, exp.line);
        let enc = encoder.encode_as(InputForm::TextTargetPair, &row.text, &row.target, row.span).unwrap();
        assert_eq!(enc.len(), exp.n_tokens, "{name} line {}: tokens", row.line);
        assert_eq!(sha(&enc.input_ids), exp.ids_sha256, "{name} line {}: ids", row.line);
        assert_eq!(sha(&enc.token_type_ids), exp.types_sha256, "{name} line {}: segment ids", row.line);
        let masked: Vec<usize> = enc.aspect_mask.iter().enumerate().filter(|(_, &m)| m).map(|(i, _)| i).collect();
        assert_eq!(masked, exp.target, "{name} line {}: target mask", row.line);
        cut += enc.windowed as usize;
    }
    println!("{name}: {} pairs identical to transformers', {cut} of them cut to {MAX_LENGTH} tokens", rows.len());
    assert!(cut > 0, "the fixture's max length cuts some tweets");
}

#[test]
fn minilm_pairs_match_transformers_on_the_stance_test_set() {
    check("minilm", "models/all-minilm-l6-v2");
}

#[test]
fn xlmr_pairs_match_transformers_on_the_stance_test_set() {
    check("xlmr", "models/xlmr-tokenizer");
}
