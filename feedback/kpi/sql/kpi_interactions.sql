-- kpi_interactions, version 1
-- Additive statistics of interactions per UTC window (grain 'hour' and 'day') and
-- (project, app, model, prompt_version), for the days listed in table `days(day)`.
-- Inputs: views `interactions`, `feedback`; tables `days(day)`, `prices(model, input_usd_per_1k,
-- output_usd_per_1k)`, `rating_criteria(name)`, `params(positive_rating_threshold)`.
-- An interaction is "positively rated" when it has a thumbs-up or a satisfaction rating
-- (normalised, criteria in rating_criteria) >= positive_rating_threshold, and no thumbs-down.
-- cost_usd is the event's own cost, else tokens x the configured price (counted in cost_derived_n).
WITH i AS (
    SELECT * FROM interactions
    WHERE occurred_at >= {day_min} AND occurred_at < {day_end}
      AND date_trunc('day', occurred_at) IN (SELECT day FROM days)
), fb AS (
    SELECT f.message_id,
           count(*) FILTER (WHERE f.thumb = 'up') AS ups,
           count(*) FILTER (WHERE f.thumb = 'down') AS downs,
           max(f.rating_normalized) FILTER (WHERE f.kind = 'rating' AND f.rating_name IN (SELECT name FROM rating_criteria)) AS best_rating,
           bool_or(f.kind = 'thumb') AS has_thumb,
           bool_or(f.kind = 'rating') AS has_rating,
           bool_or(f.kind = 'comment') AS has_comment,
           bool_or(f.kind = 'correction') AS has_correction,
           bool_or(f.kind = 'category') AS has_category
    FROM feedback f
    WHERE f.message_id IN (SELECT message_id FROM i)
    GROUP BY f.message_id
), pref AS (
    SELECT DISTINCT message_id FROM (
        SELECT chosen_message_id AS message_id FROM feedback WHERE kind = 'preference'
        UNION ALL
        SELECT rejected_message_id FROM feedback WHERE kind = 'preference'
    ) WHERE message_id IN (SELECT message_id FROM i)
), enriched AS (
    SELECT i.*,
           coalesce(i.cost_usd, i.tokens_in / 1000.0 * p.input_usd_per_1k + i.tokens_out / 1000.0 * p.output_usd_per_1k) AS cost,
           i.cost_usd IS NULL AND p.model IS NOT NULL AND i.tokens_in IS NOT NULL AND i.tokens_out IS NOT NULL AS cost_derived,
           fb.message_id IS NOT NULL OR pref.message_id IS NOT NULL AS any_feedback,
           coalesce(fb.has_thumb, false) AS has_thumb,
           coalesce(fb.has_rating, false) AS has_rating,
           coalesce(fb.has_comment, false) AS has_comment,
           coalesce(fb.has_correction, false) AS has_correction,
           coalesce(fb.has_category, false) AS has_category,
           pref.message_id IS NOT NULL AS has_preference,
           coalesce(fb.downs, 0) = 0 AND (coalesce(fb.ups, 0) > 0
               OR coalesce(fb.best_rating >= (SELECT positive_rating_threshold FROM params), false)) AS positive
    FROM i
    LEFT JOIN fb ON fb.message_id = i.message_id
    LEFT JOIN pref ON pref.message_id = i.message_id
    LEFT JOIN prices p ON p.model = i.model
)
SELECT g.grain,
       CASE g.grain WHEN 'hour' THEN date_trunc('hour', occurred_at) ELSE date_trunc('day', occurred_at) END AS window_start,
       CAST(date_trunc('day', occurred_at) AS DATE) AS window_day,
       project, app, model, prompt_version,
       count(*) AS interactions,
       count(DISTINCT conversation_id) AS conversations,
       count(DISTINCT user_id) AS users,
       count(*) FILTER (WHERE status = 'error') AS errors,
       count(*) FILTER (WHERE any_feedback) AS with_feedback,
       count(*) FILTER (WHERE has_thumb) AS with_thumb,
       count(*) FILTER (WHERE has_rating) AS with_rating,
       count(*) FILTER (WHERE has_comment) AS with_comment,
       count(*) FILTER (WHERE has_correction) AS with_correction,
       count(*) FILTER (WHERE has_category) AS with_category,
       count(*) FILTER (WHERE has_preference) AS with_preference,
       count(*) FILTER (WHERE positive) AS positive_answers,
       count(latency_ms) AS latency_n,
       sum(latency_ms) AS latency_ms_sum,
       count(time_to_first_token_ms) AS ttft_n,
       sum(tokens_in) AS tokens_in,
       sum(tokens_out) AS tokens_out,
       sum(cost) AS cost_usd,
       count(cost) AS cost_n,
       count(*) FILTER (WHERE cost_derived) AS cost_derived_n,
       sum(cost) FILTER (WHERE positive) AS cost_usd_positive
FROM enriched CROSS JOIN (VALUES ('hour'), ('day')) AS g(grain)
GROUP BY ALL
