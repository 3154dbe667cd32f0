//! Compensated sums and the running mean, as Prometheus computes them (`util/kahansum`,
//! `funcAvgOverTime`, the `avg` aggregation): one implementation for floats in both
//! engines.

pub(crate) use crate::model::kahan::kahan_inc;

/// A running mean as Prometheus keeps it (`avg`, `avg_over_time`): a compensated sum while
/// it is finite, then an incremental mean, so a sum that would overflow does not turn the
/// mean into ±Inf. Partial states of one group merge (the planner's partial aggregates).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct AvgState {
    pub count: f64,
    pub sum: f64,
    pub c: f64,
    pub mean: f64,
    pub cmean: f64,
    pub incremental: bool,
}

impl AvgState {
    /// One value, as Prometheus adds it.
    pub fn add(&mut self, v: f64) {
        self.count += 1.0;
        if self.count == 1.0 {
            self.sum = v;
            return;
        }
        if !self.incremental {
            let (ns, nc) = kahan_inc(v, self.sum, self.c);
            if !ns.is_infinite() {
                (self.sum, self.c) = (ns, nc);
                return;
            }
            self.incremental = true;
            self.mean = self.sum / (self.count - 1.0);
            self.cmean = self.c / (self.count - 1.0);
        }
        let q = (self.count - 1.0) / self.count;
        (self.mean, self.cmean) = kahan_inc(v / self.count, q * self.mean, q * self.cmean);
    }

    /// The mean so far; `None` before any value.
    pub fn value(&self) -> Option<f64> {
        (self.count > 0.0).then(|| self.mean_value())
    }

    fn mean_value(&self) -> f64 {
        if self.incremental {
            self.mean + self.cmean
        } else {
            self.sum / self.count + self.c / self.count
        }
    }

    /// Another partial mean of the same values' group.
    pub fn merge(&mut self, o: AvgState) {
        if o.count == 0.0 {
            return;
        }
        if self.count == 0.0 {
            *self = o;
            return;
        }
        let n = self.count + o.count;
        if !self.incremental && !o.incremental {
            let (ns, nc) = kahan_inc(o.sum, self.sum, self.c);
            if !ns.is_infinite() {
                (self.sum, self.c, self.count) = (ns, nc + o.c, n);
                return;
            }
        }
        // Weighted means: no sum or difference that could overflow; infinities combine
        // as they would in a sum (∞ + -∞ is NaN).
        let (a, b) = (self.mean_value(), o.mean_value());
        self.mean = a * (self.count / n) + b * (o.count / n);
        self.cmean = 0.0;
        self.count = n;
        self.incremental = true;
    }
}
