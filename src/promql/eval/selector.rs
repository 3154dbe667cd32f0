//! Vector and matrix selectors: matchers → series ids (label index) → samples of the needed
//! time range, then lookback/staleness (instant) or left-open windows (range) for every step.

use promql_parser::parser::VectorSelector;

use crate::model::{Labels, is_stale_marker};
use crate::promql::engine::{Ctx, Engine};
use crate::promql::error::PromqlError;
use crate::promql::kernels::lookback::{current, newest_at, without_stale};
use crate::promql::kernels::select::{at_ms, eval_times, offset_ms};
use crate::promql::value::{Hist, Series};

/// Samples of one series, stale markers kept (instant selection needs them): floats, and
/// native histograms with their own timestamps.
pub(crate) struct Raw {
    pub labels: Labels,
    pub ts: Vec<i64>,
    pub vals: Vec<f64>,
    pub hts: Vec<i64>,
    pub hists: Vec<Hist>,
}

/// A series id with its float run and its histogram run.
type Lanes = (u32, Vec<i64>, Vec<f64>, Vec<i64>, Vec<Hist>);

impl Raw {
    pub fn floats(labels: Labels, ts: Vec<i64>, vals: Vec<f64>) -> Self {
        Raw {
            labels,
            ts,
            vals,
            hts: Vec::new(),
            hists: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.ts.is_empty() && self.hts.is_empty()
    }
}

/// Input of a range function: per series its samples (no stale markers), and for every
/// step the window end `te` (the window is `(te - range, te]`).
pub(crate) struct RangeInput {
    pub series: Vec<Raw>,
    pub range_ms: i64,
    pub ends: Vec<i64>,
}

impl Engine {
    /// Raw samples of every series matching `vs` in `[min_t, max_t]`.
    pub(super) async fn fetch(
        &self,
        vs: &VectorSelector,
        min_t: i64,
        max_t: i64,
    ) -> Result<Vec<Raw>, PromqlError> {
        let ids = self.select_series(vs)?;
        // The sample limit is charged chunk by chunk, so an over-limit selector stops at
        // the chunk that crosses it instead of reading everything first.
        // Boxed: this future is part of every evaluator level's state, and nested queries
        // recurse thousands of levels deep (`promql::guard`).
        let snapshot = self.snapshot();
        let mut hists = if snapshot.may_have_histograms(&ids, min_t, max_t) {
            let runs = snapshot.histograms(&ids, min_t, max_t).await?;
            // As Prometheus counts them: a histogram weighs its size in 16-byte samples.
            self.charge(
                runs.iter()
                    .flat_map(|r| r.hists.iter())
                    .map(|h| h.sample_weight())
                    .sum(),
            )?;
            runs
        } else {
            Vec::new()
        };
        let scan = snapshot.scan(&ids, min_t, max_t);
        let runs = Box::pin(scan.collect_all(|n| self.charge(n))).await?;
        // Both lanes by series id (each ascending), floats and histograms side by side.
        let mut merged: Vec<Lanes> = Vec::with_capacity(runs.len() + hists.len());
        let mut hs = std::mem::take(&mut hists).into_iter().peekable();
        for r in runs {
            while let Some(h) = hs.next_if(|h| h.id < r.id) {
                merged.push((h.id, Vec::new(), Vec::new(), h.ts, h.hists));
            }
            match hs.next_if(|h| h.id == r.id) {
                Some(h) => merged.push((r.id, r.ts, r.vals, h.ts, h.hists)),
                None => merged.push((r.id, r.ts, r.vals, Vec::new(), Vec::new())),
            }
        }
        merged.extend(hs.map(|h| (h.id, Vec::new(), Vec::new(), h.ts, h.hists)));
        let labels = self
            .storage
            .catalog()
            .labels_many(merged.iter().map(|r| r.0));
        let mut out: Vec<Raw> = merged
            .into_iter()
            .zip(labels)
            .filter_map(|((_, ts, vals, hts, hists), labels)| {
                Some(Raw {
                    labels: labels?,
                    ts,
                    vals,
                    hts,
                    hists,
                })
            })
            .collect();
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        Ok(out)
    }

    /// Instant vector selector: for each step the newest sample in `(te - lookback, te]`,
    /// unless it is a stale marker.
    pub(super) async fn vector_selector(
        &self,
        vs: &VectorSelector,
        ctx: &Ctx,
    ) -> Result<Vec<Series>, PromqlError> {
        self.instant_selection(vs, ctx, false).await
    }

    /// Instant selection as above; with `timestamps` every picked sample (float or
    /// histogram) reports its time in seconds instead (`timestamp()`).
    pub(super) async fn instant_selection(
        &self,
        vs: &VectorSelector,
        ctx: &Ctx,
        timestamps: bool,
    ) -> Result<Vec<Series>, PromqlError> {
        let times = eval_times(ctx, at_ms(&vs.at, ctx), offset_ms(&vs.offset));
        let (Some(&lo), Some(&hi)) = (times.iter().min(), times.iter().max()) else {
            return Ok(vec![]);
        };
        let lookback = ctx.lookback;
        let raw = self
            .fetch(vs, lo.saturating_sub(lookback).saturating_add(1), hi)
            .await?;
        self.check_points(raw.len(), times.len())?;
        let mut out = Vec::with_capacity(raw.len());
        for r in raw {
            self.check()?;
            let mut s = Series::new(r.labels, times.len());
            for (i, &te) in times.iter().enumerate() {
                let float = newest_at(&r.ts, te).map(|j| (r.ts[j], r.vals[j]));
                let hist = newest_at(&r.hts, te).map(|j| (r.hts[j], &r.hists[j]));
                // The newer of the two kinds (the float on a tie); a float stale marker
                // ends both.
                match (float, hist) {
                    (ft, Some((ht, h))) if ft.is_none_or(|(ft, _)| ht > ft) => {
                        if current(ht, te, lookback) {
                            if timestamps {
                                s.vals[i] = Some(ht as f64 / 1000.0);
                            } else {
                                s.set_hist(i, h.clone());
                            }
                        }
                    }
                    (Some((t, v)), _) => {
                        if current(t, te, lookback) && !is_stale_marker(v) {
                            s.vals[i] = Some(if timestamps { t as f64 / 1000.0 } else { v });
                        }
                    }
                    (None, _) => {}
                }
            }
            if !s.is_empty() {
                out.push(s);
            }
        }
        Ok(out)
    }

    /// Matrix selector as a range-function input.
    pub(super) async fn matrix_selector(
        &self,
        vs: &VectorSelector,
        range_ms: i64,
        ctx: &Ctx,
    ) -> Result<RangeInput, PromqlError> {
        let ends = eval_times(ctx, at_ms(&vs.at, ctx), offset_ms(&vs.offset));
        let (Some(&lo), Some(&hi)) = (ends.iter().min(), ends.iter().max()) else {
            return Ok(RangeInput {
                series: vec![],
                range_ms,
                ends,
            });
        };
        let raw = self
            .fetch(vs, lo.saturating_sub(range_ms).saturating_add(1), hi)
            .await?;
        let series = raw
            .into_iter()
            .map(|mut r| {
                if let Some((ts, vals)) = without_stale(&r.ts, &r.vals) {
                    (r.ts, r.vals) = (ts, vals);
                }
                r
            })
            .filter(|r| !r.is_empty())
            .collect();
        Ok(RangeInput {
            series,
            range_ms,
            ends,
        })
    }
}
