-- Named targets: a labelled row, a document or a prediction may be about a target its
-- text never mentions (stance toward "legalization of abortion"), so the target's span
-- becomes optional: both offsets or neither.

-- Labelled rows. `aspect` keeps holding the target's words: the row's `target` field,
-- else the aspect as written. Where the row gave offsets, the words the text has there
-- are `substr(text, span_start + 1, span_end - span_start)` (which can differ from the
-- target: `target` "CDU" at the mention "Merz"). The existing checks (span_start >= 0,
-- span_end > span_start) pass for NULLs and still hold for spans.
ALTER TABLE dataset_rows
    ALTER COLUMN span_start DROP NOT NULL,
    ALTER COLUMN span_end DROP NOT NULL,
    ADD CONSTRAINT dataset_rows_span_pair CHECK ((span_start IS NULL) = (span_end IS NULL));
COMMENT ON COLUMN dataset_rows.aspect IS
    'the target''s words: the row''s target field, else the aspect as written; span_start/span_end (both or neither) say where the text mentions it';

-- Documents: a corpus row may name its own target (the `target` field), besides or
-- instead of an aspect with a span (`aspect`, `span_start`, `span_end`).
ALTER TABLE documents ADD COLUMN target text;
COMMENT ON COLUMN documents.target IS 'a target the uploader named for this document; it need not occur in the text';

-- Predictions toward a target the document does not mention have no span. NOT VALID:
-- every row already there has both offsets (they were NOT NULL), so there is nothing to
-- check, and a scan of the largest table under an exclusive lock would buy nothing.
ALTER TABLE predictions
    ALTER COLUMN span_start DROP NOT NULL,
    ALTER COLUMN span_end DROP NOT NULL,
    ADD CONSTRAINT predictions_span_pair CHECK ((span_start IS NULL) = (span_end IS NULL)) NOT VALID;

-- Daily stance per target, like bi_daily_aspect_sentiment: the day is the UTC date of
-- publication, or of scoring for documents without a publication time. `documents`
-- counts documents, the stance columns count predictions (a target a document mentions
-- twice has two); the shares are of all the target's predictions that day, so they sum
-- to 1 for the against/neither/favor label set. Targets are compared as written (a
-- score job's named targets have one spelling each: their name).
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

-- Owned by the views' owner and readable by BI logins, as the other views
-- (20261127000007_bi_views): ALTER ... OWNER needs CREATE on the schema for the new
-- owner, granted for the moment and taken back.
DO $$
BEGIN
    EXECUTE format('GRANT CREATE ON SCHEMA %I TO absa_bi_owner', current_schema());
    ALTER VIEW bi_daily_stance OWNER TO absa_bi_owner;
    EXECUTE format('REVOKE CREATE ON SCHEMA %I FROM absa_bi_owner', current_schema());
END $$;

GRANT SELECT ON bi_daily_stance TO absa_bi;
