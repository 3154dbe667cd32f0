-- Average value per job over a time range, reading labels from the map column.
SELECT labels['job'] AS job, avg(value) AS avg_value, min(timestamp) AS first_ms, max(timestamp) AS last_ms
FROM samples_labeled
WHERE timestamp >= 0 AND labels['job'] IS NOT NULL
GROUP BY labels['job']
ORDER BY job;
