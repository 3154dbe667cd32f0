-- Native histograms: observations and mean per series at its latest sample (count and sum
-- are cumulative; buckets are in positive_buckets / negative_buckets with their spans).
SELECT s.metric, h.timestamp, h.count AS observations, h.sum / h.count AS mean, h.schema
FROM histograms h
JOIN series s ON s.series_id = h.series_id
WHERE h.timestamp = (SELECT max(timestamp) FROM histograms x WHERE x.series_id = h.series_id)
ORDER BY s.metric;
