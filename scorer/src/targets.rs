//! Where the targets of a text are, when a row does not give their offsets: every
//! occurrence of the row's aspect string, or every match of a lexicon (aspect terms,
//! or politicians and parties for stance).
//!
//! Offsets are Unicode code points, as everywhere else. Lexicon matching ignores case
//! by folding each character to its lowercase form when that is one character (so
//! offsets in the folded text are offsets in the original; the few characters whose
//! lowercase is longer, like `İ`, are kept as they are) and only accepts matches on
//! word boundaries: a term that starts (ends) with a letter, digit or `_` must not have
//! one just before (after) it. Overlapping matches keep the leftmost, then the longest
//! ("battery life" over "battery"), so each occurrence gives one prediction.
//!
//! [`NamedTargets`] are a score job's stance targets: each document gets one
//! prediction per target whether or not it names it; where it does (the name or an
//! alias, matched like lexicon terms), the first mention is the target's span.

use std::path::{Path, PathBuf};

use aho_corasick::{AhoCorasick, MatchKind};
use thiserror::Error;

/// One target found in a text: its surface form and code-point span.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    pub start: usize,
    pub end: usize,
}

#[derive(Debug, Error)]
pub enum LexiconError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: the lexicon has no terms")]
    Empty { path: PathBuf },
    #[error("lexicon automaton: {0}")]
    Build(String),
}

/// A set of target terms matched case-insensitively on word boundaries.
pub struct Lexicon {
    automaton: AhoCorasick,
    /// The folded terms, by pattern id (for their lengths in characters).
    term_chars: Vec<usize>,
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Lowercase when that is a single character, else unchanged: keeps offsets.
fn fold(c: char) -> char {
    let mut lower = c.to_lowercase();
    match (lower.next(), lower.next()) {
        (Some(l), None) => l,
        _ => c,
    }
}

/// Trims a term and collapses runs of whitespace inside it to one space.
fn normalise(term: &str) -> String {
    term.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl Lexicon {
    /// One term per line; blank lines and lines starting with `#` are skipped.
    pub fn from_file(path: &Path) -> Result<Self, LexiconError> {
        let text = std::fs::read_to_string(path).map_err(|source| LexiconError::Io { path: path.to_path_buf(), source })?;
        let terms: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
        if terms.is_empty() {
            return Err(LexiconError::Empty { path: path.to_path_buf() });
        }
        Self::new(terms)
    }

    pub fn new<'a>(terms: impl IntoIterator<Item = &'a str>) -> Result<Self, LexiconError> {
        let mut folded: Vec<String> = terms.into_iter().map(|t| normalise(t).chars().map(fold).collect()).filter(|t: &String| !t.is_empty()).collect();
        folded.sort();
        folded.dedup();
        // Standard semantics report every overlapping match; the choice among them is
        // made after the word-boundary check, which leftmost-longest would pre-empt.
        let automaton = AhoCorasick::builder().match_kind(MatchKind::Standard).build(&folded).map_err(|e| LexiconError::Build(e.to_string()))?;
        let term_chars = folded.iter().map(|t| t.chars().count()).collect();
        Ok(Self { automaton, term_chars })
    }

    pub fn len(&self) -> usize {
        self.term_chars.len()
    }

    pub fn is_empty(&self) -> bool {
        self.term_chars.is_empty()
    }

    /// Every occurrence of a term in `text`, non-overlapping, in text order.
    pub fn find(&self, text: &str) -> Vec<Found> {
        let chars: Vec<char> = text.chars().collect();
        let folded: String = chars.iter().map(|&c| fold(c)).collect();
        // Byte offset in `folded` -> char index (folding can change UTF-8 lengths).
        let mut char_at = vec![0usize; folded.len() + 1];
        for (i, (b, _)) in folded.char_indices().enumerate() {
            char_at[b] = i;
        }
        char_at[folded.len()] = chars.len();
        let mut found: Vec<Found> = self
            .automaton
            .find_overlapping_iter(&folded)
            .map(|m| {
                let start = char_at[m.start()];
                Found { start, end: start + self.term_chars[m.pattern().as_usize()] }
            })
            .filter(|f| on_word_boundaries(&chars, f.start, f.end))
            .collect();
        found.sort_by_key(|f| (f.start, std::cmp::Reverse(f.end)));
        let mut kept: Vec<Found> = Vec::with_capacity(found.len());
        for f in found {
            if kept.last().is_none_or(|k| f.start >= k.end) {
                kept.push(f);
            }
        }
        kept
    }
}

/// One stance target of a score job and the words that mention it.
pub struct NamedTarget {
    pub name: String,
    mentions: Lexicon,
}

impl NamedTarget {
    /// The first place `text` mentions the target (its name or an alias), if any.
    pub fn first_mention(&self, text: &str) -> Option<Found> {
        self.mentions.find(text).into_iter().next()
    }
}

/// A score job's stance targets, in the job's order.
pub struct NamedTargets(Vec<NamedTarget>);

impl std::fmt::Debug for NamedTargets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.iter().map(|t| &t.name)).finish()
    }
}

impl NamedTargets {
    /// Targets from `(name, aliases)` pairs; a target is mentioned by its name or any alias.
    pub fn new(targets: impl IntoIterator<Item = (String, Vec<String>)>) -> Result<Self, LexiconError> {
        let targets = targets
            .into_iter()
            .map(|(name, aliases)| {
                let mentions = Lexicon::new(std::iter::once(name.as_str()).chain(aliases.iter().map(String::as_str)))?;
                Ok(NamedTarget { name, mentions })
            })
            .collect::<Result<Vec<_>, LexiconError>>()?;
        Ok(Self(targets))
    }

    pub fn iter(&self) -> impl Iterator<Item = &NamedTarget> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn on_word_boundaries(chars: &[char], start: usize, end: usize) -> bool {
    let starts_word = is_word(chars[start]);
    let ends_word = is_word(chars[end - 1]);
    let before_ok = !starts_word || start == 0 || !is_word(chars[start - 1]);
    let after_ok = !ends_word || end == chars.len() || !is_word(chars[end]);
    before_ok && after_ok
}

/// Every non-overlapping occurrence of `aspect` in `text`, exactly as written.
pub fn occurrences(text: &str, aspect: &str) -> Vec<Found> {
    if aspect.is_empty() {
        return Vec::new();
    }
    let aspect_chars = aspect.chars().count();
    let mut found = Vec::new();
    let mut chars_before = 0;
    let mut last_byte = 0;
    for (byte, _) in text.match_indices(aspect) {
        chars_before += text[last_byte..byte].chars().count();
        last_byte = byte;
        found.push(Found { start: chars_before, end: chars_before + aspect_chars });
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spans(found: &[Found]) -> Vec<(usize, usize)> {
        found.iter().map(|f| (f.start, f.end)).collect()
    }

    #[test]
    fn lexicon_terms_match_case_insensitively_on_word_boundaries() {
        let lex = Lexicon::new(["battery", "Battery Life", "screen"]).unwrap();
        let text = "BATTERY life is great, the batteryless screen and screens not, battery.";
        assert_eq!(spans(&lex.find(text)), vec![(0, 12), (39, 45), (63, 70)]);
    }

    #[test]
    fn the_longest_term_wins_only_where_it_is_on_a_boundary() {
        let lex = Lexicon::new(["battery", "battery life"]).unwrap();
        assert_eq!(spans(&lex.find("battery lifetime")), vec![(0, 7)]);
    }

    #[test]
    fn offsets_are_code_points_even_around_non_ascii_text() {
        let lex = Lexicon::new(["Merz", "die grünen"]).unwrap();
        let text = "Über MERZ und Die Grünen: ČSSD ne.";
        let found = lex.find(text);
        assert_eq!(spans(&found), vec![(5, 9), (14, 24)]);
        let chars: Vec<char> = text.chars().collect();
        assert_eq!(chars[14..24].iter().collect::<String>(), "Die Grünen");
    }

    #[test]
    fn terms_with_punctuation_need_boundaries_only_where_they_have_word_characters() {
        let lex = Lexicon::new(["C++", "#metoo"]).unwrap();
        assert_eq!(spans(&lex.find("I like C++, ABC++ and #MeToo.")), vec![(7, 10), (22, 28)]);
    }

    #[test]
    fn lexicon_whitespace_is_normalised_and_duplicates_dropped() {
        let lex = Lexicon::new(["  battery   life ", "Battery life", ""]).unwrap();
        assert_eq!(lex.len(), 1);
        assert_eq!(spans(&lex.find("battery life")), vec![(0, 12)]);
    }

    #[test]
    fn a_named_target_is_mentioned_by_its_name_or_an_alias_first_place_first() {
        let targets =
            NamedTargets::new([("CDU".to_string(), vec!["Merz".to_string(), "Christdemokraten".to_string()]), ("climate".to_string(), vec![])]).unwrap();
        let found: Vec<Option<(usize, usize)>> =
            targets.iter().map(|t| t.first_mention("Heute sprach MERZ, dann die CDU.").map(|f| (f.start, f.end))).collect();
        assert_eq!(found, vec![Some((13, 17)), None]);
        assert_eq!(format!("{targets:?}"), r#"["CDU", "climate"]"#);
    }

    #[test]
    fn aspect_occurrences_are_exact_and_counted_in_code_points() {
        assert_eq!(spans(&occurrences("the fan, the fan, the Fan", "fan")), vec![(4, 7), (13, 16)]);
        assert_eq!(spans(&occurrences("é fan é fan", "fan")), vec![(2, 5), (8, 11)]);
        assert!(occurrences("nothing here", "fan").is_empty());
    }
}
