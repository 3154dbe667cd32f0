-- Views over the base tables `series` and `samples` (see docs/ARCHITECTURE.md).
-- Every statement here is executed when a SQL session starts.

-- Samples with their metric name, label map and a proper timestamp column.
CREATE VIEW samples_labeled AS
SELECT s.series_id,
       se.metric,
       se.labels,
       s.timestamp,
       to_timestamp_millis(s.timestamp) AS time,
       s.value
FROM samples s
JOIN series se ON s.series_id = se.series_id;

-- One row per label pair, for GROUP BY over label names.
CREATE VIEW series_labels AS
SELECT series_id, metric, unnest(map_keys(labels)) AS name
FROM series;
