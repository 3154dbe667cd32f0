//! Aggregate functions with Prometheus's arithmetic, for DataFusion's hash aggregation:
//! `sum` Kahan-compensated, `avg` as Prometheus averages (compensated sum, then an
//! incremental mean once the sum would overflow), `min` and `max` ignoring NaN unless every
//! value is NaN. Each keeps a mergeable state, so partial aggregates per partition combine
//! in the final one.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray};
use datafusion::arrow::datatypes::{DataType, Float64Type};
use datafusion::common::ScalarValue;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{Accumulator, AggregateUDF, Volatility, create_udaf};

use crate::promql::range_fns::kahan_inc;

fn f64s(a: &ArrayRef) -> &datafusion::arrow::array::PrimitiveArray<Float64Type> {
    a.as_primitive::<Float64Type>()
}

/// Kahan-compensated sum.
pub(super) fn prom_sum() -> AggregateUDF {
    create_udaf(
        "prom_sum",
        vec![DataType::Float64],
        Arc::new(DataType::Float64),
        Volatility::Immutable,
        Arc::new(|_| Ok(Box::new(Sum::default()))),
        Arc::new(vec![DataType::Float64, DataType::Float64]),
    )
}

#[derive(Debug, Default)]
struct Sum {
    sum: f64,
    c: f64,
}

impl Sum {
    fn add(&mut self, v: f64) {
        (self.sum, self.c) = kahan_inc(v, self.sum, self.c);
    }
}

impl Accumulator for Sum {
    fn update_batch(&mut self, values: &[ArrayRef]) -> DfResult<()> {
        for v in f64s(&values[0]).iter().flatten() {
            self.add(v);
        }
        Ok(())
    }

    fn evaluate(&mut self) -> DfResult<ScalarValue> {
        let s = if self.sum.is_infinite() {
            self.sum
        } else {
            self.sum + self.c
        };
        Ok(ScalarValue::Float64(Some(s)))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self)
    }

    fn state(&mut self) -> DfResult<Vec<ScalarValue>> {
        Ok(vec![
            ScalarValue::Float64(Some(self.sum)),
            ScalarValue::Float64(Some(self.c)),
        ])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> DfResult<()> {
        let (s, c) = (f64s(&states[0]), f64s(&states[1]));
        for i in 0..s.len() {
            self.add(s.value(i));
            self.c += c.value(i);
        }
        Ok(())
    }
}

/// Prometheus's `avg`.
pub(super) fn prom_avg() -> AggregateUDF {
    create_udaf(
        "prom_avg",
        vec![DataType::Float64],
        Arc::new(DataType::Float64),
        Volatility::Immutable,
        Arc::new(|_| Ok(Box::new(Avg::default()))),
        // count, sum, c, mean, cmean, incremental (0/1)
        Arc::new(vec![DataType::Float64; 6]),
    )
}

#[derive(Debug, Default, Clone, Copy)]
struct Avg {
    count: f64,
    sum: f64,
    c: f64,
    mean: f64,
    cmean: f64,
    incremental: bool,
}

impl Avg {
    /// One value, as Prometheus's aggregation adds it.
    fn add(&mut self, v: f64) {
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

    fn value(&self) -> f64 {
        if self.incremental {
            self.mean + self.cmean
        } else {
            self.sum / self.count + self.c / self.count
        }
    }

    /// Another partial average of the same group.
    fn merge(&mut self, o: Avg) {
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
        let (a, b) = (self.value(), o.value());
        self.mean = a * (self.count / n) + b * (o.count / n);
        self.cmean = 0.0;
        self.count = n;
        self.incremental = true;
    }
}

impl Accumulator for Avg {
    fn update_batch(&mut self, values: &[ArrayRef]) -> DfResult<()> {
        for v in f64s(&values[0]).iter().flatten() {
            self.add(v);
        }
        Ok(())
    }

    fn evaluate(&mut self) -> DfResult<ScalarValue> {
        Ok(ScalarValue::Float64(
            (self.count > 0.0).then(|| self.value()),
        ))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self)
    }

    fn state(&mut self) -> DfResult<Vec<ScalarValue>> {
        let f = |x: f64| ScalarValue::Float64(Some(x));
        Ok(vec![
            f(self.count),
            f(self.sum),
            f(self.c),
            f(self.mean),
            f(self.cmean),
            f(if self.incremental { 1.0 } else { 0.0 }),
        ])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> DfResult<()> {
        let cols: Vec<_> = states.iter().map(f64s).collect();
        for i in 0..cols[0].len() {
            self.merge(Avg {
                count: cols[0].value(i),
                sum: cols[1].value(i),
                c: cols[2].value(i),
                mean: cols[3].value(i),
                cmean: cols[4].value(i),
                incremental: cols[5].value(i) != 0.0,
            });
        }
        Ok(())
    }
}

/// Prometheus's `max`: NaN only when every value is NaN.
pub(super) fn prom_max() -> AggregateUDF {
    extreme("prom_max", true)
}

/// Prometheus's `min`, likewise. (DataFusion's float `min` is not: it can answer NaN for a
/// partition and then drop it.)
pub(super) fn prom_min() -> AggregateUDF {
    extreme("prom_min", false)
}

fn extreme(name: &str, max: bool) -> AggregateUDF {
    create_udaf(
        name,
        vec![DataType::Float64],
        Arc::new(DataType::Float64),
        Volatility::Immutable,
        Arc::new(move |_| Ok(Box::new(Extreme { max, value: None }))),
        Arc::new(vec![DataType::Float64]),
    )
}

#[derive(Debug)]
struct Extreme {
    max: bool,
    value: Option<f64>,
}

impl Extreme {
    fn add(&mut self, v: f64) {
        match self.value {
            Some(m) if !m.is_nan() && !(if self.max { v > m } else { v < m }) => {}
            _ => self.value = Some(v),
        }
    }
}

impl Accumulator for Extreme {
    fn update_batch(&mut self, values: &[ArrayRef]) -> DfResult<()> {
        for v in f64s(&values[0]).iter().flatten() {
            self.add(v);
        }
        Ok(())
    }

    fn evaluate(&mut self) -> DfResult<ScalarValue> {
        Ok(ScalarValue::Float64(self.value))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self)
    }

    fn state(&mut self) -> DfResult<Vec<ScalarValue>> {
        Ok(vec![ScalarValue::Float64(self.value)])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> DfResult<()> {
        for v in f64s(&states[0]).iter().flatten() {
            self.add(v);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::promql::range_fns as rf;

    /// Split anywhere and merged, the partial states give the sequential answer.
    #[test]
    fn partial_states_merge_to_the_sequential_answer() {
        let cases: Vec<Vec<f64>> = vec![
            vec![1.0, 1e100, 1.0, -1e100],
            vec![f64::MAX, f64::MAX, -f64::MAX, 3.0],
            vec![0.1; 10],
            vec![f64::NAN, 2.0, 1.0],
            vec![1.0, 2.0, f64::NAN, 3.0, 4.0],
            vec![f64::NAN, f64::NAN],
            vec![5.0],
            vec![f64::INFINITY, 1.0, 2.0, f64::INFINITY],
            vec![f64::INFINITY, -f64::INFINITY, 1.0],
            vec![
                -9.988_465_674_311_58e307,
                -9.988_465_674_311_58e307,
                9.988_465_674_311_58e307,
                9.988_465_674_311_58e307,
            ],
        ];
        for xs in &cases {
            for cut in 0..=xs.len() {
                let (a, b) = xs.split_at(cut);
                let mut s = Sum::default();
                let mut s2 = Sum::default();
                a.iter().for_each(|&v| s.add(v));
                b.iter().for_each(|&v| s2.add(v));
                let (sum2, c2) = (s2.sum, s2.c);
                s.add(sum2);
                s.c += c2;
                let got = s.evaluate().unwrap();
                let want = rf::sum(xs);
                // A sum that overflows depends on the order of its terms (here -Inf in
                // sequence, NaN as -Inf + Inf from two halves), in Prometheus too.
                let overflowed = !want.is_finite() && xs.iter().all(|v| v.is_finite());
                if !overflowed {
                    assert!(same(&got, want), "sum {xs:?} cut {cut}: {got:?} vs {want}");
                }

                let (mut p, mut q) = (Avg::default(), Avg::default());
                a.iter().for_each(|&v| p.add(v));
                b.iter().for_each(|&v| q.add(v));
                p.merge(q);
                let got = p.evaluate().unwrap();
                let want = rf::avg(xs);
                assert!(same(&got, want), "avg {xs:?} cut {cut}: {got:?} vs {want}");

                for max in [true, false] {
                    let mut m = Extreme { max, value: None };
                    let mut n = Extreme { max, value: None };
                    a.iter().for_each(|&v| m.add(v));
                    b.iter().for_each(|&v| n.add(v));
                    if let Some(v) = n.value {
                        m.add(v);
                    }
                    let want = if max { rf::max(xs) } else { rf::min(xs) };
                    let got = m.evaluate().unwrap();
                    assert!(same(&got, want), "max={max} {xs:?} cut {cut}");
                }
            }
        }
    }

    fn same(got: &ScalarValue, want: f64) -> bool {
        let &ScalarValue::Float64(Some(g)) = got else {
            return false;
        };
        (g.is_nan() && want.is_nan())
            || g == want
            || (g - want).abs() <= 1e-12 * g.abs().max(want.abs())
    }
}
