//! Label sets that functions make: `label_replace`/`label_join`'s target, `absent`'s labels.

use std::collections::BTreeMap;

use promql_parser::parser::Expr;

use super::args::unwrap_paren;
use super::select::matcher_sets;
use crate::model::{Labels, METRIC_NAME, MatchOp};
use crate::promql::value::Series;

/// Labels with `name` set to `value` (removed when empty).
pub(crate) fn set_label(l: &Labels, name: &str, value: &str) -> Labels {
    let mut pairs: Vec<(String, String)> = l
        .iter()
        .filter(|(n, _)| *n != name)
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    if !value.is_empty() {
        pairs.push((name.to_string(), value.to_string()));
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
    }
    Labels::from_sorted_unchecked(pairs)
}

/// `absent`'s result: labels from the argument's equality matchers (parentheses unwrapped,
/// as Prometheus unwraps call arguments), 1 where nothing was present.
pub(crate) fn absent_result(arg: &Expr, present: &[bool]) -> Vec<Series> {
    if present.iter().all(|p| *p) {
        return vec![];
    }
    let vs = match unwrap_paren(arg) {
        Expr::VectorSelector(vs) => Some(vs),
        Expr::MatrixSelector(ms) => Some(&ms.vs),
        _ => None,
    };
    // As Prometheus: the first equality matcher of a name sets it; any other matcher of the
    // same name removes it again.
    let mut labels: BTreeMap<String, String> = BTreeMap::new();
    let mut has: std::collections::HashSet<String> = Default::default();
    if let Some(vs) = vs
        && let Ok(sets) = matcher_sets(vs)
        && sets.len() == 1
    {
        for m in &sets[0] {
            if m.name == METRIC_NAME {
                continue;
            }
            if matches!(m.op, MatchOp::Equal) && !has.contains(&m.name) {
                if m.value.is_empty() {
                    labels.remove(&m.name);
                } else {
                    labels.insert(m.name.clone(), m.value.clone());
                }
                has.insert(m.name.clone());
            } else {
                labels.remove(&m.name);
            }
        }
    }
    vec![Series {
        hists: Vec::new(),
        labels: Labels::from_sorted_unchecked(labels.into_iter().collect()),
        vals: present.iter().map(|p| (!p).then_some(1.0)).collect(),
    }]
}
