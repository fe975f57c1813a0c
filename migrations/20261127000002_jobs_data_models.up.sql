-- Data, models and results around the jobs: what trainers read and write, what scorers
-- read and write, and what BI tools query.

-- Labelled data for training: one row per aspect instance.
CREATE TABLE datasets (
    id          uuid PRIMARY KEY,
    team_id     uuid NOT NULL REFERENCES teams(id),
    name        text NOT NULL,
    label_names text[] NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (team_id, name)
);

CREATE TABLE dataset_rows (
    dataset_id  uuid NOT NULL REFERENCES datasets(id) ON DELETE CASCADE,
    line        integer NOT NULL,
    split       text NOT NULL DEFAULT 'train' CHECK (split IN ('train', 'validation', 'test')),
    text        text NOT NULL,
    aspect      text NOT NULL,
    span_start  integer NOT NULL CHECK (span_start >= 0),
    span_end    integer NOT NULL CHECK (span_end > span_start),
    label       text NOT NULL,
    added_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (dataset_id, split, line)
);

-- Unlabelled documents to score.
CREATE TABLE corpora (
    id          uuid PRIMARY KEY,
    team_id     uuid NOT NULL REFERENCES teams(id),
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (team_id, name)
);

CREATE TABLE documents (
    corpus_id    uuid NOT NULL REFERENCES corpora(id) ON DELETE CASCADE,
    seq          bigint NOT NULL,          -- position in the corpus: shards are seq ranges
    external_id  text NOT NULL,
    text         text NOT NULL,
    aspect       text,                     -- target given by the uploader, if any
    span_start   integer,
    span_end     integer,
    metadata     jsonb NOT NULL DEFAULT '{}'::jsonb,
    published_at timestamptz,
    PRIMARY KEY (corpus_id, seq),
    UNIQUE (corpus_id, external_id)
);

-- Per-epoch training metrics (one row per job and epoch).
CREATE TABLE training_metrics (
    job_id          uuid NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    epoch           integer NOT NULL,
    train_loss      double precision NOT NULL,
    validation_loss double precision NOT NULL,
    accuracy        double precision NOT NULL,
    macro_f1        double precision NOT NULL,
    detail          jsonb NOT NULL DEFAULT '{}'::jsonb,   -- per-class figures, confusion matrix
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, epoch)
);

-- Artifacts (checkpoints, ONNX files, tokenizers): metadata here, content in
-- artifact_chunks (Postgres backend) or at `location` (filesystem/object store).
-- `complete` turns true only once every byte is stored and the hash checked, so a
-- half-written artifact is never visible to readers.
CREATE TABLE artifacts (
    id          uuid PRIMARY KEY,
    team_id     uuid NOT NULL REFERENCES teams(id),
    kind        text NOT NULL CHECK (kind IN ('checkpoint', 'onnx', 'onnx_int8', 'tokenizer', 'bundle')),
    backend     text NOT NULL CHECK (backend IN ('postgres', 'filesystem')),
    location    text,
    size_bytes  bigint NOT NULL DEFAULT 0,
    sha256      text,
    complete    boolean NOT NULL DEFAULT false,
    job_id      uuid REFERENCES jobs(id),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE artifact_chunks (
    artifact_id uuid NOT NULL REFERENCES artifacts(id) ON DELETE CASCADE,
    idx         integer NOT NULL,
    data        bytea NOT NULL,
    PRIMARY KEY (artifact_id, idx)
);

CREATE TABLE model_versions (
    id              uuid PRIMARY KEY,
    team_id         uuid NOT NULL REFERENCES teams(id),
    base_model      text NOT NULL,
    dataset_id      uuid REFERENCES datasets(id),
    training_job_id uuid REFERENCES jobs(id),
    label_names     text[] NOT NULL,
    metrics         jsonb NOT NULL DEFAULT '{}'::jsonb,
    checkpoint_id   uuid REFERENCES artifacts(id),
    onnx_id         uuid REFERENCES artifacts(id),
    onnx_int8_id    uuid REFERENCES artifacts(id),
    lineage         jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- A scoring job's unit of work: a range of document seqs. Completed in the same
-- transaction that writes its predictions, so a redelivered shard never writes twice.
CREATE TABLE score_shards (
    job_id           uuid NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    shard            integer NOT NULL,
    seq_from         bigint NOT NULL,
    seq_to           bigint NOT NULL,    -- exclusive
    state            text NOT NULL DEFAULT 'queued'
                     CHECK (state IN ('queued', 'dispatched', 'running', 'succeeded', 'failed', 'cancelled')),
    attempts         integer NOT NULL DEFAULT 0,
    lease_owner      text,
    lease_expires_at timestamptz,
    instances        integer,
    last_error       text,
    PRIMARY KEY (job_id, shard)
);

CREATE TABLE predictions (
    job_id           uuid NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    corpus_id        uuid NOT NULL,
    seq              bigint NOT NULL,
    target_index     integer NOT NULL,  -- n-th target found in the document
    model_version_id uuid NOT NULL REFERENCES model_versions(id),
    aspect           text NOT NULL,
    span_start       integer NOT NULL,
    span_end         integer NOT NULL,
    label            text NOT NULL,
    confidence       real NOT NULL,
    probabilities    real[] NOT NULL,
    scored_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, seq, target_index)
);

-- Rows that could not be used, with their line and reason (uploads and scoring).
CREATE TABLE row_errors (
    id          bigserial PRIMARY KEY,
    job_id      uuid REFERENCES jobs(id) ON DELETE CASCADE,
    dataset_id  uuid REFERENCES datasets(id) ON DELETE CASCADE,
    corpus_id   uuid REFERENCES corpora(id) ON DELETE CASCADE,
    line        bigint NOT NULL,
    reason      text NOT NULL,
    at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX row_errors_job ON row_errors (job_id);
