-- Undoes 20261206000014_bi_probabilities.up.sql: a view loses a column only by being
-- made again, and the daily views built on the two go and come back with them (as
-- 20261127000007_bi_views and 20261205000012_named_targets made them).
DROP VIEW bi_daily_stance;
DROP VIEW bi_daily_aspect_sentiment;
DROP VIEW bi_sentiment;
DROP VIEW bi_stance;

CREATE VIEW bi_sentiment AS
SELECT c.team_id,
       c.name             AS corpus,
       p.corpus_id,
       d.external_id,
       p.seq,
       d.text,
       p.aspect,
       p.span_start,
       p.span_end,
       p.label,
       p.confidence,
       p.model_version_id,
       m.base_model,
       p.job_id,
       d.metadata,
       d.published_at,
       p.scored_at
FROM predictions p
JOIN documents d      ON d.corpus_id = p.corpus_id AND d.seq = p.seq
JOIN corpora c        ON c.id = p.corpus_id
JOIN model_versions m ON m.id = p.model_version_id
WHERE NOT (m.label_names && ARRAY['favor', 'against']);

CREATE VIEW bi_stance AS
SELECT c.team_id,
       c.name             AS corpus,
       p.corpus_id,
       d.external_id,
       p.seq,
       d.text,
       p.aspect           AS target,
       p.span_start,
       p.span_end,
       p.label            AS stance,
       p.confidence,
       p.model_version_id,
       m.base_model,
       p.job_id,
       d.metadata,
       d.published_at,
       p.scored_at
FROM predictions p
JOIN documents d      ON d.corpus_id = p.corpus_id AND d.seq = p.seq
JOIN corpora c        ON c.id = p.corpus_id
JOIN model_versions m ON m.id = p.model_version_id
WHERE m.label_names && ARRAY['favor', 'against'];

CREATE VIEW bi_daily_aspect_sentiment AS
SELECT team_id,
       corpus,
       corpus_id,
       model_version_id,
       (coalesce(published_at, scored_at) AT TIME ZONE 'UTC')::date AS day,
       lower(aspect)                                               AS aspect,
       count(*)                                                    AS mentions,
       count(*) FILTER (WHERE label = 'positive')                  AS positive,
       count(*) FILTER (WHERE label = 'negative')                  AS negative,
       count(*) FILTER (WHERE label = 'neutral')                   AS neutral,
       avg(confidence)::double precision                           AS mean_confidence
FROM bi_sentiment
GROUP BY team_id, corpus, corpus_id, model_version_id, 5, 6;

CREATE VIEW bi_daily_stance AS
SELECT team_id,
       corpus,
       corpus_id,
       model_version_id,
       (coalesce(published_at, scored_at) AT TIME ZONE 'UTC')::date             AS day,
       target,
       count(DISTINCT seq)                                                      AS documents,
       count(*)                                                                 AS predictions,
       count(*) FILTER (WHERE stance = 'against')                               AS against,
       count(*) FILTER (WHERE stance = 'neither')                               AS neither,
       count(*) FILTER (WHERE stance = 'favor')                                 AS favor,
       (count(*) FILTER (WHERE stance = 'against'))::double precision / count(*) AS against_share,
       (count(*) FILTER (WHERE stance = 'neither'))::double precision / count(*) AS neither_share,
       (count(*) FILTER (WHERE stance = 'favor'))::double precision / count(*)   AS favor_share,
       avg(confidence)::double precision                                        AS mean_confidence
FROM bi_stance
GROUP BY team_id, corpus, corpus_id, model_version_id, 5, 6;

DO $$
BEGIN
    EXECUTE format('GRANT CREATE ON SCHEMA %I TO absa_bi_owner', current_schema());
    ALTER VIEW bi_sentiment OWNER TO absa_bi_owner;
    ALTER VIEW bi_stance OWNER TO absa_bi_owner;
    ALTER VIEW bi_daily_aspect_sentiment OWNER TO absa_bi_owner;
    ALTER VIEW bi_daily_stance OWNER TO absa_bi_owner;
    EXECUTE format('REVOKE CREATE ON SCHEMA %I FROM absa_bi_owner', current_schema());
END $$;

GRANT SELECT ON bi_sentiment, bi_stance, bi_daily_aspect_sentiment, bi_daily_stance TO absa_bi;
