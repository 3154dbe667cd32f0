-- Samples per metric name, largest first.
SELECT metric, count(*) AS samples
FROM samples_labeled
GROUP BY metric
ORDER BY samples DESC, metric;
