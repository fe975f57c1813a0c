DROP TABLE retrain_schedules;
DROP TABLE model_alias_events;
DROP TABLE model_aliases;
DROP TABLE api_keys;
