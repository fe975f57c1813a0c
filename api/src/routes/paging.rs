//! Cursor pages of the lists that can grow without bound (jobs, datasets, corpora,
//! model versions, registered models, schedules, keys, events, row errors, webhook
//! deliveries): a bounded `limit`, one row more fetched than shown to learn whether
//! another page follows, and the cursor of the page's last row.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::error::{ApiError, ApiResult};

/// The filters and page of a newest-first listing of named things (datasets, corpora,
/// registered models, schedules, keys).
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct NamedPage {
    /// Only the one of this name.
    pub name: Option<String>,
    /// At most this many, newest first (1 to 1000, default 100).
    pub limit: Option<i64>,
    /// The previous page's `next_after`: only older ones.
    pub after: Option<String>,
    /// Only those created at or after / before these instants (RFC 3339).
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
}

/// One newest-first page of the team's named rows: `select` (a `SELECT ... FROM table
/// alias` without a WHERE) filtered by `q` for `team`, and the next page's cursor.
pub async fn named_page<T>(
    pool: &sqlx::PgPool,
    select: &str,
    alias: &str,
    team: uuid::Uuid,
    q: NamedPage,
    key: impl Fn(&T) -> (DateTime<Utc>, uuid::Uuid),
) -> ApiResult<(Vec<T>, Option<String>)>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
{
    let limit = limit(q.limit, 100, 1000)?;
    let after = q.after.as_deref().map(parse_time_cursor).transpose()?;
    let sql = format!(
        "{select} WHERE {alias}.team_id = $1 AND ($2::text IS NULL OR {alias}.name = $2) AND {} ORDER BY {alias}.created_at DESC, {alias}.id DESC LIMIT $7",
        time_page_condition(alias, 3)
    );
    let rows: Vec<T> = sqlx::query_as(&sql)
        .bind(team)
        .bind(q.name)
        .bind(after.map(|a| a.0))
        .bind(after.map(|a| a.1))
        .bind(q.created_after)
        .bind(q.created_before)
        .bind(limit + 1)
        .fetch_all(pool)
        .await?;
    Ok(split(rows, limit, |r| {
        let (at, id) = key(r);
        time_cursor(at, id)
    }))
}

/// The SQL condition of a newest-first page over `alias`'s `created_at` and `id`, with
/// the cursor bound at `$n`, `$n+1` and the time filters at `$n+2`, `$n+3`.
pub fn time_page_condition(alias: &str, n: usize) -> String {
    format!(
        "(${n}::timestamptz IS NULL OR ({alias}.created_at, {alias}.id) < (${n}, ${})) \
         AND (${}::timestamptz IS NULL OR {alias}.created_at >= ${}) AND (${}::timestamptz IS NULL OR {alias}.created_at < ${})",
        n + 1,
        n + 2,
        n + 2,
        n + 3,
        n + 3
    )
}

/// A page size: `limit` (default `default`) within 1 to `max`, else 422.
pub fn limit(limit: Option<i64>, default: i64, max: i64) -> ApiResult<i64> {
    let limit = limit.unwrap_or(default);
    if (1..=max).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::Unprocessable(format!("limit {limit}: 1 to {max}")))
    }
}

/// The page out of `rows` (fetched with `LIMIT limit + 1`) and, when a row was left
/// over, the cursor of the page's last row.
pub fn split<T, C>(mut rows: Vec<T>, limit: i64, cursor: impl Fn(&T) -> C) -> (Vec<T>, Option<C>) {
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next = if more { rows.last().map(cursor) } else { None };
    (rows, next)
}

/// The cursor of a row in a newest-first listing: its creation time (microseconds,
/// Postgres's precision, so a boundary is exact) and id. Opaque to clients: they pass
/// back the `next_after` they were given.
pub fn time_cursor(created: chrono::DateTime<chrono::Utc>, id: uuid::Uuid) -> String {
    format!("{}.{}", created.timestamp_micros(), id.simple())
}

/// [`time_cursor`] read back; a 422 naming `after` for anything else.
pub fn parse_time_cursor(cursor: &str) -> ApiResult<(chrono::DateTime<chrono::Utc>, uuid::Uuid)> {
    let parsed = cursor.split_once('.').and_then(|(micros, id)| {
        let at = chrono::DateTime::from_timestamp_micros(micros.parse().ok()?)?;
        Some((at, uuid::Uuid::parse_str(id).ok()?))
    });
    parsed.ok_or_else(|| bad_cursor("after", cursor))
}

/// The 422 for a cursor this API did not give.
pub fn bad_cursor(name: &str, cursor: &str) -> ApiError {
    ApiError::Unprocessable(format!("{name} {:?}: not a cursor this API gave (next_after)", absa_jobs::spec::truncate(cursor, 60)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_is_at_most_limit_rows_with_the_cursor_of_its_last_when_more_follow() {
        assert_eq!(split(vec![1, 2, 3], 2, |r| r * 10), (vec![1, 2], Some(20)));
        assert_eq!(split(vec![1, 2], 2, |r| r * 10), (vec![1, 2], None));
        assert_eq!(split(Vec::<i32>::new(), 2, |r| r * 10), (vec![], None));
        assert!(limit(None, 100, 1000).is_ok_and(|l| l == 100));
        assert!(limit(Some(0), 100, 1000).is_err() && limit(Some(1001), 100, 1000).is_err());
    }

    #[test]
    fn a_time_cursor_reads_back_as_the_instant_and_id_it_was_made_from() {
        let at = chrono::DateTime::from_timestamp_micros(1_780_000_000_123_456).unwrap();
        let id = uuid::Uuid::new_v4();
        assert_eq!(parse_time_cursor(&time_cursor(at, id)).ok(), Some((at, id)));
        assert!(parse_time_cursor("12.not-an-id").is_err() && parse_time_cursor("x").is_err());
    }
}
