-- Undoes 20261205000012_named_targets.up.sql. Rows without a span (labelled rows and
-- predictions about a target the text does not mention) cannot be held by the older
-- schema: rather than delete them unasked, this refuses, saying how many there are.
-- Delete them first (`DELETE FROM dataset_rows WHERE span_start IS NULL`, and the same
-- for predictions) to go back. Documents' named targets go with their column.

DO $$
DECLARE
    rows_without bigint := (SELECT count(*) FROM dataset_rows WHERE span_start IS NULL);
    predictions_without bigint := (SELECT count(*) FROM predictions WHERE span_start IS NULL);
BEGIN
    IF rows_without > 0 OR predictions_without > 0 THEN
        RAISE EXCEPTION 'cannot revert named targets: % labelled rows and % predictions have no span; delete them first',
            rows_without, predictions_without;
    END IF;
END $$;

DROP VIEW IF EXISTS bi_daily_stance;

ALTER TABLE predictions
    DROP CONSTRAINT IF EXISTS predictions_span_pair,
    ALTER COLUMN span_start SET NOT NULL,
    ALTER COLUMN span_end SET NOT NULL;

ALTER TABLE documents DROP COLUMN IF EXISTS target;

COMMENT ON COLUMN dataset_rows.aspect IS NULL;
ALTER TABLE dataset_rows
    DROP CONSTRAINT IF EXISTS dataset_rows_span_pair,
    ALTER COLUMN span_start SET NOT NULL,
    ALTER COLUMN span_end SET NOT NULL;
