//! Which metric family a series belongs to, for metadata: classic histograms and summaries
//! name their family without the suffixes of their series.

/// The family a series name belongs to for metadata of type `metric_type`: classic
/// histograms and summaries name their family without the `_bucket`/`_sum`/`_count`/
/// `_created` suffix of their series (Prometheus's metadata API keys them so).
pub fn family_of<'a>(series_name: &'a str, metric_type: &str) -> &'a str {
    let suffixes: &[&str] = match metric_type {
        "histogram" | "gaugehistogram" => &["_bucket", "_sum", "_count", "_created"],
        "summary" => &["_sum", "_count", "_created"],
        _ => &[],
    };
    suffixes
        .iter()
        .find_map(|s| series_name.strip_suffix(s))
        .filter(|f| !f.is_empty())
        .unwrap_or(series_name)
}

/// Suffixes a family's series may add to its name (classic histograms, summaries,
/// OpenMetrics counters and info metrics, gauge histograms).
const SUFFIXES: [&str; 8] = [
    "_bucket", "_sum", "_count", "_created", "_total", "_info", "_gcount", "_gsum",
];

/// Whether a series named `series_name` belongs to `family` (any of its series suffixes).
pub fn belongs_to(series_name: &str, family: &str) -> bool {
    candidates(series_name).any(|f| f == family)
}

/// The families a series name may belong to: the name itself, and the name without each
/// suffix it ends with.
pub fn candidates(series_name: &str) -> impl Iterator<Item = &str> {
    std::iter::once(series_name).chain(
        SUFFIXES
            .iter()
            .filter_map(move |s| series_name.strip_suffix(s))
            .filter(|f| !f.is_empty()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classic_families_map_from_their_series() {
        assert_eq!(family_of("x_seconds_bucket", "histogram"), "x_seconds");
        assert_eq!(family_of("x_seconds_count", "summary"), "x_seconds");
        assert_eq!(family_of("x_total", "counter"), "x_total");
        assert_eq!(family_of("_bucket", "histogram"), "_bucket");
        assert!(belongs_to("x_seconds_bucket", "x_seconds"));
        assert!(belongs_to("x_seconds", "x_seconds"));
        assert!(belongs_to("requests_total", "requests"));
        assert!(!belongs_to("x_seconds_other", "x_seconds"));
    }
}
