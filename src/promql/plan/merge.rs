//! Series that share a label set once renamed (`__name__` dropped, `label_replace`) merge
//! into one — Prometheus errors only where two of them have a sample at the same step
//! ("vector cannot contain metrics with the same labelset"), which the series table
//! cannot know. [`merged`] gives each label set one series; when some collide, the input
//! is regrouped onto the merged table and a [`Fold`] keyed by series checks every
//! `(series, step)` holds one sample. Tables without collisions pass unchanged.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::LogicalPlan;

use super::codec::PlanCodec;
use super::fold::{Cell, Fold, Folder};
use super::keyed::Keyed;
use super::regroup::Regroup;
use super::rows;
use super::{Lowered, external, unique};
use crate::model::Labels;
use crate::promql::error::PromqlError;

/// `plan`'s rows under `series` (one label set per input series), colliding ones merged.
pub(super) fn merged(plan: LogicalPlan, series: Vec<Labels>) -> Result<Lowered, PromqlError> {
    if unique(&series) {
        return Ok(Lowered { plan, series });
    }
    let mut table: Vec<Labels> = Vec::new();
    let mut index = crate::model::hashing::map::<Labels, u32>(series.len());
    let map: Vec<u32> = series
        .into_iter()
        .map(|l| {
            *index.entry(l.clone()).or_insert_with(|| {
                table.push(l);
                (table.len() - 1) as u32
            })
        })
        .collect();
    let n = table.len();
    let plan = Regroup::plan_node(plan, map, n)?;
    let plan = Fold::plan_node(
        Keyed::plan_node(plan, (0..n as u32).collect(), "series")?,
        Merge,
    )?;
    Ok(Lowered {
        plan,
        series: table,
    })
}

/// The check: one sample per `(series, step)`.
pub(crate) struct Merge;

impl Folder for Merge {
    fn name(&self) -> &'static str {
        "Merge"
    }

    fn describe(&self) -> String {
        "one sample per series and step".into()
    }

    fn fold(&self, cells: Vec<((u32, u32), Cell)>) -> DfResult<RecordBatch> {
        let (mut s, mut t, mut v) = (Vec::new(), Vec::new(), Vec::new());
        for ((series, step), cell) in cells {
            let [(_, x)] = cell.as_slice() else {
                return Err(external(PromqlError::exec(
                    "vector cannot contain metrics with the same labelset",
                )));
            };
            s.push(series);
            t.push(step);
            v.push(*x);
        }
        rows(s, t, v)
    }

    fn encode(&self) -> DfResult<Vec<u8>> {
        Ok(Vec::new())
    }
}

impl Merge {
    /// `Merge` holds nothing: its wire form is empty.
    pub(super) fn decode(_buf: &[u8], _q: &PlanCodec) -> DfResult<Arc<dyn Folder>> {
        Ok(Arc::new(Merge))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_samples_of_one_series_at_a_step_fail_as_prometheus() {
        assert_eq!(
            Merge
                .fold(vec![((0, 0), vec![(0, 1.0)]), ((0, 1), vec![(1, 2.0)])])
                .unwrap()
                .num_rows(),
            2
        );
        let err = Merge
            .fold(vec![((0, 0), vec![(0, 1.0), (1, 2.0)])])
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("vector cannot contain metrics with the same labelset"),
            "{err}"
        );
    }
}
