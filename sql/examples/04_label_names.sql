-- Label names and how many series use each.
SELECT name, count(*) AS series FROM series_labels GROUP BY name ORDER BY name;
