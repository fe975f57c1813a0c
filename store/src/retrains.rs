//! Retrain schedules: a training job submitted on a cron schedule, and/or whenever the
//! dataset has gained labelled rows since the last one. The scheduler calls [`fire_due`]
//! every pass; the API validates cron expressions with [`parse_cron`].

use chrono::{DateTime, Utc};
use croner::parser::{CronParser, Seconds};
use croner::Cron;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

use absa_jobs::{PromotionPolicy, TrainParams};

use crate::jobs::{self, NewJob};
use crate::{PlatformError, Result};

/// A cron expression: 5 fields (minute hour day-of-month month day-of-week), or 6 with
/// seconds first.
pub fn parse_cron(expression: &str) -> Result<Cron> {
    CronParser::builder().seconds(Seconds::Optional).build().parse(expression).map_err(|e| PlatformError::InvalidData(format!("cron {expression:?}: {e}")))
}

/// The first firing of `cron` strictly after `after`.
pub fn next_after(cron: &Cron, after: DateTime<Utc>) -> Result<DateTime<Utc>> {
    cron.find_next_occurrence(&after, false).map_err(|e| PlatformError::InvalidData(format!("cron {}: no next time: {e}", cron.pattern)))
}

/// The shortest gap, in seconds, between consecutive firings of `cron` among its next
/// 100 after `from` (a cron's gaps vary: `* 3 * * *` fires every minute of one hour).
pub fn shortest_gap_secs(cron: &Cron, from: DateTime<Utc>) -> Result<i64> {
    let mut previous = next_after(cron, from)?;
    let mut shortest = i64::MAX;
    for _ in 0..100 {
        let next = next_after(cron, previous)?;
        shortest = shortest.min((next - previous).num_seconds());
        previous = next;
    }
    Ok(shortest)
}

/// A schedule that fired, and the job it submitted.
#[derive(Clone, Debug, PartialEq)]
pub struct Fired {
    pub schedule_id: Uuid,
    pub job_id: Uuid,
    pub reason: &'static str,
}

/// Submits a training job for every enabled schedule whose cron time has come or whose
/// dataset has more rows than when it last fired. Each schedule is locked while it is
/// handled (`SKIP LOCKED`), and the job's idempotency key names the firing, so two
/// schedulers never fire the same schedule twice.
pub async fn fire_due(pool: &PgPool) -> Result<Vec<Fired>> {
    let mut fired = Vec::new();
    loop {
        let mut tx = pool.begin().await?;
        // id, team, name, job parameters, cron, next run, dataset rows now, cron due
        type Due = (Uuid, Uuid, String, Value, Option<String>, Option<DateTime<Utc>>, i64, bool);
        let due: Option<Due> = sqlx::query_as(
            "SELECT s.id, s.team_id, s.name, s.job_parameters, s.cron, s.next_run_at, rows.n, (s.cron IS NOT NULL AND s.next_run_at <= now())
             FROM retrain_schedules s
             CROSS JOIN LATERAL (SELECT count(*) AS n FROM dataset_rows r WHERE r.dataset_id = s.dataset_id) rows
             WHERE s.enabled AND ((s.cron IS NOT NULL AND s.next_run_at <= now()) OR (s.on_new_rows AND rows.n > s.seen_rows))
             ORDER BY s.next_run_at NULLS LAST
             LIMIT 1 FOR UPDATE OF s SKIP LOCKED",
        )
        .fetch_optional(&mut *tx)
        .await?;
        let Some((id, team, name, parameters, cron, next_run_at, rows, cron_due)) = due else { break };
        let reason = if cron_due { "cron" } else { "new_rows" };
        let now = Utc::now();
        let next = match cron.as_deref().map(parse_cron).transpose()? {
            Some(c) => Some(next_after(&c, now)?),
            None => None,
        };
        // One key per firing: the cron time, or the row count that triggered it.
        let key = match (cron_due, next_run_at) {
            (true, Some(at)) => format!("retrain:{id}:cron:{}", at.timestamp()),
            _ => format!("retrain:{id}:rows:{rows}"),
        };
        // Schedules stored before a bound existed, or with a model since renamed, are
        // checked again: one that can no longer fire a valid job is switched off.
        let mut parameters = match TrainParams::from_value(&parameters) {
            Ok(parameters) => parameters,
            Err(why) => {
                tracing::warn!(schedule = %id, %why, "retrain schedule disabled: its training job would be refused");
                sqlx::query("UPDATE retrain_schedules SET enabled = false WHERE id = $1").bind(id).execute(&mut *tx).await?;
                tx.commit().await?;
                continue;
            }
        };
        parameters.promote.get_or_insert_with(PromotionPolicy::default);
        parameters.retrain = Some(json!({ "schedule_id": id, "schedule": name, "reason": reason }));
        let job = NewJob {
            team_id: team,
            kind: absa_jobs::JobKind::Train,
            priority: 0,
            parameters: serde_json::to_value(&parameters).expect("training parameters serialise"),
            max_attempts: 3,
            idempotency_key: Some(key),
            parent_id: None,
            request_hash: None,
            tags: serde_json::Value::Null,
        };
        let job_id = jobs::submit_in(&mut tx, &job).await?.id();
        sqlx::query("UPDATE retrain_schedules SET next_run_at = $2, seen_rows = $3, last_fired_at = now(), last_job_id = $4 WHERE id = $1")
            .bind(id)
            .bind(next)
            .bind(rows)
            .bind(job_id)
            .execute(&mut *tx)
            .await?;
        jobs::event(&mut *tx, job_id, "retrain_fired", json!({ "schedule_id": id, "reason": reason, "dataset_rows": rows })).await?;
        tx.commit().await?;
        fired.push(Fired { schedule_id: id, job_id, reason });
    }
    Ok(fired)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_and_six_field_expressions() {
        let at = DateTime::parse_from_rfc3339("2026-11-27T10:15:30Z").unwrap().with_timezone(&Utc);
        let daily = parse_cron("0 3 * * *").unwrap();
        assert_eq!(next_after(&daily, at).unwrap().to_rfc3339(), "2026-11-28T03:00:00+00:00");
        let every_ten_seconds = parse_cron("*/10 * * * * *").unwrap();
        assert_eq!(next_after(&every_ten_seconds, at).unwrap().to_rfc3339(), "2026-11-27T10:15:40+00:00");
        assert!(parse_cron("61 * * * *").is_err());
        assert!(parse_cron("not cron").is_err());
    }

    #[test]
    fn the_shortest_gap_is_found_where_firings_bunch_up() {
        let at = DateTime::parse_from_rfc3339("2026-11-27T10:15:30Z").unwrap().with_timezone(&Utc);
        let gap = |c: &str| shortest_gap_secs(&parse_cron(c).unwrap(), at).unwrap();
        assert_eq!(gap("* * * * * *"), 1);
        assert_eq!(gap("0 3 * * *"), 86_400);
        assert_eq!(gap("* 3 * * *"), 60, "every minute of one hour a day");
        assert_eq!(gap("0 0,1 * * *"), 3_600);
    }
}
