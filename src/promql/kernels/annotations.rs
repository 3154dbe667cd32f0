//! Annotations: where a query's warnings and infos go, and the words of every one that
//! both engines can emit (Prometheus's `util/annotations`), so the two say the same thing.

use std::sync::Arc;

/// Warnings and infos collected while evaluating, as Prometheus's annotations.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Annotations {
    pub warnings: Vec<String>,
    pub infos: Vec<String>,
}

/// A query's annotations, shared with the operators of its plans.
#[derive(Clone, Default)]
pub(crate) struct Annotator(Arc<parking_lot::Mutex<Collected>>);

/// The annotations so far, and every text already recorded: an operator may report the
/// same one for each of 100k series, so "once" must not be a scan of the list.
#[derive(Default)]
struct Collected {
    annotations: Annotations,
    seen: std::collections::HashSet<String>,
}

impl Annotator {
    /// Records a warning (`PromQL warning: …`), once.
    pub fn warn(&self, msg: String) {
        let msg = format!("PromQL warning: {msg}");
        let mut c = self.0.lock();
        if c.seen.insert(msg.clone()) {
            c.annotations.warnings.push(msg);
        }
    }

    /// Records an info (`PromQL info: …`), once.
    pub fn info(&self, msg: String) {
        let msg = format!("PromQL info: {msg}");
        let mut c = self.0.lock();
        if c.seen.insert(msg.clone()) {
            c.annotations.infos.push(msg);
        }
    }

    /// Records annotations worded in full elsewhere (another process's part of the
    /// plan), each once.
    pub fn absorb(
        &self,
        warnings: impl IntoIterator<Item = String>,
        infos: impl IntoIterator<Item = String>,
    ) {
        let mut c = self.0.lock();
        for w in warnings {
            if c.seen.insert(w.clone()) {
                c.annotations.warnings.push(w);
            }
        }
        for i in infos {
            if c.seen.insert(i.clone()) {
                c.annotations.infos.push(i);
            }
        }
    }

    /// The annotations so far, cleared.
    pub fn take(&self) -> Annotations {
        let mut c = self.0.lock();
        c.seen.clear();
        std::mem::take(&mut c.annotations)
    }
}

/// `rate`/`increase` of a series whose name does not say counter (Prometheus's
/// `PossibleNonCounterInfo`, emitted where the function gave a float); `None` for a name
/// that says counter, and for a series without a name.
pub(crate) fn possible_non_counter(name: &str) -> Option<String> {
    if name.is_empty()
        || ["_total", "_sum", "_count", "_bucket"]
            .iter()
            .any(|suf| name.ends_with(suf))
    {
        return None;
    }
    Some(format!(
        "metric might not be a counter, name does not end in _total/_sum/_count/_bucket: {name:?}"
    ))
}

/// `sort*()` in a range query: a warning, as Prometheus words it.
pub(crate) const SORT_IN_RANGE_QUERY: &str =
    "sort is ineffective for range queries since results are always ordered by labels";

/// Classic `histogram_quantile` over buckets that had to be made monotonic
/// (`HistogramQuantileForcedMonotonicityInfo`).
pub(crate) fn forced_monotonicity(name: &str) -> String {
    format!(
        "input to histogram_quantile needed to be fixed for monotonicity (see https://prometheus.io/docs/prometheus/latest/querying/functions/#histogram_quantile) for metric name {name:?}"
    )
}

/// A quantile outside `[0, 1]` (`InvalidQuantileWarning`, `%g` as Go prints it).
pub(crate) fn invalid_quantile(q: f64) -> String {
    format!(
        "quantile value should be between 0 and 1, got {}",
        crate::model::go_float::format(q, crate::model::go_float::Style::G)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each text once, in first-seen order, warnings and infos apart; a taken query starts
    /// afresh.
    #[test]
    fn each_annotation_once() {
        let a = Annotator::default();
        for name in ["b", "a", "b", "b", "a"] {
            a.info(format!("x {name}"));
        }
        a.warn("x a".into());
        let got = a.take();
        assert_eq!(got.infos, ["PromQL info: x b", "PromQL info: x a"]);
        assert_eq!(got.warnings, ["PromQL warning: x a"]);
        a.info("x b".into());
        assert_eq!(a.take().infos, ["PromQL info: x b"]);
    }
}
