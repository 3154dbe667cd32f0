//! Values flowing between PromQL operators. Every operator works on all evaluation steps at
//! once: a vector is a set of series with one optional value per step, a scalar one value per
//! step. Nothing is evaluated step by step through the tree.

use std::sync::Arc;

use crate::model::Labels;
use crate::model::histogram::FloatHistogram;

/// The evaluation grid: `start`, `start + step`, … ≤ `end` (ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Steps {
    pub start: i64,
    pub end: i64,
    pub step: i64,
}

impl Steps {
    pub fn new(start: i64, end: i64, step: i64) -> Self {
        Steps {
            start,
            end,
            step: step.max(1),
        }
    }

    pub fn instant(t: i64) -> Self {
        Steps {
            start: t,
            end: t,
            step: 1,
        }
    }

    pub fn len(&self) -> usize {
        if self.end < self.start {
            0
        } else {
            // i128: `end - start` can exceed i64 for extreme (but valid) timestamps.
            let n = (self.end as i128 - self.start as i128) / self.step as i128 + 1;
            usize::try_from(n).unwrap_or(usize::MAX)
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn at(&self, i: usize) -> i64 {
        self.start + i as i64 * self.step
    }

    pub fn iter(&self) -> impl Iterator<Item = i64> + '_ {
        (0..self.len()).map(|i| self.at(i))
    }
}

/// A native-histogram sample as PromQL passes it around (shared: selections copy none).
pub type Hist = Arc<FloatHistogram>;

/// One series of an instant vector across all steps. At a step a series has a float, a
/// native histogram, or nothing — never both.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: Labels,
    /// `None` where the series has no float value at that step.
    pub vals: Vec<Option<f64>>,
    /// Histogram values by step; empty when the series has none at any step (the common
    /// case costs nothing), else as long as `vals`.
    pub hists: Vec<Option<Hist>>,
}

impl Series {
    pub fn new(labels: Labels, n: usize) -> Self {
        Series {
            labels,
            vals: vec![None; n],
            hists: Vec::new(),
        }
    }

    /// True when the series has neither a float nor a histogram at any step.
    pub fn is_empty(&self) -> bool {
        self.vals.iter().all(Option::is_none) && self.hists.iter().all(Option::is_none)
    }

    /// The histogram at step `i`, if any.
    pub fn hist(&self, i: usize) -> Option<&Hist> {
        self.hists.get(i).and_then(Option::as_ref)
    }

    /// Sets the histogram at step `i` (and clears the float there).
    pub fn set_hist(&mut self, i: usize, h: Hist) {
        if self.hists.is_empty() {
            self.hists = vec![None; self.vals.len()];
        }
        self.vals[i] = None;
        self.hists[i] = Some(h);
    }

    /// True when any step holds a histogram.
    pub fn has_hists(&self) -> bool {
        self.hists.iter().any(Option::is_some)
    }

    /// Whether step `i` has a value of either kind.
    pub fn has(&self, i: usize) -> bool {
        self.vals[i].is_some() || self.hist(i).is_some()
    }

    /// Drops the histograms (for operators that keep only floats).
    pub fn without_hists(mut self) -> Self {
        self.hists = Vec::new();
        self
    }
}

/// A range vector as an instant query returns it (`x[5m]` at one time): raw samples.
#[derive(Debug, Clone, PartialEq)]
pub struct RangeSeries {
    pub labels: Labels,
    pub ts: Vec<i64>,
    pub vals: Vec<f64>,
    /// Histogram samples, ascending (their own timestamps).
    pub hts: Vec<i64>,
    pub hists: Vec<Hist>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Scalar(Vec<f64>),
    String(String),
    Vector(Vec<Series>),
    Matrix(Vec<RangeSeries>),
}

impl Value {
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Scalar(_) => "scalar",
            Value::String(_) => "string",
            Value::Vector(_) => "vector",
            Value::Matrix(_) => "matrix",
        }
    }
}
