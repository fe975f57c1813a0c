-- Class probabilities in the BI views: `probabilities`, a jsonb object from each class of
-- the prediction's model version to its probability (`{"negative": 0.02, "neutral":
-- 0.08, "positive": 0.9}`; `probabilities->>'positive'` in SQL), added as the last column
-- of bi_sentiment and bi_stance (CREATE OR REPLACE keeps their owner, grants and the
-- daily views built on them).
CREATE OR REPLACE VIEW bi_sentiment AS
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
       p.scored_at,
       -- Each class of the model version with its probability.
       (SELECT jsonb_object_agg(k.label, k.probability)
        FROM unnest(m.label_names, p.probabilities) AS k(label, probability)) AS probabilities
FROM predictions p
JOIN documents d      ON d.corpus_id = p.corpus_id AND d.seq = p.seq
JOIN corpora c        ON c.id = p.corpus_id
JOIN model_versions m ON m.id = p.model_version_id
WHERE NOT (m.label_names && ARRAY['favor', 'against']);

CREATE OR REPLACE VIEW bi_stance AS
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
       p.scored_at,
       -- Each class of the model version with its probability.
       (SELECT jsonb_object_agg(k.label, k.probability)
        FROM unnest(m.label_names, p.probabilities) AS k(label, probability)) AS probabilities
FROM predictions p
JOIN documents d      ON d.corpus_id = p.corpus_id AND d.seq = p.seq
JOIN corpora c        ON c.id = p.corpus_id
JOIN model_versions m ON m.id = p.model_version_id
WHERE m.label_names && ARRAY['favor', 'against'];
