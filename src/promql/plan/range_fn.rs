//! A range function of a matrix selector — `rate(x[5m])`, `quantile_over_time(0.9,
//! x[1h])`, … every one PromQL has, with its scalar parameters fixed at planning — per
//! series and step.
//!
//! A [`Leaf`] source like [`super::vector_select`]: the selected series (their labels
//! without `__name__`) are the series table; each chunk of series read from the query's
//! snapshot goes through the same window kernels as the evaluator (`compute_chunk`).
//! Selections whose series collide once `__name__` is dropped are left to the evaluator,
//! which reports the collision only where both have a value.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::error::Result as DfResult;
use promql_parser::parser::{Call, Expr};

use super::codec::{PlanCodec, decode_wire, notes_wire};
use super::decline::Decline;
use super::leaf::{Leaf, LeafSource};
use super::merge::merged;
use super::scalar::scalar;
use super::series_ref::LeafSeries;
use super::{Lowered, PlanCtx, external, rows};
use crate::model::Labels;
use crate::promql::error::PromqlError;
use crate::promql::func::Func;
use crate::promql::kernels::annotations::{Annotator, possible_non_counter};
use crate::promql::kernels::args::unwrap_paren;
use crate::promql::kernels::grouping::drop_name;
use crate::promql::kernels::lookback::without_stale;
use crate::promql::kernels::range_fns::{self as rf, RangeFn};
use crate::promql::kernels::select::{at_ms, duration_ms, eval_times, offset_ms};
use crate::storage::SeriesRun;
use datafusion::common::internal_err;
use prost::Message;

/// Lowers `f(selector[range])`, or `None` when the call is not such a function.
pub(super) fn lower(p: &PlanCtx, call: &Call) -> Result<Option<Lowered>, PromqlError> {
    let Some(function) = Func::of(call.func.name).and_then(Func::range_fn) else {
        return Ok(None);
    };
    let args = &call.args.args;
    let param = |i: usize| args.get(i).and_then(|e| scalar(p, e));
    // The range argument, and the function's scalar parameters at every step.
    let (arg, p1, p2) = match function {
        RangeFn::QuantileOverTime => {
            let (Some(q), Some(arg)) = (param(0), args.get(1)) else {
                return Ok(None);
            };
            (arg, q, vec![])
        }
        RangeFn::PredictLinear => {
            let (Some(d), Some(arg)) = (param(1), args.first()) else {
                return Ok(None);
            };
            (arg, d, vec![])
        }
        RangeFn::DoubleExponentialSmoothing => {
            let (Some(sf), Some(tf), Some(arg)) = (param(1), param(2), args.first()) else {
                return Ok(None);
            };
            // Out-of-range factors are the evaluator's error to word.
            let valid = |x: &f64| *x > 0.0 && *x < 1.0;
            if !sf.iter().all(valid) || !tf.iter().all(valid) {
                return Ok(None);
            }
            (arg, sf, tf)
        }
        _ => match args.as_slice() {
            [arg] => (arg, vec![], vec![]),
            _ => return Ok(None),
        },
    };
    let arg = unwrap_paren(arg);
    if function == RangeFn::QuantileOverTime {
        p.engine.check_quantile(&p1);
    }
    let keep_name = matches!(function, RangeFn::LastOverTime | RangeFn::FirstOverTime);
    let ms = match arg {
        Expr::MatrixSelector(ms) => ms,
        Expr::Subquery(sq) => {
            return super::subquery::lower(p, call.func.name, function, sq, p1, p2, keep_name);
        }
        _ => return Ok(None),
    };
    let (engine, ctx) = (p.engine, &p.ctx);
    let vs = &ms.vs;
    let ends = eval_times(ctx, at_ms(&vs.at, ctx), offset_ms(&vs.offset));
    let lo = ends.iter().copied().min().unwrap_or(0);
    let hi = ends.iter().copied().max().unwrap_or(0);
    let range_ms = duration_ms(ms.range);
    p.hold(2 * ends.len() + p1.len() + p2.len())?;
    let catalog = engine.storage.catalog();
    let ids = engine.select_series(vs)?;
    let from = lo.saturating_sub(range_ms).saturating_add(1);
    if engine.snapshot().may_have_histograms(&ids, from, hi) {
        return p.decline(Decline::NativeHistograms);
    }
    let scan = engine.snapshot().scan(&ids, from, hi);
    let mut series: Vec<Labels> = Vec::with_capacity(scan.num_series());
    let mut index = crate::model::hashing::map::<u32, u32>(scan.num_series());
    let mut names = Vec::new();
    for (&id, l) in scan
        .ids()
        .iter()
        .zip(catalog.labels_many(scan.ids().iter().copied()))
    {
        // Removed by retention since it was selected: nothing to read.
        let Some(l) = l else { continue };
        names.push((series.len() as u32, l.clone()));
        let out = if keep_name { l } else { drop_name(&l) };
        index.insert(id, series.len() as u32);
        series.push(out);
    }
    let notes = CounterNotes::of(
        function,
        names
            .iter()
            .map(|(i, l)| (*i, l.metric_name().unwrap_or(""))),
        engine.annotator(),
    );
    let sets = crate::promql::kernels::select::matcher_sets(vs)?;
    let scan = RangeScan {
        series: LeafSeries::new(scan, index, sets),
        function,
        ends: Arc::new(ends),
        range_ms,
        p1: Arc::new(p1),
        p2: Arc::new(p2),
        times: Arc::new(ctx.steps.iter().collect()),
        cancel: engine.opts.cancel.clone(),
        text: format!("{}({})", call.func.name, ms),
        notes,
    };
    merged(Leaf::plan_node(p, scan)?, series).map(Some)
}

/// `rate` and `increase` of a series whose name does not say counter: an info where the
/// series' windows gave a float, as Prometheus (and the evaluator) emit it.
#[derive(Clone, Default)]
pub(crate) struct CounterNotes {
    /// The info by series-table index; empty for other functions and counter names.
    pub texts: Arc<HashMap<u32, String>>,
    pub annotator: Annotator,
}

impl CounterNotes {
    /// The notes of `function` over series named `names` (series-table index, name).
    pub fn of<'a>(
        function: RangeFn,
        names: impl IntoIterator<Item = (u32, &'a str)>,
        annotator: Annotator,
    ) -> Self {
        let texts = if matches!(function, RangeFn::Rate | RangeFn::Increase) {
            names
                .into_iter()
                .filter_map(|(i, n)| possible_non_counter(n).map(|t| (i, t)))
                .collect()
        } else {
            HashMap::new()
        };
        CounterNotes {
            texts: Arc::new(texts),
            annotator,
        }
    }

    /// Series `series` gave at least one float.
    pub fn gave_float(&self, series: u32) {
        // Most `rate` inputs are counters: no lookup per series then.
        if self.texts.is_empty() {
            return;
        }
        if let Some(text) = self.texts.get(&series) {
            self.annotator.info(text.clone());
        }
    }
}

impl LeafSource for RangeScan {
    fn name(&self) -> &'static str {
        "RangeFnSelect"
    }

    fn text(&self) -> &str {
        &self.text
    }

    fn series(&self) -> &LeafSeries {
        &self.series
    }

    fn with_series(&self, series: LeafSeries) -> Arc<dyn LeafSource> {
        Arc::new(RangeScan {
            series,
            ..self.clone()
        })
    }

    fn steps(&self) -> usize {
        self.ends.len()
    }

    fn window_ms(&self) -> i64 {
        self.range_ms
    }

    fn rows(&self, chunk: &[SeriesRun]) -> DfResult<RecordBatch> {
        compute_chunk(self, chunk)
    }

    fn encode(&self) -> DfResult<Vec<u8>> {
        let (note_index, note_text) = notes_wire(&self.notes);
        Ok(RangeScanWire {
            text: self.text.clone(),
            function: self.function.name().to_string(),
            ends: self.ends.to_vec(),
            range_ms: self.range_ms,
            p1: self.p1.to_vec(),
            p2: self.p2.to_vec(),
            times: self.times.to_vec(),
            note_index,
            note_text,
        }
        .encode_to_vec())
    }
}

/// What one range-function scan needs.
#[derive(Clone)]
pub(super) struct RangeScan {
    /// The selected series over the widest window of any step, and the row of each.
    pub series: LeafSeries,
    pub function: RangeFn,
    /// Window end of every step, and the window length.
    pub ends: Arc<Vec<i64>>,
    pub range_ms: i64,
    /// The function's scalar parameters at every step (empty: none).
    pub p1: Arc<Vec<f64>>,
    pub p2: Arc<Vec<f64>>,
    /// Evaluation time of every step (for functions that need it).
    pub times: Arc<Vec<i64>>,
    /// Deadline and cancellation of the query, checked in the window loops.
    pub cancel: crate::promql::Cancel,
    /// The call as written, for plans.
    pub text: String,
    /// Infos for series that do not look like counters.
    pub notes: CounterNotes,
}

fn compute_chunk(scan: &RangeScan, series: &[SeriesRun]) -> DfResult<RecordBatch> {
    let (mut series_col, mut step, mut val) = (Vec::new(), Vec::new(), Vec::new());
    for s in series.iter() {
        let Some(g) = scan.series.row(s.id) else {
            continue;
        };
        let before = val.len();
        // At most one value per step: the pushes below then never grow the vectors.
        step.reserve(scan.ends.len());
        val.reserve(scan.ends.len());
        // Range windows never see stale markers; copy only the series that have any.
        let filtered = without_stale(&s.ts, &s.vals);
        let (ts, vals): (&[i64], &[f64]) = match &filtered {
            Some((ts, vals)) => (ts, vals),
            None => (&s.ts, &s.vals),
        };
        rf::for_each_value(
            scan.function,
            ts,
            vals,
            &scan.ends,
            scan.range_ms,
            (&scan.p1, &scan.p2),
            |i| scan.times.get(i).copied().unwrap_or(0),
            || scan.cancel.check().is_ok(),
            |i, v| {
                step.push(i as u32);
                val.push(v);
            },
        );
        if val.len() > before {
            // The series' rows, all at once.
            series_col.resize(val.len(), g);
            scan.notes.gave_float(g);
        }
    }
    // A cancelled query's windows stopped early: never hand on partial sums.
    scan.cancel.check().map_err(external)?;
    rows(series_col, step, val)
}

/// `RangeFnSelect` on the wire (the scan travels in the leaf's envelope).
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct RangeScanWire {
    #[prost(string, tag = "1")]
    pub text: String,
    /// The range function's name.
    #[prost(string, tag = "2")]
    pub function: String,
    /// Window end of every step, and the window length.
    #[prost(sint64, repeated, tag = "3")]
    pub ends: Vec<i64>,
    #[prost(int64, tag = "4")]
    pub range_ms: i64,
    // Tags 5 and 6 held catalog ids and their rows before issue 26; the leaf's envelope
    // now names the series.
    /// The scalar parameters at every step.
    #[prost(double, repeated, tag = "7")]
    pub p1: Vec<f64>,
    #[prost(double, repeated, tag = "8")]
    pub p2: Vec<f64>,
    /// Evaluation time of every step.
    #[prost(sint64, repeated, tag = "9")]
    pub times: Vec<i64>,
    /// `rate`/`increase`: the infos of series that do not look like counters.
    #[prost(uint32, repeated, tag = "10")]
    pub note_index: Vec<u32>,
    #[prost(string, repeated, tag = "11")]
    pub note_text: Vec<String>,
}

impl RangeScan {
    pub(super) fn decode(
        buf: &[u8],
        series: LeafSeries,
        q: &PlanCodec,
    ) -> DfResult<Arc<dyn LeafSource>> {
        let w: RangeScanWire = decode_wire(buf, "RangeFnSelect")?;
        if w.times.len() != w.ends.len() {
            return internal_err!(
                "range function with {} steps and {} windows",
                w.times.len(),
                w.ends.len()
            );
        }
        let Some(function) = RangeFn::parse(&w.function) else {
            return internal_err!("unknown range function {}", w.function);
        };
        Ok(Arc::new(RangeScan {
            series,
            function,
            ends: Arc::new(w.ends),
            range_ms: w.range_ms,
            p1: Arc::new(w.p1),
            p2: Arc::new(w.p2),
            times: Arc::new(w.times),
            cancel: q.cancel(),
            text: w.text,
            notes: q.notes(w.note_index, w.note_text),
        }))
    }
}
