//! The BI layer against the real Postgres: a BI login of team A reads exactly team A's
//! rows of `bi_sentiment`, `bi_stance`, `bi_daily_aspect_sentiment` and
//! `bi_daily_stance` (aggregates included, predictions toward a named target without a
//! span among them), never team B's, and is refused every base table; the service role still
//! sees every row of the base tables; `create_login` leaves nothing behind when it
//! fails, and `drop_login` removes the role.
//!
//! Logins are cluster-wide roles: each run uses its own random names and drops them at
//! the end, also when an assertion fails.

use absa_store::bi;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool, Row};
use uuid::Uuid;

use absa_platform::config::test_database_url as admin_url;

const TEAM_A: Uuid = Uuid::from_u128(0xa);
const TEAM_B: Uuid = Uuid::from_u128(0xb);
const CORPUS_A: Uuid = Uuid::from_u128(0xca);
const CORPUS_B: Uuid = Uuid::from_u128(0xcb);
const SENTIMENT_A: Uuid = Uuid::from_u128(0x5a);
const SENTIMENT_B: Uuid = Uuid::from_u128(0x5b);
const STANCE_A: Uuid = Uuid::from_u128(0x7a);
const STANCE_B: Uuid = Uuid::from_u128(0x7b);

/// Two teams, each with a corpus, a sentiment model version, a stance model version,
/// succeeded score jobs and their predictions.
async fn seed(pool: &PgPool) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    for (team, name, corpus) in [(TEAM_A, "team a", CORPUS_A), (TEAM_B, "team b", CORPUS_B)] {
        sqlx::query("INSERT INTO teams (id, name) VALUES ($1, $2)").bind(team).bind(name).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO corpora (id, team_id, name) VALUES ($1, $2, $3)")
            .bind(corpus)
            .bind(team)
            .bind(format!("reviews of {name}"))
            .execute(&mut *tx)
            .await?;
    }
    // Documents: A's third and B's second have no publication time (their day is the
    // scoring day).
    let docs: [(Uuid, i64, &str, &str, Option<&str>); 5] = [
        (CORPUS_A, 0, "a-0", "The Screen is great but the battery dies.", Some("2026-01-05 09:00:00+00")),
        (CORPUS_A, 1, "a-1", "Dim screen, and the new policy is bad.", Some("2026-01-05 23:30:00+00")),
        (CORPUS_A, 2, "a-2", "screen is fine I guess", None),
        (CORPUS_B, 0, "b-0", "B's secret screen review", Some("2026-01-05 10:00:00+00")),
        (CORPUS_B, 1, "b-1", "B's secret keyboard review", None),
    ];
    for (corpus, seq, external_id, text, published_at) in docs {
        sqlx::query(
            "INSERT INTO documents (corpus_id, seq, external_id, text, metadata, published_at)
             VALUES ($1, $2, $3, $4, jsonb_build_object('source', $3::text), $5::timestamptz)",
        )
        .bind(corpus)
        .bind(seq)
        .bind(external_id)
        .bind(text)
        .bind(published_at)
        .execute(&mut *tx)
        .await?;
    }
    let versions = [
        (SENTIMENT_A, TEAM_A, "minilm-a", vec!["negative", "neutral", "positive"]),
        (SENTIMENT_B, TEAM_B, "minilm-b", vec!["negative", "neutral", "positive"]),
        (STANCE_A, TEAM_A, "stance-a", vec!["against", "neither", "favor"]),
        (STANCE_B, TEAM_B, "stance-b", vec!["against", "neither", "favor"]),
    ];
    for (id, team, base_model, labels) in versions {
        sqlx::query("INSERT INTO model_versions (id, team_id, base_model, label_names) VALUES ($1, $2, $3, $4)")
            .bind(id)
            .bind(team)
            .bind(base_model)
            .bind(labels)
            .execute(&mut *tx)
            .await?;
    }
    // (model version, corpus, seq, aspect, label, confidence, span): a named target the
    // documents do not mention has no span. Document a-1 mentions "policy" twice.
    let at = Some((0, 3));
    type Seeded<'a> = (Uuid, Uuid, i64, &'a str, &'a str, f32, Option<(i32, i32)>);
    let predictions: [Seeded; 13] = [
        (SENTIMENT_A, CORPUS_A, 0, "Screen", "positive", 0.9, at),
        (SENTIMENT_A, CORPUS_A, 0, "battery", "negative", 0.6, at),
        (SENTIMENT_A, CORPUS_A, 1, "screen", "negative", 0.7, at),
        (SENTIMENT_A, CORPUS_A, 2, "screen", "neutral", 0.5, at),
        (STANCE_A, CORPUS_A, 0, "policy", "favor", 0.8, at),
        (STANCE_A, CORPUS_A, 1, "policy", "against", 0.6, at),
        (STANCE_A, CORPUS_A, 1, "policy", "favor", 0.4, Some((24, 30))),
        (STANCE_A, CORPUS_A, 0, ABORTION, "against", 0.9, None),
        (STANCE_A, CORPUS_A, 1, ABORTION, "favor", 0.7, None),
        (STANCE_A, CORPUS_A, 2, ABORTION, "neither", 0.5, None),
        (SENTIMENT_B, CORPUS_B, 0, "screen", "negative", 0.99, at),
        (SENTIMENT_B, CORPUS_B, 1, "keyboard", "positive", 0.98, at),
        (STANCE_B, CORPUS_B, 0, "policy", "against", 0.97, at),
    ];
    for version in [SENTIMENT_A, STANCE_A, SENTIMENT_B, STANCE_B] {
        let (team, corpus) = if version == SENTIMENT_A || version == STANCE_A { (TEAM_A, CORPUS_A) } else { (TEAM_B, CORPUS_B) };
        let job = Uuid::new_v4();
        sqlx::query(
            "INSERT INTO jobs (id, team_id, kind, state, parameters) VALUES ($1, $2, 'score', 'succeeded',
                     jsonb_build_object('corpus_id', $3::uuid, 'model_version_id', $4::uuid))",
        )
        .bind(job)
        .bind(team)
        .bind(corpus)
        .bind(version)
        .execute(&mut *tx)
        .await?;
        let mine = predictions.iter().filter(|p| p.0 == version);
        for (target_index, (_, corpus, seq, aspect, label, confidence, span)) in mine.enumerate() {
            sqlx::query(
                "INSERT INTO predictions (job_id, corpus_id, seq, target_index, model_version_id, aspect,
                                          span_start, span_end, label, confidence, probabilities, scored_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $9, $10, $7, $8,
                         -- the label's class gets the confidence, the others share the rest
                         (SELECT array_agg(CASE WHEN u.label = $7 THEN $8 ELSE (1 - $8) / (cardinality(m.label_names) - 1) END ORDER BY u.i)
                          FROM model_versions m, unnest(m.label_names) WITH ORDINALITY AS u(label, i) WHERE m.id = $5)::real[],
                         '2026-01-07 12:00:00+00')",
            )
            .bind(job)
            .bind(corpus)
            .bind(seq)
            .bind(target_index as i32)
            .bind(version)
            .bind(aspect)
            .bind(label)
            .bind(confidence)
            .bind(span.map(|s| s.0))
            .bind(span.map(|s| s.1))
            .execute(&mut *tx)
            .await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

/// team, corpus, model version, day, aspect, mentions, positive, negative, neutral, mean confidence.
type DailyRow = (Uuid, String, Uuid, String, String, i64, i64, i64, i64, f64);

/// A stance target no document mentions: its predictions have no span.
const ABORTION: &str = "legalization of abortion";

/// One row of `bi_daily_stance`.
#[derive(Debug, sqlx::FromRow)]
struct DailyStance {
    team_id: Uuid,
    corpus: String,
    corpus_id: Uuid,
    model_version_id: Uuid,
    day: String,
    target: String,
    documents: i64,
    predictions: i64,
    against: i64,
    neither: i64,
    favor: i64,
    against_share: f64,
    neither_share: f64,
    favor_share: f64,
    mean_confidence: f64,
}

const DAILY_STANCE: &str = "SELECT team_id, corpus, corpus_id, model_version_id, day::text AS day, target, documents, predictions, against, neither, favor,
                                   against_share, neither_share, favor_share, mean_confidence
                            FROM bi_daily_stance ORDER BY day, target";

async fn login_pool(db_url: &str, role: &str, password: &str) -> anyhow::Result<PgPool> {
    let options: PgConnectOptions = db_url.parse::<PgConnectOptions>()?.username(role).password(password);
    Ok(PgPoolOptions::new().max_connections(2).connect_with(options).await?)
}

fn assert_permission_denied(result: Result<sqlx::postgres::PgRow, sqlx::Error>, what: &str) {
    match result {
        Ok(_) => panic!("{what}: a BI login must not read it"),
        Err(e) => assert!(e.to_string().contains("permission denied"), "{what}: {e}"),
    }
}

/// Every check; runs in its own task so the caller can drop the roles even when an
/// assertion fails.
async fn checks(pool: PgPool, db_url: String, login_a: String, login_b: String) -> anyhow::Result<()> {
    seed(&pool).await?;

    // --- Least privilege: the service role cannot make roles itself; the provisioned
    // functions make only bi_ logins from a SCRAM verifier and drop only BI logins.
    let (creates_roles,): (bool,) = sqlx::query_as("SELECT rolcreaterole FROM pg_roles WHERE rolname = current_user").fetch_one(&pool).await?;
    assert!(!creates_roles, "the service role has CREATEROLE");
    let denied = sqlx::query("CREATE ROLE bi_sneaky LOGIN").execute(&pool).await.unwrap_err();
    assert_eq!(denied.as_database_error().and_then(|d| d.code()).as_deref(), Some("42501"), "{denied}");
    let verifier = bi::scram_verifier("a-long-password", &[7; 16]);
    for (name, secret, why) in [("sneaky", verifier.as_str(), "names are bi_"), ("bi_sneaky", "plain-text-password", "SCRAM-SHA-256 verifier is required")] {
        let refused = sqlx::query("SELECT absa_create_bi_login($1, $2, 'infinity')").bind(name).bind(secret).execute(&pool).await.unwrap_err();
        assert!(refused.to_string().contains(why), "{name}: {refused}");
    }
    for not_a_login in ["absa", "absa_bi_owner", "absa_bi_admin", "postgres"] {
        let dropped: bool = sqlx::query_scalar("SELECT absa_drop_bi_login($1)").bind(not_a_login).fetch_one(&pool).await?;
        assert!(!dropped, "{not_a_login} was dropped");
    }

    // --- create_login: failures leave nothing behind.
    let roles_named = |name: String| {
        let pool = pool.clone();
        async move {
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_roles WHERE rolname = $1").bind(name).fetch_one(&pool).await.unwrap();
            n
        }
    };
    for bad in ["Bad", "pg_reader", "x", "absa_bi_owner"] {
        assert!(bi::create_login(&pool, TEAM_A, bad, "long-enough-pw", None).await.is_err(), "{bad} accepted");
    }
    let err = bi::create_login(&pool, Uuid::from_u128(0xdead), &login_a, "long-enough-pw", None).await.unwrap_err();
    assert!(err.to_string().contains("not found"), "{err}");
    assert_eq!(roles_named(login_a.clone()).await, 0, "a failed create_login left its role behind");

    bi::create_login(&pool, TEAM_A, &login_a, "secret-a-12345", None).await?;
    bi::create_login(&pool, TEAM_B, &login_b, "secret-b-12345", Some(chrono::Utc::now() + chrono::Duration::days(30))).await?;
    let err = bi::create_login(&pool, TEAM_B, &login_a, "other-password", None).await.unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");
    // The expiry asked for (the logins below connect with their passwords, so the SCRAM
    // verifier the service computed is the one Postgres checks).
    let until: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT rolvaliduntil FROM pg_roles WHERE rolname = $1").bind(&login_b).fetch_one(&pool).await?;
    assert!(until.is_some_and(|t| (t - chrono::Utc::now()).num_days() == 29), "{until:?}");
    assert_eq!(bi::list_logins(&pool, TEAM_B, None, 100).await?, vec![(login_b.clone(), until)]);
    let logins: Vec<(String, Uuid)> = sqlx::query_as("SELECT role_name, team_id FROM bi_logins ORDER BY team_id").fetch_all(&pool).await?;
    assert_eq!(logins, vec![(login_a.clone(), TEAM_A), (login_b.clone(), TEAM_B)]);
    let (can_login, in_group): (bool, bool) =
        sqlx::query_as("SELECT rolcanlogin, pg_has_role(oid, 'absa_bi', 'MEMBER') FROM pg_roles WHERE rolname = $1").bind(&login_a).fetch_one(&pool).await?;
    assert!(can_login && in_group);

    // --- Team A's login.
    let a = login_pool(&db_url, &login_a, "secret-a-12345").await?;
    // ... and no other database of the cluster (pg_hba.conf, set by scripts/services.sh).
    let elsewhere = db_url.rsplit_once('/').map(|(server, _)| format!("{server}/postgres")).unwrap();
    let refused = login_pool(&elsewhere, &login_a, "secret-a-12345").await.expect_err("a BI login connected to the postgres database");
    assert!(refused.to_string().contains("pg_hba.conf rejects connection"), "{refused}");
    let (who, team): (String, Option<Uuid>) = sqlx::query_as("SELECT current_user::text, bi_team()").fetch_one(&a).await?;
    assert_eq!((who.as_str(), team), (login_a.as_str(), Some(TEAM_A)));
    let other: Option<Uuid> = sqlx::query_scalar("SELECT bi_team($1)").bind(&login_b).fetch_one(&a).await?;
    assert_eq!(other, None, "a login must not learn another login's team");

    let rows = sqlx::query(
        "SELECT team_id, corpus, corpus_id, external_id, seq, text, aspect, span_start, span_end, label, confidence,
                model_version_id, base_model, job_id, metadata->>'source' AS source, published_at::text AS published_at,
                scored_at::text AS scored_at
         FROM bi_sentiment ORDER BY seq, aspect",
    )
    .fetch_all(&a)
    .await?;
    let seen: Vec<(String, i64, String, String, String, f32)> = rows
        .iter()
        .map(|r| {
            assert_eq!(r.get::<Uuid, _>("team_id"), TEAM_A);
            assert_eq!(r.get::<Uuid, _>("corpus_id"), CORPUS_A);
            assert_eq!(r.get::<String, _>("corpus"), "reviews of team a");
            assert_eq!(r.get::<Uuid, _>("model_version_id"), SENTIMENT_A);
            assert_eq!(r.get::<String, _>("base_model"), "minilm-a");
            assert_eq!(r.get::<String, _>("source"), r.get::<String, _>("external_id"));
            assert_eq!((r.get::<i32, _>("span_start"), r.get::<i32, _>("span_end")), (0, 3));
            let _: Uuid = r.get("job_id");
            let _: String = r.get("scored_at");
            (r.get("external_id"), r.get("seq"), r.get("aspect"), r.get("label"), r.get::<String, _>("text").chars().take(7).collect(), r.get("confidence"))
        })
        .collect();
    let expected: Vec<(String, i64, String, String, String, f32)> = [
        ("a-0", 0, "battery", "negative", "The Scr", 0.6),
        ("a-0", 0, "Screen", "positive", "The Scr", 0.9),
        ("a-1", 1, "screen", "negative", "Dim scr", 0.7),
        ("a-2", 2, "screen", "neutral", "screen ", 0.5),
    ]
    .iter()
    .map(|&(e, s, a, l, t, c)| (e.into(), s, a.into(), l.into(), t.into(), c))
    .collect();
    // ORDER BY aspect is the collation's order; compare as sorted by (seq, aspect lower-cased).
    let mut seen_sorted = seen.clone();
    seen_sorted.sort_by_key(|x| (x.1, x.2.to_lowercase()));
    assert_eq!(seen_sorted, expected);
    // Class probabilities: one key per class of the version, the label's is the confidence.
    let classes: Vec<(String, f64, f64, i64, bool)> = sqlx::query_as(
        "SELECT label, confidence::float8, (probabilities->>label)::float8,
                (SELECT count(*) FROM jsonb_object_keys(probabilities)),
                abs((SELECT sum(value::float8) FROM jsonb_each_text(probabilities)) - 1) < 1e-5
         FROM bi_sentiment ORDER BY seq, aspect",
    )
    .fetch_all(&a)
    .await?;
    assert_eq!(classes.len(), 4);
    for (label, confidence, probability, keys, sums_to_one) in &classes {
        assert!((confidence - probability).abs() < 1e-6 && *keys == 3 && *sums_to_one, "{label}: {classes:?}");
    }
    let stance_classes: Vec<(f64, f64)> = sqlx::query_as("SELECT confidence::float8, (probabilities->>stance)::float8 FROM bi_stance").fetch_all(&a).await?;
    assert!(stance_classes.len() == 6 && stance_classes.iter().all(|(c, p)| (c - p).abs() < 1e-6), "{stance_classes:?}");
    let published: Vec<Option<String>> =
        sqlx::query_scalar("SELECT (published_at AT TIME ZONE 'UTC')::text FROM bi_sentiment WHERE aspect = 'screen' ORDER BY seq").fetch_all(&a).await?;
    assert!(published[0].as_deref().is_some_and(|p| p.starts_with("2026-01-05")) && published[1].is_none(), "{published:?}");

    type StanceRow = (String, String, String, f32, Option<i32>, Option<i32>, Uuid, String);
    let stance: Vec<StanceRow> = sqlx::query_as(
        "SELECT external_id, target, stance, confidence, span_start, span_end, team_id, base_model FROM bi_stance ORDER BY seq, target, confidence",
    )
    .fetch_all(&a)
    .await?;
    let row = |id: &str, target: &str, stance: &str, confidence: f32, span: Option<(i32, i32)>| -> StanceRow {
        (id.into(), target.into(), stance.into(), confidence, span.map(|s| s.0), span.map(|s| s.1), TEAM_A, "stance-a".into())
    };
    assert_eq!(
        stance,
        vec![
            row("a-0", ABORTION, "against", 0.9, None),
            row("a-0", "policy", "favor", 0.8, Some((0, 3))),
            row("a-1", ABORTION, "favor", 0.7, None),
            row("a-1", "policy", "favor", 0.4, Some((24, 30))),
            row("a-1", "policy", "against", 0.6, Some((0, 3))),
            row("a-2", ABORTION, "neither", 0.5, None),
        ]
    );

    // Daily stance per target: documents, counts of predictions, their shares.
    let daily_stance: Vec<DailyStance> = sqlx::query_as(DAILY_STANCE).fetch_all(&a).await?;
    let counts: Vec<(&str, &str, i64, i64, i64, i64, i64)> =
        daily_stance.iter().map(|d| (d.day.as_str(), d.target.as_str(), d.documents, d.predictions, d.against, d.neither, d.favor)).collect();
    assert_eq!(
        counts,
        vec![
            ("2026-01-05", ABORTION, 2, 2, 1, 0, 1),
            ("2026-01-05", "policy", 2, 3, 1, 0, 2), // a-1 mentions the policy twice: two predictions, one document
            ("2026-01-07", ABORTION, 1, 1, 0, 1, 0), // no publication time: the scoring day
        ]
    );
    let shares_and_means = [((0.5, 0.0, 0.5), 0.8), ((1.0 / 3.0, 0.0, 2.0 / 3.0), 0.6), ((0.0, 1.0, 0.0), 0.5)];
    for (d, ((against, neither, favor), mean)) in daily_stance.iter().zip(shares_and_means) {
        assert_eq!((d.team_id, d.corpus.as_str(), d.corpus_id, d.model_version_id), (TEAM_A, "reviews of team a", CORPUS_A, STANCE_A), "{d:?}");
        let close = |x: f64, y: f64| (x - y).abs() < 1e-6;
        assert!(close(d.against_share, against) && close(d.neither_share, neither) && close(d.favor_share, favor), "{d:?}");
        assert!(close(d.against_share + d.neither_share + d.favor_share, 1.0), "{d:?}");
        assert!(close(d.mean_confidence, mean), "{d:?}: mean confidence {mean} expected");
    }

    let daily: Vec<DailyRow> = sqlx::query_as(
        "SELECT team_id, corpus, model_version_id, day::text, aspect, mentions, positive, negative, neutral, mean_confidence
         FROM bi_daily_aspect_sentiment ORDER BY day, aspect",
    )
    .fetch_all(&a)
    .await?;
    let summary: Vec<(&str, &str, i64, i64, i64, i64)> = daily.iter().map(|d| (d.3.as_str(), d.4.as_str(), d.5, d.6, d.7, d.8)).collect();
    assert_eq!(
        summary,
        vec![
            ("2026-01-05", "battery", 1, 0, 1, 0),
            ("2026-01-05", "screen", 2, 1, 1, 0), // "Screen" and "screen" are one aspect
            ("2026-01-07", "screen", 1, 0, 0, 1), // no publication time: the scoring day
        ]
    );
    for (d, mean) in daily.iter().zip([0.6, 0.8, 0.5]) {
        assert_eq!((d.0, d.1.as_str(), d.2), (TEAM_A, "reviews of team a", SENTIMENT_A));
        assert!((d.9 - mean).abs() < 1e-6, "{d:?}: mean confidence {mean} expected");
    }

    // Nothing of team B, by any route; not even a filter on B's ids finds anything.
    for view in ["bi_sentiment", "bi_stance", "bi_daily_aspect_sentiment", "bi_daily_stance"] {
        let other: i64 =
            sqlx::query_scalar(&format!("SELECT count(*) FROM {view} WHERE team_id = $1 OR corpus_id = $2")).bind(TEAM_B).bind(CORPUS_B).fetch_one(&a).await?;
        assert_eq!(other, 0, "{view} shows team B's rows to team A");
    }
    let leaked: i64 = sqlx::query_scalar("SELECT count(*) FROM bi_sentiment WHERE text LIKE '%secret%'").fetch_one(&a).await?;
    assert_eq!(leaked, 0);

    // No base table, not even the login table.
    for table in ["predictions", "documents", "corpora", "model_versions", "jobs", "teams", "bi_logins", "datasets", "artifacts"] {
        assert_permission_denied(sqlx::query(&format!("SELECT * FROM {table} LIMIT 1")).fetch_one(&a).await, table);
    }
    // Nor a way around: the views cannot be written, nor can the login become the views' owner.
    assert!(sqlx::query("DELETE FROM bi_sentiment").execute(&a).await.is_err());
    assert!(sqlx::query("SET ROLE absa_bi_owner").execute(&a).await.is_err());

    // --- Team B's login sees B's rows only.
    let b = login_pool(&db_url, &login_b, "secret-b-12345").await?;
    let b_rows: Vec<(Uuid, String)> = sqlx::query_as("SELECT team_id, external_id FROM bi_sentiment ORDER BY seq").fetch_all(&b).await?;
    assert_eq!(b_rows, vec![(TEAM_B, "b-0".into()), (TEAM_B, "b-1".into())]);
    let b_stance: Vec<(Uuid, String)> = sqlx::query_as("SELECT team_id, stance FROM bi_stance").fetch_all(&b).await?;
    assert_eq!(b_stance, vec![(TEAM_B, "against".into())]);
    let b_daily: Vec<DailyStance> = sqlx::query_as(DAILY_STANCE).fetch_all(&b).await?;
    let b_daily: Vec<(Uuid, &str, i64, i64, f64)> = b_daily.iter().map(|d| (d.team_id, d.target.as_str(), d.documents, d.against, d.against_share)).collect();
    assert_eq!(b_daily, vec![(TEAM_B, "policy", 1, 1, 1.0)]);
    a.close().await;
    b.close().await;

    // --- The service role owns the tables: row-level security does not apply to it.
    for (table, expected) in [("predictions", 13i64), ("documents", 5), ("corpora", 2), ("model_versions", 4), ("jobs", 4)] {
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}")).fetch_one(&pool).await?;
        assert_eq!(n, expected, "the service role sees {n} rows of {table}");
    }
    // The views are for BI logins: any other role (the service role included) has no
    // team there, so they show it nothing.
    for view in ["bi_sentiment", "bi_daily_stance"] {
        let service_view: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {view}")).fetch_one(&pool).await?;
        assert_eq!(service_view, 0, "{view}");
    }

    // --- drop_login removes the role and its row; only the team's own logins.
    assert!(!bi::drop_login(&pool, TEAM_B, &login_a).await?, "team B dropped team A's login");
    assert!(bi::drop_login(&pool, TEAM_A, &login_a).await?);
    assert!(!bi::drop_login(&pool, TEAM_A, &login_a).await?);
    assert_eq!(roles_named(login_a.clone()).await, 0);
    assert!(bi::drop_login(&pool, TEAM_B, &login_b).await?);
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM bi_logins").fetch_one(&pool).await?;
    assert_eq!(left, 0);
    Ok(())
}

#[tokio::test]
async fn bi_logins_see_their_own_team_through_the_views_and_nothing_else() {
    let db_name = format!("absa_e2e_bi_{}", Uuid::new_v4().simple());
    let db_url = absa_platform::db::create_database(&admin_url(), &db_name).await.expect("create database");
    let pool = PgPool::connect(&db_url).await.expect("connect");
    absa_platform::db::migrate(&pool).await.expect("migrate");

    let suffix = &Uuid::new_v4().simple().to_string()[..12];
    let (login_a, login_b) = (format!("bi_test_a_{suffix}"), format!("bi_test_b_{suffix}"));
    let outcome = tokio::spawn(checks(pool.clone(), db_url.clone(), login_a.clone(), login_b.clone())).await;

    // Roles outlive databases: drop them whatever happened above.
    pool.close().await;
    let mut admin = PgConnection::connect(&admin_url()).await.expect("admin connection");
    absa_platform::db::drop_database(&admin_url(), &db_name).await.expect("drop database");
    for role in [&login_a, &login_b] {
        // The service role has no CREATEROLE: the provisioned function drops BI logins.
        sqlx::query("SELECT absa_drop_bi_login($1)").bind(role).execute(&mut admin).await.expect("drop role");
    }
    match outcome {
        Ok(result) => result.expect("checks"),
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// A database the superuser's part was never run in (made from template0): the service
/// still migrates and runs, and a BI login request is refused saying what to run.
#[tokio::test]
async fn without_the_provisioned_functions_a_bi_login_is_refused_with_what_to_run() {
    let db_name = format!("absa_e2e_bi_bare_{}", Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(&admin_url()).await.expect("admin connection");
    sqlx::query(&format!(r#"CREATE DATABASE "{db_name}" TEMPLATE template0"#)).execute(&mut admin).await.expect("create database");
    let db_url = admin_url().rsplit_once('/').map(|(server, _)| format!("{server}/{db_name}")).unwrap();
    let pool = PgPool::connect(&db_url).await.expect("connect");
    let outcome = async {
        absa_platform::db::migrate(&pool).await?;
        sqlx::query("INSERT INTO teams (id, name) VALUES ($1, 'a')").bind(TEAM_A).execute(&pool).await?;
        let err = bi::create_login(&pool, TEAM_A, "bi_never_made", "long-enough-password", None).await.unwrap_err();
        assert!(matches!(err, absa_platform::PlatformError::InvalidData(_)) && err.to_string().contains("scripts/provision-postgres.sql"), "{err}");
        let logins: i64 = sqlx::query_scalar("SELECT count(*) FROM bi_logins").fetch_one(&pool).await?;
        assert_eq!(logins, 0);
        anyhow::Ok(())
    }
    .await;
    pool.close().await;
    absa_platform::db::drop_database(&admin_url(), &db_name).await.expect("drop database");
    outcome.expect("checks");
}
