-- Whether a live trainer (seen within `live_secs`) offers what a training job asks
-- for: at least `parameters.gpus` GPUs with at least `parameters.min_gpu_memory_mib`
-- each. One definition for the scheduler's dispatch and its "waiting for GPUs" note.
CREATE FUNCTION trainer_offers(parameters jsonb, live_secs double precision) RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT EXISTS (
        SELECT 1 FROM workers w
        WHERE w.role = 'trainer' AND w.last_seen > now() - make_interval(secs => live_secs)
          AND w.gpus >= job_gpus(parameters)
          AND w.gpu_memory_mib >= coalesce((parameters ->> 'min_gpu_memory_mib')::bigint, 0))
$$;
