//! Classification metrics: accuracy, macro-F1, per-class precision/recall/F1 and the
//! confusion matrix (rows gold, columns predicted).

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    pub label: String,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// Gold instances of this class.
    pub support: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassificationReport {
    pub accuracy: f64,
    /// Unweighted mean of the per-class F1 (a class absent from both gold and
    /// predictions counts as F1 0, as the reference scripts do).
    pub macro_f1: f64,
    pub per_class: Vec<ClassMetrics>,
    /// Stance's F_avg: the mean F1 of `against` and `favor` (SemEval-2016 Task 6,
    /// TweetEval), for label sets that have both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub f_avg: Option<f64>,
    /// `confusion[gold][predicted]`.
    pub confusion: Vec<Vec<usize>>,
}

impl ClassificationReport {
    /// `predicted` and `gold` are class indices into `labels`.
    pub fn new(predicted: &[usize], gold: &[usize], labels: &[String]) -> Self {
        assert_eq!(predicted.len(), gold.len(), "one prediction per gold label");
        let n = labels.len();
        let mut confusion = vec![vec![0usize; n]; n];
        for (&p, &g) in predicted.iter().zip(gold) {
            confusion[g][p] += 1;
        }
        let correct: usize = (0..n).map(|c| confusion[c][c]).sum();
        let per_class: Vec<ClassMetrics> = (0..n)
            .map(|c| {
                let tp = confusion[c][c] as f64;
                let support: usize = confusion[c].iter().sum();
                let predicted_c: usize = (0..n).map(|g| confusion[g][c]).sum();
                let ratio = |a: f64, b: usize| if b == 0 { 0.0 } else { a / b as f64 };
                let precision = ratio(tp, predicted_c);
                let recall = ratio(tp, support);
                let denom = 2.0 * tp + (predicted_c as f64 - tp) + (support as f64 - tp);
                let f1 = if denom == 0.0 { 0.0 } else { 2.0 * tp / denom };
                ClassMetrics { label: labels[c].clone(), precision, recall, f1, support }
            })
            .collect();
        let accuracy = if gold.is_empty() { f64::NAN } else { correct as f64 / gold.len() as f64 };
        let macro_f1 = per_class.iter().map(|c| c.f1).sum::<f64>() / n as f64;
        let f1_of = |name: &str| per_class.iter().find(|c| c.label == name).map(|c| c.f1);
        let f_avg = f1_of("against").zip(f1_of("favor")).map(|(a, f)| (a + f) / 2.0);
        Self { accuracy, macro_f1, per_class, f_avg, confusion }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> Vec<String> {
        vec!["neg".into(), "neu".into(), "pos".into()]
    }

    #[test]
    fn perfect_predictions_score_one() {
        let r = ClassificationReport::new(&[0, 1, 2, 2], &[0, 1, 2, 2], &labels());
        assert_eq!((r.accuracy, r.macro_f1), (1.0, 1.0));
        assert_eq!(r.confusion, vec![vec![1, 0, 0], vec![0, 1, 0], vec![0, 0, 2]]);
    }

    #[test]
    fn metrics_match_a_hand_computed_case() {
        // gold:  0 0 1 2 2 2 ; pred: 0 1 1 2 0 2
        let r = ClassificationReport::new(&[0, 1, 1, 2, 0, 2], &[0, 0, 1, 2, 2, 2], &labels());
        assert!((r.accuracy - 4.0 / 6.0).abs() < 1e-12);
        // class 0: tp1 fp1 fn1 -> f1 .5 ; class 1: tp1 fp1 fn0 -> 2/3 ; class 2: tp2 fp0 fn1 -> .8
        let f1: Vec<f64> = r.per_class.iter().map(|c| c.f1).collect();
        assert!((f1[0] - 0.5).abs() < 1e-12 && (f1[1] - 2.0 / 3.0).abs() < 1e-12 && (f1[2] - 0.8).abs() < 1e-12);
        assert!((r.macro_f1 - (0.5 + 2.0 / 3.0 + 0.8) / 3.0).abs() < 1e-12);
        assert_eq!(r.per_class[2].support, 3);
        assert!((r.per_class[2].recall - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(r.confusion[2], vec![1, 0, 2]);
    }

    #[test]
    fn a_class_never_seen_scores_zero_f1() {
        let r = ClassificationReport::new(&[0, 0], &[0, 0], &labels());
        assert_eq!(r.per_class[1].f1, 0.0);
        assert!((r.macro_f1 - 1.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn stance_reports_f_avg_over_against_and_favor_only() {
        let stance: Vec<String> = vec!["against".into(), "neither".into(), "favor".into()];
        // against: tp1 fp1 fn1 -> .5 ; favor: tp2 fp0 fn1 -> .8 ; neither does not count
        let r = ClassificationReport::new(&[0, 1, 1, 2, 0, 2], &[0, 0, 1, 2, 2, 2], &stance);
        assert!((r.f_avg.unwrap() - 0.65).abs() < 1e-12);
        assert_eq!(ClassificationReport::new(&[0], &[0], &labels()).f_avg, None);
    }
}
