//! Operator commands (`quiver blocks list|verify`, `quiver cardinality`): what they print,
//! kept out of `main.rs` so tests can call them.

use std::fmt::Write as _;
use std::sync::Arc;

use object_store::ObjectStore;
use serde_json::{Value, json};

use crate::storage::Storage;
use crate::storage::verify::{self, BlockReport};

/// `quiver blocks list` (`verify == false`) or `verify`: one line per block, then the
/// problems of each; the second value is whether every block verified.
pub async fn blocks(store: &Arc<dyn ObjectStore>, verify: bool) -> anyhow::Result<(String, bool)> {
    let reports = verify::blocks(store, verify).await?;
    let mut out = String::new();
    writeln!(
        out,
        "{:<26}  {:<24}  {:<24}  {:>9}  {:>12}  {:>12}  {:>5}  parents",
        "block", "min time", "max time", "series", "samples", "bytes", "level"
    )?;
    let time = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms).map_or_else(
            || ms.to_string(),
            |t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        )
    };
    for r in &reports {
        match &r.meta {
            Some(m) => writeln!(
                out,
                "{:<26}  {:<24}  {:<24}  {:>9}  {:>12}  {:>12}  {:>5}  {}{}",
                r.id,
                time(m.min_t),
                time(m.max_t),
                m.num_series,
                m.num_samples,
                m.bytes,
                m.level,
                if m.parents.is_empty() {
                    "-".to_string()
                } else {
                    m.parents.join(",")
                },
                if r.replaced {
                    "  (replaced by a newer block)"
                } else {
                    ""
                }
            )?,
            None => writeln!(out, "{:<26}  (no readable meta.json)", r.id)?,
        }
    }
    let bad: Vec<&BlockReport> = reports.iter().filter(|r| !r.problems.is_empty()).collect();
    if verify {
        writeln!(out)?;
        for r in &bad {
            for p in &r.problems {
                writeln!(out, "{}: {p}", r.id)?;
            }
        }
        writeln!(
            out,
            "{} blocks verified, {} with problems",
            reports.len(),
            bad.len()
        )?;
    }
    Ok((out, bad.is_empty()))
}

/// `quiver cardinality`: the series and label-pair counts and the top `limit` metrics,
/// label names and pairs, computed as `/api/v1/status/tsdb` computes them (its JSON names).
pub fn cardinality(storage: &Storage, limit: usize) -> Value {
    let all = storage.series_ids(&[], i64::MIN / 2, i64::MAX / 2);
    let card = storage.catalog().cardinality(&all, limit);
    let top = |v: Vec<(String, u64)>| {
        v.into_iter()
            .map(|(name, value)| json!({"name": name, "value": value}))
            .collect::<Vec<_>>()
    };
    json!({
        "numSeries": all.len(),
        "numLabelPairs": card.label_pairs,
        "seriesCountByMetricName": top(card.series_by_metric),
        "labelValueCountByLabelName": top(card.values_by_label),
        "memoryInBytesByLabelName": top(card.bytes_by_label),
        "seriesCountByLabelValuePair": top(card.series_by_pair),
    })
}

/// [`cardinality`] as text tables, like `promtool tsdb analyze`.
pub fn cardinality_text(v: &Value) -> String {
    let mut out = format!(
        "series: {}\nlabel pairs: {}\n",
        v["numSeries"], v["numLabelPairs"]
    );
    for (key, title) in [
        (
            "seriesCountByMetricName",
            "Highest cardinality metric names (series)",
        ),
        (
            "labelValueCountByLabelName",
            "Label names with the most values",
        ),
        (
            "memoryInBytesByLabelName",
            "Label names using the most bytes (name and values)",
        ),
        (
            "seriesCountByLabelValuePair",
            "Most common label pairs (series)",
        ),
    ] {
        out.push_str(&format!("\n{title}:\n"));
        for e in v[key].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "{:>12}  {}\n",
                e["value"].as_u64().unwrap_or_default(),
                e["name"].as_str().unwrap_or_default()
            ));
        }
    }
    out
}
