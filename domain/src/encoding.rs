//! Tokenization with a model's `tokenizer.json`, and the TD-BERT aspect mask.
//!
//! The mask marks every token whose character span overlaps the aspect's span, in
//! Unicode code points (the `tokenizers` crate is told to report character offsets,
//! not bytes). Special tokens never belong to the mask. Tokens that cover no character
//! of the aspect (a lone `▁` before it, whitespace) stay out, which is what
//! `Encoding.char_to_token` over the span gives with the same `tokenizer.json`.
//!
//! A target the text may not name (stance toward a party, a policy) goes in as the
//! encoder's sentence pair, `[CLS] text [SEP] target [SEP]` (`<s> text </s></s> target
//! </s>` for XLM-R) with the family's segment ids from the tokenizer's own template;
//! the mask then covers the target segment, and the span too when the text has one.

use std::path::Path;

use thiserror::Error;
use tokenizers::{Encoding, PostProcessor, Tokenizer, TruncationDirection};

use crate::span::AspectSpan;
pub use absa_jobs::InputForm;

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
    #[error("the row gives no span of the text, and this model reads the target only as a span (train with pair input for targets the text does not name)")]
    NoSpan,
    #[error("the target is empty or covers no token")]
    EmptyTarget,
    #[error("the target has {tokens} tokens; with the special tokens and one token of text that exceeds the max length {max_length}")]
    TargetTooLong { tokens: usize, max_length: usize },
}

/// One instance ready for the model: unpadded ids with special tokens, and which of
/// them belong to the aspect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedInstance {
    pub input_ids: Vec<i64>,
    pub aspect_mask: Vec<bool>,
    /// Segment ids: 0 for the text, the family's id for the target segment (1 for
    /// BERT; XLM-R's template gives 0 throughout).
    pub token_type_ids: Vec<i64>,
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
    /// Pool the first token (`[CLS]`) instead of the target's tokens.
    pool_cls: bool,
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
        Ok(Self { tokenizer, max_length, pad_id, pool_cls: false })
    }

    /// Marks the first token (`[CLS]`, `<s>`) alone in every mask: the model then pools
    /// the sequence's summary token instead of the target's tokens.
    pub fn pooling_cls(mut self, pool_cls: bool) -> Self {
        self.pool_cls = pool_cls;
        self
    }

    /// Encodes a row the way a model of `form` reads it.
    pub fn encode_as(&self, form: InputForm, text: &str, target: &str, span: Option<AspectSpan>) -> Result<EncodedInstance, EncodeError> {
        let mut encoded = match form {
            InputForm::Text => self.encode(text, span.ok_or(EncodeError::NoSpan)?)?,
            InputForm::TextTargetPair => self.encode_pair(text, target, span)?,
        };
        if self.pool_cls {
            encoded.aspect_mask.iter_mut().enumerate().for_each(|(i, m)| *m = i == 0);
        }
        Ok(encoded)
    }

    /// `text` and `target` as a sentence pair with the tokenizer's template. The mask
    /// covers the target segment and, when `span` is given, the span's tokens in the
    /// text. A text too long for the max length is cut (never the target): at the end
    /// when there is no span or the span lies in the kept head, else to a window
    /// centred on the span.
    pub fn encode_pair(&self, text: &str, target: &str, span: Option<AspectSpan>) -> Result<EncodedInstance, EncodeError> {
        let tokenize = |s: &str| self.tokenizer.encode_char_offsets(s, false).map_err(|e| EncodeError::Tokenize(e.to_string()));
        let mut first = tokenize(text)?;
        let second = tokenize(target)?;
        if second.is_empty() {
            return Err(EncodeError::EmptyTarget);
        }
        let added = self.tokenizer.get_post_processor().map_or(0, |p| p.added_tokens(true));
        let budget = self.max_length.checked_sub(added + second.len()).filter(|&b| b > 0);
        let budget = budget.ok_or(EncodeError::TargetTooLong { tokens: second.len(), max_length: self.max_length })?;
        let mut text_mask: Vec<bool> = first.get_offsets().iter().map(|&(s, e)| span.is_some_and(|span| span.overlaps(s, e))).collect();
        let windowed = first.len() > budget;
        if windowed {
            let start = match (text_mask.iter().position(|&m| m), text_mask.iter().rposition(|&m| m)) {
                (Some(f), Some(l)) => self.window_start(f, l, 0..first.len(), budget)?,
                _ => 0, // no span: cut at the end
            };
            window(&mut first, start, budget);
            text_mask = text_mask[start..start + budget].to_vec();
        }
        if span.is_some() && !text_mask.contains(&true) {
            return Err(EncodeError::EmptyMask);
        }
        // Special tokens written in the text itself count as special below too.
        let text_mask: Vec<bool> = text_mask.into_iter().zip(first.get_special_tokens_mask()).filter(|(_, &s)| s == 0).map(|(m, _)| m).collect();
        let pair = self.tokenizer.post_process(first, Some(second), true).map_err(|e| EncodeError::Tokenize(e.to_string()))?;
        // The template puts the text's tokens first, then the target's, among its own
        // special tokens: the k-th ordinary token is text token k while k < text length.
        let mut ordinary = 0;
        let aspect_mask = pair
            .get_special_tokens_mask()
            .iter()
            .map(|&special| {
                if special == 1 {
                    return false;
                }
                ordinary += 1;
                text_mask.get(ordinary - 1).copied().unwrap_or(true)
            })
            .collect();
        Ok(EncodedInstance {
            input_ids: pair.get_ids().iter().map(|&i| i as i64).collect(),
            aspect_mask,
            token_type_ids: pair.get_type_ids().iter().map(|&t| t as i64).collect(),
            windowed,
        })
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
        let mask: Vec<bool> = (0..ids.len()).map(|i| special[i] == 0 && span.overlaps(offsets[i].0, offsets[i].1)).collect();
        let first = mask.iter().position(|&m| m).ok_or(EncodeError::EmptyMask)?;
        let last = mask.iter().rposition(|&m| m).expect("a first implies a last");
        let ids: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
        if ids.len() <= self.max_length {
            let token_type_ids = vec![0; ids.len()];
            return Ok(EncodedInstance { input_ids: ids, aspect_mask: mask, token_type_ids, windowed: false });
        }

        // Keep the special tokens at both ends and a window of the content between them.
        let head = special.iter().take_while(|&&s| s == 1).count();
        let tail = special.iter().rev().take_while(|&&s| s == 1).count();
        let budget = self.max_length.checked_sub(head + tail).filter(|&b| b > 0).ok_or(EncodeError::MaxLengthTooSmall(self.max_length))?;
        let content = head..ids.len() - tail;
        let start = self.window_start(first, last, content.clone(), budget)?;
        let window = start..start + budget;
        let pick = |i: usize| (0..head).contains(&i) || window.contains(&i) || (content.end..ids.len()).contains(&i);
        let kept: Vec<usize> = (0..ids.len()).filter(|&i| pick(i)).collect();
        Ok(EncodedInstance {
            input_ids: kept.iter().map(|&i| ids[i]).collect(),
            aspect_mask: kept.iter().map(|&i| mask[i]).collect(),
            token_type_ids: vec![0; kept.len()],
            windowed: true,
        })
    }
}

impl AspectEncoder {
    /// Where a window of `budget` tokens of `content` starts so that it holds the span's
    /// tokens `first..=last`: at the content's start when the span lies in that head (the
    /// recipe's truncation keeps it: do the same), else centred on the span.
    fn window_start(&self, first: usize, last: usize, content: std::ops::Range<usize>, budget: usize) -> Result<usize, EncodeError> {
        let span_tokens = last + 1 - first;
        if span_tokens > budget {
            return Err(EncodeError::AspectTooLong { tokens: span_tokens, max_length: self.max_length });
        }
        if last < content.start + budget {
            return Ok(content.start);
        }
        let centred = first.saturating_sub((budget - span_tokens) / 2).max(content.start);
        Ok(centred.min(content.end - budget))
    }
}

/// Keeps tokens `start..start + len` of `encoding` (no special tokens in it yet).
fn window(encoding: &mut Encoding, start: usize, len: usize) {
    encoding.truncate(start + len, 0, TruncationDirection::Right);
    encoding.truncate(len, 0, TruncationDirection::Left);
    let _ = encoding.take_overflowing();
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
            .try_pair("[CLS] $A [SEP] $B:1 [SEP]:1")
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

    fn ones(mask: &[bool]) -> Vec<usize> {
        mask.iter().enumerate().filter(|(_, &m)| m).map(|(i, _)| i).collect()
    }

    #[test]
    fn a_pair_puts_the_target_second_with_segment_one_and_masks_it() {
        let enc = word_encoder(100).encode_pair(&text_of(3), "w150 w151", None).unwrap();
        assert_eq!(enc.input_ids, vec![2, 10, 11, 12, 3, 160, 161, 3]);
        assert_eq!(enc.token_type_ids, vec![0, 0, 0, 0, 0, 1, 1, 1]);
        assert_eq!(ones(&enc.aspect_mask), vec![5, 6]);
        assert!(!enc.windowed);
    }

    #[test]
    fn a_pair_with_a_span_masks_the_mention_and_the_target() {
        let enc = word_encoder(100).encode_pair(&text_of(5), "w150", Some(word_span(5, 3))).unwrap();
        assert_eq!(ones(&enc.aspect_mask), vec![4, 7]);
    }

    #[test]
    fn a_long_pair_cuts_the_text_never_the_target() {
        let head = word_encoder(12).encode_pair(&text_of(50), "w150 w151", None).unwrap();
        assert_eq!(head.input_ids, vec![2, 10, 11, 12, 13, 14, 15, 16, 3, 160, 161, 3]);
        assert!(head.windowed);
        let around = word_encoder(12).encode_pair(&text_of(50), "w150 w151", Some(word_span(50, 40))).unwrap();
        assert_eq!(around.len(), 12);
        assert_eq!(&around.input_ids[8..], &[3, 160, 161, 3]);
        let mention = ones(&around.aspect_mask)[0];
        assert_eq!(around.input_ids[mention], 50, "w40 is kept and masked");
        assert_eq!(ones(&around.aspect_mask).len(), 3);
    }

    #[test]
    fn a_target_that_leaves_no_room_for_text_is_an_error() {
        let target = text_of(10);
        assert!(matches!(word_encoder(12).encode_pair("w1 w2", &target, None), Err(EncodeError::TargetTooLong { tokens: 10, .. })));
        assert!(matches!(word_encoder(12).encode_pair("w1 w2", " ", None), Err(EncodeError::EmptyTarget)));
    }

    #[test]
    fn text_input_needs_a_span_and_cls_pooling_masks_the_first_token_only() {
        let encoder = word_encoder(100);
        assert!(matches!(encoder.encode_as(InputForm::Text, "w1 w2", "w2", None), Err(EncodeError::NoSpan)));
        let cls = encoder.clone().pooling_cls(true).encode_as(InputForm::TextTargetPair, "w1 w2", "w3", None).unwrap();
        assert_eq!(ones(&cls.aspect_mask), vec![0]);
        assert_eq!(InputForm::for_spans([true, false].into_iter()), InputForm::TextTargetPair);
        assert_eq!(InputForm::for_spans([true, true].into_iter()), InputForm::Text);
    }
}
