//! An aspect's place in its text.

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SpanError {
    #[error("empty text")]
    EmptyText,
    #[error("empty span: start {start} is not before end {end}")]
    Empty { start: usize, end: usize },
    #[error("span {start}..{end} lies outside the text ({len} characters)")]
    OutsideText { start: usize, end: usize, len: usize },
    #[error("span {start}..{end} holds {found:?}, not the aspect {aspect:?}")]
    Mismatch { start: usize, end: usize, aspect: String, found: String },
}

/// A half-open span `[start, end)` of Unicode code points in a text, known to be
/// inside it and (when an aspect string is given) to spell the aspect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AspectSpan {
    start: usize,
    end: usize,
}

impl AspectSpan {
    /// Checks `start..end` against `text`, and against `aspect` when there is one.
    pub fn parse(text: &str, aspect: Option<&str>, start: usize, end: usize) -> Result<Self, SpanError> {
        if text.is_empty() {
            return Err(SpanError::EmptyText);
        }
        if start >= end {
            return Err(SpanError::Empty { start, end });
        }
        let len = text.chars().count();
        if end > len {
            return Err(SpanError::OutsideText { start, end, len });
        }
        if let Some(aspect) = aspect {
            let found: String = text.chars().skip(start).take(end - start).collect();
            if found != aspect {
                return Err(SpanError::Mismatch { start, end, aspect: aspect.into(), found });
            }
        }
        Ok(Self { start, end })
    }

    pub fn start(&self) -> usize {
        self.start
    }

    pub fn end(&self) -> usize {
        self.end
    }

    /// Whether a token covering characters `[start, end)` overlaps this span.
    pub fn overlaps(&self, start: usize, end: usize) -> bool {
        start < self.end && end > self.start && start < end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_count_code_points_not_bytes() {
        let span = AspectSpan::parse("Der Lüfter ist laut", Some("Lüfter"), 4, 10).unwrap();
        assert_eq!((span.start(), span.end()), (4, 10));
    }

    #[test]
    fn a_span_past_the_end_is_rejected() {
        assert_eq!(AspectSpan::parse("abc", None, 1, 4), Err(SpanError::OutsideText { start: 1, end: 4, len: 3 }));
    }

    #[test]
    fn a_reversed_or_empty_span_is_rejected() {
        assert!(matches!(AspectSpan::parse("abc", None, 2, 1), Err(SpanError::Empty { .. })));
        assert!(matches!(AspectSpan::parse("abc", None, 1, 1), Err(SpanError::Empty { .. })));
    }

    #[test]
    fn a_span_that_does_not_spell_the_aspect_is_rejected() {
        let err = AspectSpan::parse("great battery", Some("battery"), 0, 5).unwrap_err();
        assert!(err.to_string().contains("\"great\""), "{err}");
    }

    #[test]
    fn empty_text_is_rejected() {
        assert_eq!(AspectSpan::parse("", None, 0, 1), Err(SpanError::EmptyText));
    }
}
