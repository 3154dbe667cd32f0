//! Values flowing between PromQL operators. Every operator works on all evaluation steps at
//! once: a vector is a set of series with one optional value per step, a scalar one value per
//! step. Nothing is evaluated step by step through the tree.

use std::sync::Arc;

use crate::model::Labels;

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

/// One series of an instant vector across all steps.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: Arc<Labels>,
    /// `None` where the series has no value at that step.
    pub vals: Vec<Option<f64>>,
}

impl Series {
    pub fn new(labels: Arc<Labels>, n: usize) -> Self {
        Series {
            labels,
            vals: vec![None; n],
        }
    }

    pub fn is_empty(&self) -> bool {
        self.vals.iter().all(Option::is_none)
    }
}

/// A range vector as an instant query returns it (`x[5m]` at one time): raw samples.
#[derive(Debug, Clone, PartialEq)]
pub struct RangeSeries {
    pub labels: Arc<Labels>,
    pub ts: Vec<i64>,
    pub vals: Vec<f64>,
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
