-- Exemplars with their trace ids, newest first.
SELECT s.metric, e.timestamp, e.value,
       e.label_values[CAST(array_position(e.label_names, 'trace_id') AS BIGINT)] AS trace_id
FROM exemplars e
JOIN series s ON s.series_id = e.series_id
ORDER BY e.timestamp DESC
LIMIT 20;
