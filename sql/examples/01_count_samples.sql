-- How many samples and series are stored.
SELECT count(*) AS samples, count(DISTINCT series_id) AS series FROM samples;
