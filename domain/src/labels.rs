//! The ordered class names of a model (sentiment's three, stance's three, any set).

use serde::{Deserialize, Serialize};

/// Class names in model-output order. The index of a name is its logit's column.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LabelSet(Vec<String>);

impl LabelSet {
    pub fn new(names: Vec<String>) -> Result<Self, String> {
        if names.len() < 2 {
            return Err(format!("a label set needs at least two labels, got {names:?}"));
        }
        for (i, n) in names.iter().enumerate() {
            if n.trim().is_empty() {
                return Err("empty label name".into());
            }
            if names[..i].contains(n) {
                return Err(format!("label {n:?} appears twice"));
            }
        }
        Ok(Self(names))
    }

    /// negative, neutral, positive.
    pub fn sentiment() -> Self {
        Self(vec!["negative".into(), "neutral".into(), "positive".into()])
    }

    /// against, neither, favor.
    pub fn stance() -> Self {
        Self(vec!["against".into(), "neither".into(), "favor".into()])
    }

    /// The labels found in data, in a stable order: the sentiment or stance order when
    /// the data uses (a subset of) those names, else sorted.
    pub fn from_data<'a>(labels: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let mut seen: Vec<String> = Vec::new();
        for l in labels {
            if !seen.iter().any(|s| s == l) {
                seen.push(l.to_owned());
            }
        }
        for known in [Self::sentiment(), Self::stance()] {
            if seen.iter().all(|s| known.index(s).is_some()) && seen.len() > 1 {
                return Ok(known);
            }
        }
        seen.sort();
        Self::new(seen)
    }

    pub fn index(&self, name: &str) -> Option<usize> {
        self.0.iter().position(|n| n == name)
    }

    pub fn name(&self, index: usize) -> &str {
        &self.0[index]
    }

    pub fn names(&self) -> &[String] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentiment_labels_in_data_keep_the_canonical_order() {
        let set = LabelSet::from_data(["positive", "negative", "neutral", "positive"]).unwrap();
        assert_eq!(set, LabelSet::sentiment());
    }

    #[test]
    fn stance_labels_are_recognised() {
        assert_eq!(LabelSet::from_data(["favor", "against"]).unwrap(), LabelSet::stance());
    }

    #[test]
    fn unknown_label_sets_are_sorted() {
        let set = LabelSet::from_data(["b", "a", "c"]).unwrap();
        assert_eq!(set.names(), ["a", "b", "c"]);
        assert_eq!(set.index("c"), Some(2));
    }

    #[test]
    fn a_single_label_is_not_a_label_set() {
        assert!(LabelSet::from_data(["only"]).is_err());
    }
}
