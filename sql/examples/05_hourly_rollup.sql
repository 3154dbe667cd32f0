-- Hourly min/max/avg per series for one metric.
SELECT series_id, date_trunc('hour', time) AS hour, min(value) AS min, max(value) AS max, avg(value) AS avg
FROM samples_labeled
WHERE metric = 'quiver_example_gauge'
GROUP BY series_id, date_trunc('hour', time)
ORDER BY series_id, hour;
