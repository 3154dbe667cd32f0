//! Which series go together and in which order: `by`/`without` groups, the signatures
//! binary operators match on, the labels of a matched result, `__name__` dropping, and the
//! order of `topk`/`bottomk` and `sort*` answers. Both engines use these.

use std::hash::{BuildHasher, Hasher};

use promql_parser::parser::LabelModifier;

use super::value_fn::nan_last;
use crate::model::hashing::{self, KeyedMap, KeyedState};
use crate::model::{Labels, METRIC_NAME};
use crate::promql::func::Func;
use crate::promql::value::Series;

/// Labels without `__name__`.
pub(crate) fn drop_name(l: &Labels) -> Labels {
    if l.metric_name().is_none() {
        return l.clone();
    }
    Labels::from_sorted_strs(l.iter().filter(|(n, _)| *n != crate::model::METRIC_NAME))
}

/// The labels a series contributes to its aggregation group.
pub(crate) fn group_labels(l: &Labels, m: &Option<LabelModifier>) -> Labels {
    Labels::from_sorted_strs(l.iter().filter(|(n, _)| in_group(m, n)))
}

/// Whether label `name` is part of a series' group under modifier `m`.
fn in_group(m: &Option<LabelModifier>, name: &str) -> bool {
    match m {
        None => false,
        Some(LabelModifier::Include(ls)) => ls.labels.iter().any(|x| x == name),
        Some(LabelModifier::Exclude(ls)) => {
            name != METRIC_NAME && !ls.labels.iter().any(|x| x == name)
        }
    }
}

/// Series sorted into their `by`/`without` groups as [`group_labels`] forms them, without
/// building a label set per series: a series' kept pairs are hashed where they lie, and
/// only a group's first series makes the group's label set. (Building one per series and
/// hashing it was 40 % of lowering `sum by (job) (...)` over 10k series, in perf.)
pub(crate) struct Groups<'m> {
    modifier: &'m Option<LabelModifier>,
    state: KeyedState,
    /// The groups whose kept pairs hash to a value (nearly always one).
    by_hash: KeyedMap<u64, Vec<u32>>,
    labels: Vec<Labels>,
}

impl<'m> Groups<'m> {
    pub(crate) fn new(modifier: &'m Option<LabelModifier>) -> Self {
        Groups {
            modifier,
            state: hashing::keyed(),
            by_hash: hashing::map(0),
            labels: Vec::new(),
        }
    }

    /// The group of a series with labels `l` (groups are numbered as first seen).
    pub(crate) fn group_of(&mut self, l: &Labels) -> u32 {
        let m = self.modifier;
        let kept = || l.iter().filter(|(n, _)| in_group(m, n));
        let mut h = self.state.build_hasher();
        for (n, v) in kept() {
            h.write(n.as_bytes());
            h.write_u8(0xff);
            h.write(v.as_bytes());
            h.write_u8(0xfe);
        }
        let same = self.by_hash.entry(h.finish()).or_default();
        let labels = &mut self.labels;
        if let Some(&g) = same.iter().find(|&&g| labels[g as usize].iter().eq(kept())) {
            return g;
        }
        let g = labels.len() as u32;
        labels.push(Labels::from_sorted_strs(kept()));
        same.push(g);
        g
    }

    /// Each group's label set, in group order.
    pub(crate) fn into_labels(self) -> Vec<Labels> {
        self.labels
    }
}

/// How many of a group's `len` members `topk`/`bottomk` (`limit == false`) or `limitk`
/// (`limit == true`) keep for parameter `k` at one step: ⌊k⌋ for the first two (none below
/// 1; a huge k is all), and for `limitk` members are taken while fewer than `k` are.
pub(crate) fn keep_count(limit: bool, k: f64, len: usize) -> usize {
    if limit {
        // The members i = 0, 1, … with i < k: ⌈k⌉ of them (none for a NaN or k ≤ 0).
        if k > 0.0 {
            (k.ceil().min(1e15) as usize).min(len)
        } else {
            0
        }
    } else if k >= 1.0 {
        (k.min(1e15) as usize).min(len)
    } else {
        0
    }
}

/// `topk` (`top`) or `bottomk` order of a group's members: by value, NaN last either way,
/// ties in input (label) order (a stable sort).
pub(crate) fn rank_by_value<T>(members: &mut [T], value: impl Fn(&T) -> f64, top: bool) {
    members.sort_by(|x, y| nan_last(value(x), value(y), top));
}

/// An instant `topk` (descending) or `bottomk` result in value order, ties kept in order.
pub(crate) fn sort_by_value(out: &mut [Series], top: bool) {
    out.sort_by(|x, y| {
        let (a, b) = (x.vals[0].unwrap_or(f64::NAN), y.vals[0].unwrap_or(f64::NAN));
        let o = a.partial_cmp(&b).unwrap_or(std::cmp::Ordering::Equal);
        if top { o.reverse() } else { o }
    });
}

/// Matching key of a series under `on(...)` / `ignoring(...)` (never `__name__` by default).
pub(crate) fn signature(l: &Labels, m: Option<&LabelModifier>) -> Vec<(String, String)> {
    match m {
        Some(LabelModifier::Include(ls)) => l
            .iter()
            .filter(|(n, _)| ls.labels.iter().any(|x| x == n))
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
        Some(LabelModifier::Exclude(ls)) => l
            .iter()
            .filter(|(n, _)| *n != METRIC_NAME && !ls.labels.iter().any(|x| x == n))
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
        None => l
            .iter()
            .filter(|(n, _)| *n != METRIC_NAME)
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
    }
}

pub(crate) fn result_metric(
    many: &Labels,
    one: &Labels,
    drop: bool,
    one_to_one: bool,
    matching: Option<&LabelModifier>,
    include: &[String],
) -> Labels {
    let mut pairs: Vec<(String, String)> = many.to_pairs();
    if drop {
        pairs.retain(|(n, _)| n != METRIC_NAME);
    }
    if one_to_one {
        match matching {
            Some(LabelModifier::Include(ls)) => {
                pairs.retain(|(n, _)| ls.labels.iter().any(|x| x == n))
            }
            Some(LabelModifier::Exclude(ls)) => {
                pairs.retain(|(n, _)| !ls.labels.iter().any(|x| x == n))
            }
            None => {}
        }
    }
    for ln in include {
        pairs.retain(|(n, _)| n != ln);
        if let Some(v) = one.get(ln)
            && !v.is_empty()
        {
            pairs.push((ln.clone(), v.to_string()));
        }
    }
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    Labels::from_sorted_unchecked(pairs)
}

/// `sort`, `sort_desc` (by the value of an instant vector; NaN last), `sort_by_label`,
/// `sort_by_label_desc` (by `names` in natural order, then all labels); stable.
pub(crate) fn sort_vector(f: Func, names: &[String], vs: &mut [Series]) {
    match f {
        Func::Sort | Func::SortDesc => {
            if vs.first().is_none_or(|s| s.vals.len() != 1) {
                return;
            }
            let key = |s: &Series| s.vals[0].unwrap_or(f64::NAN);
            let desc = f == Func::SortDesc;
            vs.sort_by(|a, b| nan_last(key(a), key(b), desc));
        }
        _ => {
            let desc = f == Func::SortByLabelDesc;
            vs.sort_by(|a, b| {
                for l in names {
                    let o = natord(a.labels.get(l).unwrap_or(""), b.labels.get(l).unwrap_or(""));
                    if o != std::cmp::Ordering::Equal {
                        return if desc { o.reverse() } else { o };
                    }
                }
                let o = a.labels.cmp(&b.labels);
                if desc { o.reverse() } else { o }
            });
        }
    }
}

/// Natural ordering used by sort_by_label: runs of digits compare numerically.
fn natord(a: &str, b: &str) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if a[i].is_ascii_digit() && b[j].is_ascii_digit() {
            let si = i;
            while i < a.len() && a[i].is_ascii_digit() {
                i += 1;
            }
            let sj = j;
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            let na = std::str::from_utf8(&a[si..i])
                .unwrap_or("")
                .trim_start_matches('0');
            let nb = std::str::from_utf8(&b[sj..j])
                .unwrap_or("")
                .trim_start_matches('0');
            let o = na.len().cmp(&nb.len()).then_with(|| na.cmp(nb));
            if o != Ordering::Equal {
                return o;
            }
        } else {
            if a[i] != b[j] {
                return a[i].cmp(&b[j]);
            }
            i += 1;
            j += 1;
        }
    }
    (a.len() - i).cmp(&(b.len() - j))
}

#[cfg(test)]
mod tests {
    use super::keep_count;

    /// `limitk` keeps members while fewer than k are kept: the closed form counts as
    /// taking them one by one would, and a huge k costs nothing.
    #[test]
    fn limitk_counts_members_below_k() {
        let ks = [
            f64::NAN,
            -1.0,
            0.0,
            0.5,
            1.0,
            1.5,
            2.0,
            2.5,
            5.0,
            1e300,
            f64::INFINITY,
        ];
        for k in ks {
            for len in 0..8 {
                let one_by_one = (0..len).take_while(|&i| (i as f64) < k).count();
                assert_eq!(keep_count(true, k, len), one_by_one, "k {k}, len {len}");
            }
        }
        assert_eq!(keep_count(true, 1e300, usize::MAX), 1_000_000_000_000_000);
        assert_eq!(keep_count(false, 2.9, usize::MAX), 2);
    }

    use super::{Groups, group_labels};
    use crate::model::Labels;
    use proptest::prelude::*;
    use std::collections::HashMap;

    /// The modifier of an aggregation written in PromQL.
    fn modifier(agg: &str) -> Option<promql_parser::parser::LabelModifier> {
        match promql_parser::parser::parse(&format!("sum {agg} (x)")).expect("parses") {
            promql_parser::parser::Expr::Aggregate(a) => a.modifier,
            e => panic!("not an aggregation: {e:?}"),
        }
    }

    proptest! {
        /// Groups found by hashing kept pairs in place are the groups of the label sets
        /// `group_labels` builds, numbered in the same first-seen order.
        #[test]
        fn groups_are_those_of_the_built_label_sets(
            sets in prop::collection::vec(
                prop::collection::btree_map("(__name__|a|b|c|job)", "(x|y|z|)", 0..5), 0..40),
            agg in prop::sample::select(vec!["", "by ()", "by (job)", "by (a, c)",
                "without ()", "without (a)", "without (job, b, __name__)"]),
        ) {
            let m = modifier(agg);
            let series: Vec<Labels> = sets
                .into_iter()
                .filter_map(|s| Labels::new(s.into_iter().collect()).ok())
                .collect();
            let mut groups = Groups::new(&m);
            let got: Vec<u32> = series.iter().map(|l| groups.group_of(l)).collect();
            let got_labels: Vec<Labels> =
                groups.into_labels();
            let mut index: HashMap<Labels, u32> = HashMap::new();
            let mut want_labels = Vec::new();
            let want: Vec<u32> = series
                .iter()
                .map(|l| {
                    let g = group_labels(l, &m);
                    *index.entry(g.clone()).or_insert_with(|| {
                        want_labels.push(g);
                        want_labels.len() as u32 - 1
                    })
                })
                .collect();
            prop_assert_eq!(got, want);
            prop_assert_eq!(got_labels, want_labels);
        }
    }
}
