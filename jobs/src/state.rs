//! What a job does and where it stands: the two enums the `jobs` table's CHECK
//! constraints spell (a test in `store/tests/jobs.rs` reads them back).

use std::fmt;
use std::str::FromStr;

/// A job's state; the text matches the CHECK constraint in the migrations (a test
/// reads the constraint back).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Queued,
    Dispatched,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobStatus {
    pub const ALL: [JobStatus; 6] = [Self::Queued, Self::Dispatched, Self::Running, Self::Succeeded, Self::Failed, Self::Cancelled];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Dispatched => "dispatched",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobStatus {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Ok(match s {
            "queued" => Self::Queued,
            "dispatched" => Self::Dispatched,
            "running" => Self::Running,
            "succeeded" => Self::Succeeded,
            "failed" => Self::Failed,
            "cancelled" => Self::Cancelled,
            other => return Err(format!("unknown job state {other:?}")),
        })
    }
}

/// What a job does; the text matches the CHECK constraint in the migrations (a test
/// reads the constraint back).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// Fine-tuning one model version.
    Train,
    /// Scoring a corpus; the scheduler splits it into shards.
    Score,
    /// One shard of a scoring job (never listed on its own).
    ScoreShard,
    /// A hyperparameter sweep: child training jobs.
    Sweep,
}

impl JobKind {
    pub const ALL: [JobKind; 4] = [Self::Train, Self::Score, Self::ScoreShard, Self::Sweep];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Train => "train",
            Self::Score => "score",
            Self::ScoreShard => "score_shard",
            Self::Sweep => "sweep",
        }
    }
}

impl fmt::Display for JobKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Self::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| format!("unknown job kind {s:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_through_their_text() {
        for s in JobStatus::ALL {
            assert_eq!(s.as_str().parse::<JobStatus>().unwrap(), s);
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str(), "serde spells it as the database does");
        }
        assert!("sleeping".parse::<JobStatus>().is_err());
        for k in JobKind::ALL {
            assert_eq!(k.as_str().parse::<JobKind>().unwrap(), k);
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str(), "serde spells it as the database does");
        }
        assert!("nap".parse::<JobKind>().is_err());
    }
}
