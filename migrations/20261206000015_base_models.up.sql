-- The base models the trainers have (model folders of their models_dir), recorded by
-- each trainer when it starts: the API lists them and refuses a training job naming
-- none of them. A record stays when its trainers scale to zero.
CREATE TABLE base_models (
    name           text PRIMARY KEY,
    model_type     text NOT NULL,   -- config.json's model_type: bert, xlm-roberta, ...
    parameters     bigint,          -- counted from the safetensors headers
    advertised_by  text NOT NULL,   -- the trainer that recorded it last
    advertised_at  timestamptz NOT NULL DEFAULT now()
);
