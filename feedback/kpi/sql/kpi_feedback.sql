-- kpi_feedback, version 1
-- Additive statistics of feedback per UTC window (grain 'hour' and 'day') and
-- (project, app, model, prompt_version, feedback_source), for the days in table `days(day)`.
-- Attribution: feedback about a known interaction counts in that interaction's window with its
-- dimensions; feedback whose interaction is unknown (conversation-level, or about a user message)
-- counts in its own window with app/model/prompt_version NULL. A preference counts a win for the
-- chosen side and a loss for the rejected side (or a tie for both), each in its own interaction's
-- window, and only when the two sides differ in model or prompt version.
-- {day_min}/{day_end} are literal bounds of the days (they let the scan skip other partitions).
-- Ratings: only criteria in `rating_criteria`, as rating_normalized in [0, 1].
-- Comments: negative when their sentiment score (table `comment_sentiment(event_id, score)`) is at
-- or below params.negative_threshold.
WITH i_days AS (   -- the interactions of the days being computed (the only large hash build)
    SELECT message_id, occurred_at, project, app, model, prompt_version FROM interactions
    WHERE occurred_at >= {day_min} AND occurred_at < {day_end}
      AND date_trunc('day', occurred_at) IN (SELECT day FROM days)
), f AS (
    SELECT f.*, i.occurred_at AS attr_time, i.project AS k_project, i.app, i.model, i.prompt_version
    FROM feedback f JOIN i_days i ON i.message_id = f.message_id
    WHERE f.kind <> 'preference'
    UNION ALL
    SELECT f.*, f.occurred_at, f.project, NULL, NULL, NULL
    FROM (SELECT * FROM feedback WHERE kind <> 'preference' AND occurred_at >= {day_min} AND occurred_at < {day_end}
            AND date_trunc('day', occurred_at) IN (SELECT day FROM days)) f
    WHERE NOT EXISTS (SELECT 1 FROM interactions x WHERE x.message_id = f.message_id)
), pairs_in_days AS (   -- preferences with a side among the interactions of these days
    SELECT DISTINCT f.event_id FROM feedback f JOIN i_days i ON i.message_id = f.chosen_message_id WHERE f.kind = 'preference'
    UNION
    SELECT DISTINCT f.event_id FROM feedback f JOIN i_days i ON i.message_id = f.rejected_message_id WHERE f.kind = 'preference'
), pairs AS (
    SELECT f.feedback_source, f.preference_tie AS tie,
           c.occurred_at AS c_time, c.project AS c_project, c.app AS c_app, c.model AS c_model, c.prompt_version AS c_pv,
           r.occurred_at AS r_time, r.project AS r_project, r.app AS r_app, r.model AS r_model, r.prompt_version AS r_pv
    FROM feedback f
    JOIN pairs_in_days p ON p.event_id = f.event_id
    JOIN interactions c ON c.message_id = f.chosen_message_id
    JOIN interactions r ON r.message_id = f.rejected_message_id
    WHERE f.kind = 'preference' AND (c.model <> r.model OR c.prompt_version IS DISTINCT FROM r.prompt_version)
), sides AS (
    SELECT feedback_source, c_time AS attr_time, c_project AS k_project, c_app AS app, c_model AS model, c_pv AS prompt_version,
           CASE WHEN tie THEN 'tie' ELSE 'win' END AS outcome FROM pairs
    UNION ALL
    SELECT feedback_source, r_time, r_project, r_app, r_model, r_pv,
           CASE WHEN tie THEN 'tie' ELSE 'loss' END FROM pairs
), events AS (
    SELECT attr_time, k_project, app, model, prompt_version, feedback_source,
           CASE WHEN thumb = 'up' THEN 1 ELSE 0 END AS thumbs_up,
           CASE WHEN thumb = 'down' THEN 1 ELSE 0 END AS thumbs_down,
           CASE WHEN kind = 'rating' AND rating_name IN (SELECT name FROM rating_criteria) AND rating_normalized IS NOT NULL
                THEN rating_normalized END AS rating,
           CASE WHEN kind = 'comment' THEN 1 ELSE 0 END AS comments,
           CASE WHEN kind = 'comment' AND s.score <= (SELECT negative_threshold FROM params) THEN 1 ELSE 0 END AS negative_comments,
           CASE WHEN kind = 'correction' THEN 1 ELSE 0 END AS corrections,
           CASE WHEN kind = 'category' THEN 1 ELSE 0 END AS categories,
           0 AS pref_wins, 0 AS pref_losses, 0 AS pref_ties
    FROM f LEFT JOIN comment_sentiment s ON s.event_id = f.event_id
    WHERE date_trunc('day', attr_time) IN (SELECT day FROM days)
    UNION ALL
    SELECT attr_time, k_project, app, model, prompt_version, feedback_source, 0, 0, NULL, 0, 0, 0, 0,
           CASE WHEN outcome = 'win' THEN 1 ELSE 0 END, CASE WHEN outcome = 'loss' THEN 1 ELSE 0 END,
           CASE WHEN outcome = 'tie' THEN 1 ELSE 0 END
    FROM sides
    WHERE date_trunc('day', attr_time) IN (SELECT day FROM days)
)
SELECT g.grain,
       CASE g.grain WHEN 'hour' THEN date_trunc('hour', attr_time) ELSE date_trunc('day', attr_time) END AS window_start,
       CAST(date_trunc('day', attr_time) AS DATE) AS window_day,
       k_project AS project, app, model, prompt_version, feedback_source,
       count(*) AS feedback_events,
       sum(thumbs_up) AS thumbs_up,
       sum(thumbs_down) AS thumbs_down,
       count(rating) AS rating_n,
       sum(rating) AS rating_sum,
       sum(rating * rating) AS rating_sumsq,
       sum(comments) AS comments,
       sum(negative_comments) AS negative_comments,
       sum(corrections) AS corrections,
       sum(categories) AS categories,
       sum(pref_wins) AS pref_wins,
       sum(pref_losses) AS pref_losses,
       sum(pref_ties) AS pref_ties
FROM events CROSS JOIN (VALUES ('hour'), ('day')) AS g(grain)
GROUP BY ALL
