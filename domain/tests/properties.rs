//! Property tests (proptest) for the two places where untrusted input meets our code
//! first: the corpus readers and the span-to-mask step. Whatever the bytes or offsets,
//! nothing panics, every line is accounted for (a record or a row error naming it), and
//! an accepted span always marks at least one token inside the max length.

use std::io::Cursor;

use absa_domain::encoding::AspectEncoder;
use absa_domain::readers::{self, ReaderOptions};
use absa_domain::span::AspectSpan;
use proptest::prelude::*;

/// Lines that look like data: valid rows, broken JSON, binary junk, long lines.
fn line() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        "[a-z ]{0,20}".prop_map(|t| format!("{{\"text\": \"{t}\", \"n\": 1}}").into_bytes()),
        proptest::collection::vec(any::<u8>(), 0..64),
        "\\PC{0,40}".prop_map(String::into_bytes),
        Just(b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[".to_vec()),
        (0usize..3000).prop_map(|n| vec![b'x'; n]),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn jsonl_numbers_rows_in_order_keeps_good_lines_and_never_panics(lines in proptest::collection::vec(line(), 0..30), crlf in any::<bool>()) {
        let sep: &[u8] = if crlf { b"\r\n" } else { b"\n" };
        let mut data = Vec::new();
        for l in &lines {
            // A newline inside a generated line would make two lines: keep them whole.
            data.extend(l.iter().copied().filter(|&b| b != b'\n'));
            data.extend_from_slice(sep);
        }
        let options = ReaderOptions { max_line_bytes: 1000, ..ReaderOptions::default() };
        let mut records = Vec::new();
        let mut numbers = Vec::new();
        for item in readers::jsonl(Cursor::new(data), &options) {
            let row = item.expect("in-memory reads cannot fail as a whole");
            match row {
                Ok(r) => {
                    numbers.push(r.line);
                    records.push(r.line);
                }
                Err(e) => numbers.push(e.line),
            }
        }
        // Line numbers come in order, once each, within the file.
        prop_assert!(numbers.windows(2).all(|w| w[0] < w[1]), "{numbers:?}");
        prop_assert!(numbers.iter().all(|&n| n >= 1 && n <= lines.len()));
        // Every well-formed object line comes back as a record with its own number.
        for (i, l) in lines.iter().enumerate() {
            if l.starts_with(b"{\"text\"") {
                prop_assert!(records.contains(&(i + 1)), "line {} missing from {records:?}", i + 1);
            }
        }
    }

    #[test]
    fn spans_are_checked_in_code_points_and_never_panic(text in "\\PC{0,60}", start in 0usize..80, len in 0usize..20) {
        let end = start + len;
        let chars = text.chars().count();
        match AspectSpan::parse(&text, None, start, end) {
            Ok(span) => prop_assert!(start < end && end <= chars && span.start() == start && span.end() == end),
            Err(_) => prop_assert!(text.is_empty() || start >= end || end > chars),
        }
        // With the aspect given it must be exactly the span's characters.
        let aspect: String = text.chars().skip(start).take(len).collect();
        if let Ok(span) = AspectSpan::parse(&text, Some(&aspect), start, end) {
            prop_assert_eq!(span.end() - span.start(), aspect.chars().count());
        }
    }
}

#[test]
fn accepted_spans_always_mark_a_token_within_the_max_length() {
    let Ok(shared) = absa_domain::reference::shared_dir() else {
        panic!("the shared reference folder is needed (set ABSA_SHARED)");
    };
    let encoder = AspectEncoder::from_file(&shared.join("models/xlmr-tokenizer/tokenizer.json"), 32).expect("the XLM-R tokenizer");
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig { cases: 300, ..ProptestConfig::default() });
    let strategy = ("[a-zé日本語🙂 ,.!]{1,120}", 0usize..150, 1usize..12);
    runner
        .run(&strategy, |(text, start, len)| {
            let Ok(span) = AspectSpan::parse(&text, None, start, start + len) else { return Ok(()) };
            // Whitespace-only spans have no token and long aspects do not fit: those are
            // errors, never panics; whatever is accepted marks a token within the limit.
            if let Ok(e) = encoder.encode(&text, span) {
                prop_assert!(e.len() <= 32);
                prop_assert!(e.aspect_mask.iter().any(|&m| m), "no aspect token for {text:?} {start}+{len}");
                prop_assert_eq!(e.aspect_mask.len(), e.input_ids.len());
            }
            Ok(())
        })
        .unwrap();
}
