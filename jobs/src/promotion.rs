//! A training job's promotion rule (retrains set it): the new version takes an alias
//! only if it beats the alias's current version on a validation figure. The registry in
//! `platform` applies it; the names it uses are checked here.

use serde::{Deserialize, Serialize};

/// Which validation figure decides a promotion.
// The CLI's `--metric` values are these wire names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum PromotionMetric {
    #[default]
    MacroF1,
    Accuracy,
    /// Stance's F_avg, the mean F1 of `against` and `favor` (SemEval-2016 Task 6): only
    /// versions whose labels have both report it.
    FAvg,
}

impl PromotionMetric {
    /// The key of this figure in `model_versions.metrics`.
    pub fn metrics_key(self) -> &'static str {
        match self {
            Self::MacroF1 => "validation_macro_f1",
            Self::Accuracy => "validation_accuracy",
            Self::FAvg => "validation_f_avg",
        }
    }

    /// Whether a model with these labels has this figure: F_avg needs `against` and
    /// `favor`; the others every model has. Checked where a job asks for the metric, so a
    /// job does not train only to find it cannot compare its version.
    pub fn check_labels(self, labels: &[String]) -> std::result::Result<(), String> {
        let has = |name: &str| labels.iter().any(|l| l == name);
        if self == Self::FAvg && !(has("against") && has("favor")) {
            return Err(format!(
                "metric f_avg is stance's mean F1 of against and favor; the labels {:?} do not have both (use macro_f1 or accuracy)",
                labels.iter().map(|l| crate::text::truncate(l, 40)).take(10).collect::<Vec<_>>()
            ));
        }
        Ok(())
    }
}

/// "Promote the new version to `alias` if it beats the current one on `metric`."
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PromotionPolicy {
    #[serde(default = "production")]
    pub alias: String,
    #[serde(default)]
    pub metric: PromotionMetric,
    /// The registered model the alias is of; a version of another model is refused.
    /// Default: the version's own model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

fn production() -> String {
    "production".into()
}

impl Default for PromotionPolicy {
    fn default() -> Self {
        Self { alias: production(), metric: PromotionMetric::default(), model: None }
    }
}

/// Alias names: lower-case letters, digits, `-` and `_`, as the table's CHECK says.
pub fn valid_alias(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.len() <= 63
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// Registered model names: as alias names, lower-case letters, digits, `-` and `_`.
pub fn valid_model_name(name: &str) -> bool {
    valid_alias(name)
}
