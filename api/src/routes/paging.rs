//! Cursor pages of the lists that can grow without bound (jobs, events, row errors,
//! webhook deliveries): a bounded `limit`, one row more fetched than shown to learn
//! whether another page follows, and the cursor of the page's last row.

use crate::error::{ApiError, ApiResult};

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

/// The 422 for a cursor this API did not give.
pub fn bad_cursor(name: &str, cursor: &str) -> ApiError {
    ApiError::Unprocessable(format!("{name} {:?}: not a cursor this API gave (next_after)", absa_platform::job_spec::truncate(cursor, 60)))
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
}
