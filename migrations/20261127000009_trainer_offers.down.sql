DROP FUNCTION trainer_offers(jsonb, double precision);
