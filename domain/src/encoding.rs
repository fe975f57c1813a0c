//! Tokenization with a model's `tokenizer.json`, and the TD-BERT aspect mask.
//!
//! The mask marks every token whose character span overlaps the aspect's span, in
//! Unicode code points (the `tokenizers` crate is told to report character offsets,
//! not bytes). Special tokens never belong to the mask. Tokens that cover no character
//! of the aspect (a lone `▁` before it, whitespace) stay out, which is what
//! `Encoding.char_to_token` over the span gives with the same `tokenizer.json`.

use std::path::Path;

use thiserror::Error;
use tokenizers::Tokenizer;

use crate::span::AspectSpan;

/// The reference recipe's maximum sequence length.
pub const DEFAULT_MAX_LENGTH: usize = 100;

#[derive(Debug, Error)]
pub enum EncodeError {
    #[error("cannot load tokenizer {path}: {reason}")]
    Load { path: String, reason: String },
    #[error("tokenization failed: {0}")]
    Tokenize(String),
    #[error("the aspect covers no token (only whitespace or characters the tokenizer drops)")]
    EmptyMask,
    #[error("the aspect spans {tokens} tokens; with special tokens that exceeds the max length {max_length}")]
    AspectTooLong { tokens: usize, max_length: usize },
    #[error("max length {0} leaves no room for text between the special tokens")]
    MaxLengthTooSmall(usize),
}

/// One instance ready for the model: unpadded ids with special tokens, and which of
/// them belong to the aspect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedInstance {
    pub input_ids: Vec<i64>,
    pub aspect_mask: Vec<bool>,
    /// True when the text was longer than the max length and a window around the
    /// aspect was kept.
    pub windowed: bool,
}

impl EncodedInstance {
    pub fn len(&self) -> usize {
        self.input_ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.input_ids.is_empty()
    }
}

/// A tokenizer plus the rules that turn (text, span) into model inputs.
#[derive(Clone)]
pub struct AspectEncoder {
    tokenizer: Tokenizer,
    max_length: usize,
    pad_id: i64,
}

impl AspectEncoder {
    /// Loads `tokenizer.json`; its own padding and truncation presets are switched off
    /// because lengths are this encoder's decision.
    pub fn from_file(path: &Path, max_length: usize) -> Result<Self, EncodeError> {
        let load = |reason: String| EncodeError::Load { path: path.display().to_string(), reason };
        let mut tokenizer = Tokenizer::from_file(path).map_err(|e| load(e.to_string()))?;
        tokenizer.with_padding(None);
        tokenizer.with_truncation(None).map_err(|e| load(e.to_string()))?;
        let pad_id = ["<pad>", "[PAD]"].iter().find_map(|t| tokenizer.token_to_id(t)).unwrap_or(0) as i64;
        Self::new(tokenizer, max_length, pad_id)
    }

    fn new(tokenizer: Tokenizer, max_length: usize, pad_id: i64) -> Result<Self, EncodeError> {
        if max_length < 3 {
            return Err(EncodeError::MaxLengthTooSmall(max_length));
        }
        Ok(Self { tokenizer, max_length, pad_id })
    }

    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// The id batches are padded with.
    pub fn pad_id(&self) -> i64 {
        self.pad_id
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Tokenizes `text` with special tokens and marks the aspect's tokens. A text longer
    /// than the max length is cut like the reference recipe's truncation when the
    /// aspect lies in the kept head, else to a window centred on the aspect.
    pub fn encode(&self, text: &str, span: AspectSpan) -> Result<EncodedInstance, EncodeError> {
        let encoding = self.tokenizer.encode_char_offsets(text, true).map_err(|e| EncodeError::Tokenize(e.to_string()))?;
        let ids = encoding.get_ids();
        let offsets = encoding.get_offsets();
        let special = encoding.get_special_tokens_mask();
        let mask: Vec<bool> =
            (0..ids.len()).map(|i| special[i] == 0 && span.overlaps(offsets[i].0, offsets[i].1)).collect();
        let first = mask.iter().position(|&m| m).ok_or(EncodeError::EmptyMask)?;
        let last = mask.iter().rposition(|&m| m).expect("a first implies a last");
        let ids: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
        if ids.len() <= self.max_length {
            return Ok(EncodedInstance { input_ids: ids, aspect_mask: mask, windowed: false });
        }

        // Keep the special tokens at both ends and a window of the content between them.
        let head = special.iter().take_while(|&&s| s == 1).count();
        let tail = special.iter().rev().take_while(|&&s| s == 1).count();
        let budget = self.max_length.checked_sub(head + tail).filter(|&b| b > 0).ok_or(EncodeError::MaxLengthTooSmall(self.max_length))?;
        let content = head..ids.len() - tail;
        let aspect_tokens = last + 1 - first;
        if aspect_tokens > budget {
            return Err(EncodeError::AspectTooLong { tokens: aspect_tokens, max_length: self.max_length });
        }
        let start = if last < content.start + budget {
            content.start // the recipe's head truncation keeps the aspect: do the same
        } else {
            let centred = first.saturating_sub((budget - aspect_tokens) / 2).max(content.start);
            centred.min(content.end - budget)
        };
        let window = start..start + budget;
        let pick = |i: usize| (0..head).contains(&i) || window.contains(&i) || (content.end..ids.len()).contains(&i);
        let kept: Vec<usize> = (0..ids.len()).filter(|&i| pick(i)).collect();
        Ok(EncodedInstance {
            input_ids: kept.iter().map(|&i| ids[i]).collect(),
            aspect_mask: kept.iter().map(|&i| mask[i]).collect(),
            windowed: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokenizers::models::wordlevel::WordLevel;
    use tokenizers::pre_tokenizers::whitespace::WhitespaceSplit;
    use tokenizers::processors::template::TemplateProcessing;

    /// A word-level tokenizer over "w0".."w199" with [CLS]/[SEP], built in code.
    fn word_encoder(max_length: usize) -> AspectEncoder {
        let mut vocab: std::collections::HashMap<String, u32> = (0..200).map(|i| (format!("w{i}"), i + 10)).collect();
        for (t, id) in [("[PAD]", 0), ("[UNK]", 1), ("[CLS]", 2), ("[SEP]", 3)] {
            vocab.insert(t.into(), id);
        }
        let model = WordLevel::builder().vocab(vocab.into_iter().collect()).unk_token("[UNK]".into()).build().unwrap();
        let mut tokenizer = Tokenizer::new(model);
        tokenizer.with_pre_tokenizer(Some(WhitespaceSplit));
        let post = TemplateProcessing::builder()
            .try_single("[CLS] $A [SEP]")
            .unwrap()
            .special_tokens(vec![("[CLS]", 2), ("[SEP]", 3)])
            .build()
            .unwrap();
        tokenizer.with_post_processor(Some(post));
        AspectEncoder::new(tokenizer, max_length, 0).unwrap()
    }

    fn text_of(n: usize) -> String {
        (0..n).map(|i| format!("w{i}")).collect::<Vec<_>>().join(" ")
    }

    /// Code-point span of word `i` in `text_of(n)`.
    fn word_span(n: usize, i: usize) -> AspectSpan {
        let text = text_of(n);
        let start = text.split(' ').take(i).map(|w| w.chars().count() + 1).sum::<usize>();
        let len = format!("w{i}").len();
        AspectSpan::parse(&text, Some(&format!("w{i}")), start, start + len).unwrap()
    }

    #[test]
    fn a_short_text_is_kept_whole_with_special_tokens() {
        let enc = word_encoder(100).encode(&text_of(5), word_span(5, 3)).unwrap();
        assert_eq!(enc.input_ids, vec![2, 10, 11, 12, 13, 14, 3]);
        assert_eq!(enc.aspect_mask, vec![false, false, false, false, true, false, false]);
        assert!(!enc.windowed);
    }

    #[test]
    fn a_long_text_with_the_aspect_early_is_truncated_at_the_end_like_the_recipe() {
        let enc = word_encoder(10).encode(&text_of(50), word_span(50, 2)).unwrap();
        assert_eq!(enc.input_ids, vec![2, 10, 11, 12, 13, 14, 15, 16, 17, 3]);
        assert!(enc.windowed);
        assert_eq!(enc.aspect_mask.iter().position(|&m| m), Some(3));
    }

    #[test]
    fn an_aspect_beyond_the_max_length_gets_a_window_around_it() {
        let enc = word_encoder(10).encode(&text_of(50), word_span(50, 40)).unwrap();
        assert_eq!(enc.len(), 10);
        assert_eq!((enc.input_ids[0], enc.input_ids[9]), (2, 3), "special tokens stay at both ends");
        let at = enc.aspect_mask.iter().position(|&m| m).unwrap();
        assert_eq!(enc.input_ids[at], 50, "w40 has id 50");
        assert!((3..=6).contains(&at), "the aspect sits near the middle, at {at}");
        assert_eq!(enc.aspect_mask.iter().filter(|&&m| m).count(), 1);
    }

    #[test]
    fn an_aspect_at_the_very_end_keeps_the_last_window() {
        let enc = word_encoder(10).encode(&text_of(50), word_span(50, 49)).unwrap();
        assert_eq!(enc.input_ids[8], 59);
        assert!(enc.aspect_mask[8]);
    }

    #[test]
    fn whitespace_only_aspects_have_an_empty_mask() {
        let text = "w1  w2";
        let span = AspectSpan::parse(text, Some(" "), 2, 3).unwrap();
        assert!(matches!(word_encoder(100).encode(text, span), Err(EncodeError::EmptyMask)));
    }

    #[test]
    fn an_aspect_longer_than_the_budget_is_an_error() {
        let text = text_of(30);
        let end = text.chars().count();
        let span = AspectSpan::parse(&text, None, 0, end).unwrap();
        assert!(matches!(word_encoder(10).encode(&text, span), Err(EncodeError::AspectTooLong { tokens: 30, .. })));
    }
}
