//! A range function of a subquery — `max_over_time(rate(x[5m])[1h:1m])`: the inner
//! expression is lowered over the subquery's own grid (as the evaluator aligns it), and a
//! [`Fold`] keyed by inner series gathers each series' points and runs the evaluator's
//! window kernels over them at every outer step.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::error::Result as DfResult;
use promql_parser::parser::SubqueryExpr;
use promql_parser::parser::value::ValueType;

use super::codec::{PlanCodec, decode_wire, notes_wire};
use super::decline::Decline;
use super::fold::{Cell, Fold, Folder};
use super::keyed::Keyed;
use super::merge::merged;
use super::range_fn::CounterNotes;
use super::rows;
use super::{Lowered, PlanCtx, external};
use crate::model::Labels;
use crate::promql::engine::Ctx;
use crate::promql::error::PromqlError;
use crate::promql::kernels::grouping::drop_name;
use crate::promql::kernels::range_fns::{self as rf, RangeFn};
use crate::promql::kernels::select::{
    at_ms, duration_ms, eval_times, offset_ms, subquery_grid, subquery_step,
};
use datafusion::common::internal_err;
use prost::Message;

pub(super) fn lower(
    p: &PlanCtx,
    name: &str,
    function: RangeFn,
    sq: &SubqueryExpr,
    p1: Vec<f64>,
    p2: Vec<f64>,
    keep_name: bool,
) -> Result<Option<Lowered>, PromqlError> {
    if sq.expr.value_type() != ValueType::Vector {
        return p.decline(Decline::ScalarSubquery);
    }
    let engine = p.engine;
    let ctx = &p.ctx;
    // The inner grid, exactly as the evaluator aligns it.
    let range_ms = duration_ms(sq.range);
    let step = subquery_step(sq.step, engine.opts.default_subquery_step_ms);
    let ends = eval_times(ctx, at_ms(&sq.at, ctx), offset_ms(&sq.offset));
    let (Some(&lo), Some(&hi)) = (ends.iter().min(), ends.iter().max()) else {
        return Ok(None);
    };
    let inner_ctx = Ctx {
        steps: subquery_grid(lo, hi, range_ms, step),
        ..*ctx
    };
    let start = inner_ctx.steps.at(0);
    engine.check_points(1, inner_ctx.steps.len())?;
    let inner_p = PlanCtx {
        engine,
        ctx: inner_ctx,
        charged: p.charged.clone(),
        declined: Default::default(),
        held: p.held.clone(),
    };
    let Some(inner) = inner_p.lower(&sq.expr)? else {
        let why = inner_p.declined.lock().take();
        return match why {
            Some(why) => p.decline(why),
            None => Ok(None),
        };
    };
    let series: Vec<Labels> = inner
        .series
        .iter()
        .map(|l| if keep_name { l.clone() } else { drop_name(l) })
        .collect();
    let notes = CounterNotes::of(
        function,
        (0u32..).zip(inner.series.iter().map(|l| l.metric_name().unwrap_or(""))),
        engine.annotator(),
    );
    // Every inner series becomes a point per inner step and a window value per outer step
    // (the fold builds them): bounded as the evaluator bounds them.
    engine.check_points(inner.series.len(), inner_ctx.steps.len())?;
    engine.check_points(inner.series.len(), ctx.steps.len())?;
    p.hold(2 * ends.len() + p1.len() + p2.len())?;
    let n = inner.series.len();
    let window = SubqueryWindow {
        function,
        text: format!("{name}({sq})"),
        inner_start: start,
        inner_step: step,
        ends,
        range_ms,
        p1,
        p2,
        times: ctx.steps.iter().collect(),
        cancel: engine.opts.cancel.clone(),
        notes,
    };
    let plan = Fold::plan_node(
        Keyed::plan_node(inner.plan, (0..n as u32).collect(), "series")?,
        window,
    )?;
    merged(plan, series).map(Some)
}

/// The fold: the window function over each inner series' points.
pub(crate) struct SubqueryWindow {
    pub(super) function: RangeFn,
    pub(super) text: String,
    /// The inner grid: its first step and step length (an inner step index is a time).
    pub(super) inner_start: i64,
    pub(super) inner_step: i64,
    /// Window end of every outer step, and the window length.
    pub(super) ends: Vec<i64>,
    pub(super) range_ms: i64,
    /// The function's scalar parameters per outer step.
    pub(super) p1: Vec<f64>,
    pub(super) p2: Vec<f64>,
    /// Evaluation time of every outer step.
    pub(super) times: Vec<i64>,
    pub(super) cancel: crate::promql::Cancel,
    /// Infos for inner series that do not look like counters.
    pub(super) notes: CounterNotes,
}

impl Folder for SubqueryWindow {
    fn name(&self) -> &'static str {
        "SubqueryWindow"
    }

    fn describe(&self) -> String {
        format!("{}, {} steps", self.text, self.ends.len())
    }

    fn fold(&self, cells: Vec<((u32, u32), Cell)>) -> DfResult<RecordBatch> {
        let (mut s, mut t, mut v) = (Vec::new(), Vec::new(), Vec::new());
        // Cells come sorted by (series, step): one run per series, in time order.
        let mut i = 0;
        while i < cells.len() {
            let series = cells[i].0.0;
            let before = v.len();
            let (mut ts, mut vals) = (Vec::new(), Vec::new());
            while i < cells.len() && cells[i].0.0 == series {
                let ((_, step), cell) = &cells[i];
                if let Some(&(_, x)) = cell.first() {
                    ts.push(self.inner_start + *step as i64 * self.inner_step);
                    vals.push(x);
                }
                i += 1;
            }
            rf::for_each_value(
                self.function,
                &ts,
                &vals,
                &self.ends,
                self.range_ms,
                (&self.p1, &self.p2),
                |k| self.times.get(k).copied().unwrap_or(0),
                || self.cancel.check().is_ok(),
                |k, x| {
                    s.push(series);
                    t.push(k as u32);
                    v.push(x);
                },
            );
            if v.len() > before {
                self.notes.gave_float(series);
            }
        }
        // A cancelled query's windows stopped early: never hand on partial results.
        self.cancel.check().map_err(external)?;
        rows(s, t, v)
    }

    fn encode(&self) -> DfResult<Vec<u8>> {
        let (note_index, note_text) = notes_wire(&self.notes);
        Ok(SubqueryWindowWire {
            function: self.function.name().to_string(),
            text: self.text.clone(),
            inner_start: self.inner_start,
            inner_step: self.inner_step,
            ends: self.ends.clone(),
            range_ms: self.range_ms,
            times: self.times.clone(),
            p1: self.p1.clone(),
            p2: self.p2.clone(),
            note_index,
            note_text,
        }
        .encode_to_vec())
    }
}

/// `SubqueryWindow` on the wire.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct SubqueryWindowWire {
    /// The range function's name.
    #[prost(string, tag = "1")]
    pub function: String,
    #[prost(string, tag = "2")]
    pub text: String,
    #[prost(int64, tag = "3")]
    pub inner_start: i64,
    #[prost(int64, tag = "4")]
    pub inner_step: i64,
    #[prost(sint64, repeated, tag = "5")]
    pub ends: Vec<i64>,
    #[prost(int64, tag = "6")]
    pub range_ms: i64,
    #[prost(sint64, repeated, tag = "7")]
    pub times: Vec<i64>,
    #[prost(double, repeated, tag = "8")]
    pub p1: Vec<f64>,
    #[prost(double, repeated, tag = "9")]
    pub p2: Vec<f64>,
    #[prost(uint32, repeated, tag = "10")]
    pub note_index: Vec<u32>,
    #[prost(string, repeated, tag = "11")]
    pub note_text: Vec<String>,
}

impl SubqueryWindow {
    pub(super) fn decode(buf: &[u8], q: &PlanCodec) -> DfResult<Arc<dyn Folder>> {
        let w: SubqueryWindowWire = decode_wire(buf, "SubqueryWindow")?;
        let Some(function) = RangeFn::parse(&w.function) else {
            return internal_err!("unknown range function {}", w.function);
        };
        if w.times.len() != w.ends.len() || w.inner_step <= 0 {
            return internal_err!("subquery window with an inconsistent grid");
        }
        Ok(Arc::new(SubqueryWindow {
            function,
            text: w.text,
            inner_start: w.inner_start,
            inner_step: w.inner_step,
            ends: w.ends,
            range_ms: w.range_ms,
            p1: w.p1,
            p2: w.p2,
            times: w.times,
            cancel: q.cancel(),
            notes: q.notes(w.note_index, w.note_text),
        }))
    }
}
