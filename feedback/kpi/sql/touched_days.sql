-- The UTC days whose KPI rows change because of the new rows in `new_interactions` and
-- `new_feedback` (same columns as the lake tables). Covers: new interactions; feedback that
-- pointed at a new interaction before it arrived (it moves out of its own day); new feedback in
-- the day of the interaction it is about (or its own day); both sides of a preference.
-- Preference sides are unpivoted so that every join is an equi-join.
WITH pref_sides AS (
    SELECT event_id, chosen_message_id AS message_id FROM feedback WHERE kind = 'preference'
    UNION ALL
    SELECT event_id, rejected_message_id FROM feedback WHERE kind = 'preference'
), new_pref_sides AS (
    SELECT event_id, chosen_message_id AS message_id FROM new_feedback WHERE kind = 'preference'
    UNION ALL
    SELECT event_id, rejected_message_id FROM new_feedback WHERE kind = 'preference'
), prefs_touching_new AS (
    SELECT DISTINCT p.event_id FROM pref_sides p JOIN new_interactions n ON n.message_id = p.message_id
)
SELECT date_trunc('day', occurred_at) AS day FROM new_interactions
UNION
SELECT date_trunc('day', f.occurred_at) FROM feedback f JOIN new_interactions n ON f.message_id = n.message_id
UNION
SELECT date_trunc('day', o.occurred_at)
FROM prefs_touching_new t JOIN pref_sides q ON q.event_id = t.event_id JOIN interactions o ON o.message_id = q.message_id
UNION
SELECT date_trunc('day', coalesce(i.occurred_at, n.occurred_at))
FROM new_feedback n LEFT JOIN interactions i ON i.message_id = n.message_id
WHERE n.kind <> 'preference'
UNION
SELECT date_trunc('day', i.occurred_at) FROM new_pref_sides n JOIN interactions i ON i.message_id = n.message_id
