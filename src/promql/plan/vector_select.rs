//! Instant vector selector: for each series and step, the newest sample in
//! `(t - lookback, t]` unless it is a stale marker.
//!
//! A [`Leaf`] source: the selector's series are resolved through the catalog when the
//! query is planned (they are the node's series table, ascending by id) and read from the
//! query's storage snapshot a chunk at a time.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::error::Result as DfResult;
use promql_parser::parser::VectorSelector;

use super::codec::{PlanCodec, decode_wire};
use super::decline::Decline;
use super::leaf::{Leaf, LeafSource};
use super::series_ref::LeafSeries;
use super::{Lowered, PlanCtx, rows};
use crate::promql::error::PromqlError;
use crate::promql::kernels::lookback::{NewestCursor, picked};
use crate::promql::kernels::select::{at_ms, eval_times, offset_ms};
use crate::storage::SeriesRun;
use prost::Message;

/// What the operator reads and how.
#[derive(Clone)]
pub(super) struct Selection {
    /// The selected series over the samples any step can look back to, and the row of
    /// each (the series table is in ascending id order where planned).
    pub series: LeafSeries,
    /// Evaluation time of every step (`@` and `offset` applied).
    pub times: Arc<Vec<i64>>,
    pub lookback: i64,
    /// The selector as written, for plans.
    pub text: String,
    /// Rows carry the picked sample's time in seconds instead of its value
    /// (`timestamp(selector)`).
    pub timestamps: bool,
}

/// Lowers a vector selector; its series table is its series in ascending id.
pub(super) fn lower(p: &PlanCtx, vs: &VectorSelector) -> Result<Option<Lowered>, PromqlError> {
    select(p, vs, false)
}

/// `timestamp(selector)`: the time of the sample each step picks (labels kept; the caller
/// drops `__name__`).
pub(super) fn lower_timestamps(
    p: &PlanCtx,
    vs: &VectorSelector,
) -> Result<Option<Lowered>, PromqlError> {
    select(p, vs, true)
}

fn select(
    p: &PlanCtx,
    vs: &VectorSelector,
    timestamps: bool,
) -> Result<Option<Lowered>, PromqlError> {
    let engine = p.engine;
    let times = eval_times(&p.ctx, at_ms(&vs.at, &p.ctx), offset_ms(&vs.offset));
    let lo = times.iter().copied().min().unwrap_or(0);
    let hi = times.iter().copied().max().unwrap_or(0);
    let lookback = p.ctx.lookback;
    p.hold(times.len())?;
    let catalog = engine.storage.catalog();
    let ids = engine.select_series(vs)?;
    let from = lo.saturating_sub(lookback).saturating_add(1);
    if engine.snapshot().may_have_histograms(&ids, from, hi) {
        return p.decline(Decline::NativeHistograms);
    }
    let scan = engine.snapshot().scan(&ids, from, hi);
    let labels = catalog.labels_many(scan.ids().iter().copied());
    // A series retention removed after the scan was made has no labels: leave it out.
    let (scan, series) = if labels.iter().all(Option::is_some) {
        (scan, labels.into_iter().flatten().collect())
    } else {
        let keep: roaring::RoaringBitmap = scan
            .ids()
            .iter()
            .zip(&labels)
            .filter(|(_, l)| l.is_some())
            .map(|(id, _)| *id)
            .collect();
        let scan = engine
            .snapshot()
            .scan(&keep, lo.saturating_sub(lookback).saturating_add(1), hi);
        let series = catalog
            .labels_many(scan.ids().iter().copied())
            .into_iter()
            .map(|l| l.unwrap_or_default())
            .collect();
        (scan, series)
    };
    let sets = crate::promql::kernels::select::matcher_sets(vs)?;
    let sel = Selection {
        series: LeafSeries::positional(scan, sets),
        times: Arc::new(times),
        lookback,
        text: if timestamps {
            format!("timestamp({vs})")
        } else {
            vs.to_string()
        },
        timestamps,
    };
    Ok(Some(Lowered {
        plan: Leaf::plan_node(p, sel)?,
        series,
    }))
}

impl LeafSource for Selection {
    fn name(&self) -> &'static str {
        "VectorSelect"
    }

    fn text(&self) -> &str {
        &self.text
    }

    fn series(&self) -> &LeafSeries {
        &self.series
    }

    fn with_series(&self, series: LeafSeries) -> Arc<dyn LeafSource> {
        Arc::new(Selection {
            series,
            ..self.clone()
        })
    }

    fn steps(&self) -> usize {
        self.times.len()
    }

    fn rows(&self, chunk: &[SeriesRun]) -> DfResult<RecordBatch> {
        select_chunk(self, chunk)
    }

    fn encode(&self) -> DfResult<Vec<u8>> {
        Ok(SelectionWire {
            text: self.text.clone(),
            times: self.times.to_vec(),
            lookback: self.lookback,
            timestamps: self.timestamps,
        }
        .encode_to_vec())
    }
}

/// The rows of one chunk of series.
fn select_chunk(sel: &Selection, chunk: &[SeriesRun]) -> DfResult<RecordBatch> {
    // At most a row per series and step, and per sample: room for that up front, not
    // grown (and copied) while the rows arrive.
    let bound: usize = chunk.iter().map(|s| s.ts.len().min(sel.times.len())).sum();
    let (mut series, mut step, mut value) = (
        Vec::with_capacity(bound),
        Vec::with_capacity(bound),
        Vec::with_capacity(bound),
    );
    for s in chunk {
        let Some(index) = sel.series.row(s.id) else {
            continue;
        };
        let mut newest = NewestCursor::new(&s.ts);
        for (i, &te) in sel.times.iter().enumerate() {
            if let Some((t, v)) = newest
                .at(te)
                .and_then(|j| picked(&s.ts, &s.vals, j, te, sel.lookback))
            {
                series.push(index);
                step.push(i as u32);
                value.push(if sel.timestamps { t as f64 / 1000.0 } else { v });
            }
        }
    }
    rows(series, step, value)
}

/// `VectorSelect` on the wire (the scan travels in the leaf's envelope).
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct SelectionWire {
    #[prost(string, tag = "1")]
    pub text: String,
    /// Evaluation time of every step.
    #[prost(sint64, repeated, tag = "2")]
    pub times: Vec<i64>,
    #[prost(int64, tag = "3")]
    pub lookback: i64,
    #[prost(bool, tag = "4")]
    pub timestamps: bool,
}

impl Selection {
    pub(super) fn decode(
        buf: &[u8],
        series: LeafSeries,
        _q: &PlanCodec,
    ) -> DfResult<Arc<dyn LeafSource>> {
        let w: SelectionWire = decode_wire(buf, "VectorSelect")?;
        Ok(Arc::new(Selection {
            series,
            times: Arc::new(w.times),
            lookback: w.lookback,
            text: w.text,
            timestamps: w.timestamps,
        }))
    }
}
