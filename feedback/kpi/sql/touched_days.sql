-- The UTC days whose KPI rows change because of the new rows in `new_interactions` and
-- `new_feedback` (same columns as the lake tables). Covers: new interactions; feedback that
-- pointed at a new interaction before it arrived (it moves out of its own day); new feedback in
-- the day of the interaction it is about (or its own day); both sides of a preference.
SELECT date_trunc('day', occurred_at) AS day FROM new_interactions
UNION
SELECT date_trunc('day', f.occurred_at) FROM feedback f JOIN new_interactions n ON f.message_id = n.message_id
UNION
SELECT date_trunc('day', o.occurred_at)
FROM feedback f
JOIN new_interactions n ON n.message_id IN (f.chosen_message_id, f.rejected_message_id)
JOIN interactions o ON o.message_id IN (f.chosen_message_id, f.rejected_message_id)
WHERE f.kind = 'preference'
UNION
SELECT date_trunc('day', coalesce(i.occurred_at, n.occurred_at))
FROM new_feedback n LEFT JOIN interactions i ON i.message_id = n.message_id
UNION
SELECT date_trunc('day', i.occurred_at)
FROM new_feedback n JOIN interactions i ON i.message_id IN (n.chosen_message_id, n.rejected_message_id)
WHERE n.kind = 'preference'
