//! Exit codes that tell outcomes apart, so scripts can branch on them (`absa --help`
//! lists them).

use std::process::ExitCode;

use crate::client::ApiError;

/// Anything else: a bad argument value, an unreachable API, a refused request.
/// (2, usage errors, is clap's own code.)
pub const ERROR: u8 = 1;
/// No key, or the key is unknown (401) or its role too low (403).
pub const AUTH: u8 = 3;
/// The id or name is unknown to the caller's team (404).
pub const NOT_FOUND: u8 = 4;
/// `watch`: the job failed.
pub const JOB_FAILED: u8 = 5;
/// `watch`: the job was cancelled.
pub const JOB_CANCELLED: u8 = 6;
/// A conflict: `promote` refused (the version does not beat the alias's), a job that
/// has already finished, a name taken (409).
pub const CONFLICT: u8 = 7;

/// A request the client refuses before sending, and the exit code that says why:
/// [`AUTH`] for want of a key or of a role, [`NOT_FOUND`] for a name the API's listing
/// does not have, [`CONFLICT`] for a name already taken.
#[derive(Debug)]
pub struct Refused {
    pub code: u8,
    pub message: String,
}

impl Refused {
    pub fn key(message: impl Into<String>) -> Self {
        Self { code: AUTH, message: message.into() }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self { code: NOT_FOUND, message: message.into() }
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self { code: CONFLICT, message: message.into() }
    }
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Refused {}

/// The exit code of an error: by HTTP status where the API answered.
pub fn of_error(e: &anyhow::Error) -> u8 {
    if let Some(refused) = e.downcast_ref::<Refused>() {
        return refused.code;
    }
    match e.downcast_ref::<ApiError>().map(|a| a.status) {
        Some(401 | 403) => AUTH,
        Some(404) => NOT_FOUND,
        Some(409) => CONFLICT,
        _ => ERROR,
    }
}

/// The exit code of a finished job's state.
pub fn of_job_state(state: &str) -> u8 {
    match state {
        "succeeded" => 0,
        "cancelled" => JOB_CANCELLED,
        _ => JOB_FAILED,
    }
}

/// `code` as the process's exit code.
pub fn code(code: u8) -> ExitCode {
    ExitCode::from(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16) -> anyhow::Error {
        ApiError { status, message: "x".into(), body: serde_json::Value::Null }.into()
    }

    #[test]
    fn statuses_map_to_distinct_codes() {
        let codes: Vec<u8> = [401, 403, 404, 409, 422, 500].into_iter().map(|s| of_error(&api(s))).collect();
        assert_eq!(codes, [AUTH, AUTH, NOT_FOUND, CONFLICT, ERROR, ERROR]);
        assert_eq!(of_error(&anyhow::anyhow!("could not reach the API")), ERROR);
        assert_eq!(of_error(&Refused::key("no API key").into()), AUTH);
        assert_eq!(of_error(&Refused::not_found("no dataset named x").into()), NOT_FOUND);
        assert_eq!(of_error(&Refused::conflict("name taken").into()), CONFLICT);
        assert_eq!([of_job_state("succeeded"), of_job_state("failed"), of_job_state("cancelled")], [0, JOB_FAILED, JOB_CANCELLED]);
    }
}
