-- Undoes 20261206000015_base_models.up.sql.
DROP TABLE base_models;
