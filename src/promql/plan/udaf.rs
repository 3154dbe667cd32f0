//! Aggregate functions with Prometheus's arithmetic, for DataFusion's hash aggregation:
//! `sum` Kahan-compensated, `avg` as Prometheus averages (compensated sum, then an
//! incremental mean once the sum would overflow), `min` and `max` ignoring NaN unless every
//! value is NaN. Each keeps a mergeable state, so partial aggregates per partition combine
//! in the final one, and each has a grouped accumulator (one state vector for all groups,
//! updated a batch at a time): the per-group `Accumulator` objects DataFusion falls back
//! to otherwise are much slower (docs/benchmarks.md).

use std::marker::PhantomData;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Float64Array};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Float64Type};
use datafusion::common::ScalarValue;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, EmitTo, GroupsAccumulator, Signature, Volatility,
};

use crate::promql::kernels::sum::{AvgState, kahan_inc};

fn f64s(a: &ArrayRef) -> &datafusion::arrow::array::PrimitiveArray<Float64Type> {
    a.as_primitive::<Float64Type>()
}

/// One group's running aggregate.
pub(super) trait GroupState: Default + std::fmt::Debug + Send + Sync + 'static {
    const NAME: &'static str;
    /// Float64 columns of the partial state.
    const STATE_LEN: usize;
    fn add(&mut self, v: f64);
    /// Merges row `i` of a partial state's columns.
    fn merge_row(
        &mut self,
        cols: &[&datafusion::arrow::array::PrimitiveArray<Float64Type>],
        i: usize,
    );
    fn value(&self) -> Option<f64>;
    /// Column `c` (`< STATE_LEN`) of the partial state. By column, so that a batch's
    /// states go straight into their arrays, without a vector per group.
    fn state_col(&self, c: usize) -> f64;
}

/// The partial states of `states` as `S::STATE_LEN` columns.
fn state_columns<S: GroupState>(states: &[S]) -> Vec<ArrayRef> {
    (0..S::STATE_LEN)
        .map(|c| {
            let col: Vec<f64> = states.iter().map(|s| s.state_col(c)).collect();
            Arc::new(Float64Array::from(col)) as ArrayRef
        })
        .collect()
}

/// `sum` as an aggregate function.
pub(super) fn prom_sum() -> AggregateUDF {
    AggregateUDF::from(PromAgg::<Sum>::new())
}

/// `avg` as an aggregate function.
pub(super) fn prom_avg() -> AggregateUDF {
    AggregateUDF::from(PromAgg::<Avg>::new())
}

/// `max`: NaN only when every value is NaN.
pub(super) fn prom_max() -> AggregateUDF {
    AggregateUDF::from(PromAgg::<Extreme<true>>::new())
}

/// `min`, likewise. (DataFusion's float `min` is not: it can answer NaN for a partition and
/// then drop it.)
pub(super) fn prom_min() -> AggregateUDF {
    AggregateUDF::from(PromAgg::<Extreme<false>>::new())
}

#[derive(Debug)]
struct PromAgg<S> {
    signature: Signature,
    state: PhantomData<fn() -> S>,
}

// One function per state type: equal and hashed by that.
impl<S: GroupState> PartialEq for PromAgg<S> {
    fn eq(&self, _other: &Self) -> bool {
        true
    }
}

impl<S: GroupState> Eq for PromAgg<S> {}

impl<S: GroupState> std::hash::Hash for PromAgg<S> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        S::NAME.hash(state);
    }
}

impl<S: GroupState> PromAgg<S> {
    fn new() -> Self {
        PromAgg {
            signature: Signature::exact(vec![DataType::Float64], Volatility::Immutable),
            state: PhantomData,
        }
    }
}

impl<S: GroupState> AggregateUDFImpl for PromAgg<S> {
    fn name(&self) -> &str {
        S::NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Float64)
    }

    fn accumulator(&self, _args: AccumulatorArgs) -> DfResult<Box<dyn Accumulator>> {
        Ok(Box::new(Single(S::default())))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> DfResult<Vec<FieldRef>> {
        Ok((0..S::STATE_LEN)
            .map(|i| {
                Arc::new(Field::new(
                    format!("{}[{i}]", args.name),
                    DataType::Float64,
                    true,
                ))
            })
            .collect())
    }

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(
        &self,
        _args: AccumulatorArgs,
    ) -> DfResult<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(Groups::<S> { states: Vec::new() }))
    }
}

/// One group, for aggregations without a grouping.
#[derive(Debug)]
struct Single<S>(S);

impl<S: GroupState> Accumulator for Single<S> {
    fn update_batch(&mut self, values: &[ArrayRef]) -> DfResult<()> {
        for v in f64s(&values[0]).iter().flatten() {
            self.0.add(v);
        }
        Ok(())
    }

    fn evaluate(&mut self) -> DfResult<ScalarValue> {
        Ok(ScalarValue::Float64(self.0.value()))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self)
    }

    fn state(&mut self) -> DfResult<Vec<ScalarValue>> {
        Ok((0..S::STATE_LEN)
            .map(|c| ScalarValue::Float64(Some(self.0.state_col(c))))
            .collect())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> DfResult<()> {
        let cols: Vec<_> = states.iter().map(f64s).collect();
        for i in 0..cols[0].len() {
            self.0.merge_row(&cols, i);
        }
        Ok(())
    }
}

/// Every group's state in one vector, indexed by DataFusion's group index.
struct Groups<S> {
    states: Vec<S>,
}

impl<S: GroupState> GroupsAccumulator for Groups<S> {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> DfResult<()> {
        self.states.resize_with(total_num_groups, S::default);
        let v = f64s(&values[0]);
        if v.null_count() == 0 && opt_filter.is_none() {
            for (&g, &x) in group_indices.iter().zip(v.values().iter()) {
                self.states[g].add(x);
            }
            return Ok(());
        }
        for (i, &g) in group_indices.iter().enumerate() {
            if v.is_null(i) || opt_filter.is_some_and(|f| !f.value(i) || f.is_null(i)) {
                continue;
            }
            self.states[g].add(v.value(i));
        }
        Ok(())
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> DfResult<ArrayRef> {
        let taken = emit_to.take_needed(&mut self.states);
        Ok(Arc::new(
            taken.iter().map(S::value).collect::<Float64Array>(),
        ))
    }

    fn state(&mut self, emit_to: EmitTo) -> DfResult<Vec<ArrayRef>> {
        let taken = emit_to.take_needed(&mut self.states);
        Ok(state_columns(&taken))
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> DfResult<()> {
        self.states.resize_with(total_num_groups, S::default);
        let cols: Vec<_> = values.iter().map(f64s).collect();
        for (i, &g) in group_indices.iter().enumerate() {
            self.states[g].merge_row(&cols, i);
        }
        Ok(())
    }

    /// Each input row as the partial state of a group of its own (DataFusion skips the
    /// partial aggregation when it does not reduce the rows).
    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> DfResult<Vec<ArrayRef>> {
        let v = f64s(&values[0]);
        let states: Vec<S> = (0..v.len())
            .map(|i| {
                let mut s = S::default();
                if !v.is_null(i) && !opt_filter.is_some_and(|f| !f.value(i) || f.is_null(i)) {
                    s.add(v.value(i));
                }
                s
            })
            .collect();
        Ok(state_columns(&states))
    }

    fn size(&self) -> usize {
        self.states.capacity() * std::mem::size_of::<S>()
    }
}

#[derive(Debug, Default)]
pub(super) struct Sum {
    sum: f64,
    c: f64,
}

impl GroupState for Sum {
    const NAME: &'static str = "prom_sum";
    const STATE_LEN: usize = 2;

    fn add(&mut self, v: f64) {
        (self.sum, self.c) = kahan_inc(v, self.sum, self.c);
    }

    fn merge_row(
        &mut self,
        cols: &[&datafusion::arrow::array::PrimitiveArray<Float64Type>],
        i: usize,
    ) {
        self.add(cols[0].value(i));
        self.c += cols[1].value(i);
    }

    fn value(&self) -> Option<f64> {
        Some(if self.sum.is_infinite() {
            self.sum
        } else {
            self.sum + self.c
        })
    }

    fn state_col(&self, c: usize) -> f64 {
        [self.sum, self.c][c]
    }
}

/// `avg`'s state: the one the evaluator and `avg_over_time` use too.
pub(super) type Avg = AvgState;

impl GroupState for Avg {
    const NAME: &'static str = "prom_avg";
    const STATE_LEN: usize = 6;

    /// One value, as Prometheus's aggregation adds it.
    fn add(&mut self, v: f64) {
        AvgState::add(self, v)
    }

    fn merge_row(
        &mut self,
        cols: &[&datafusion::arrow::array::PrimitiveArray<Float64Type>],
        i: usize,
    ) {
        self.merge(Avg {
            count: cols[0].value(i),
            sum: cols[1].value(i),
            c: cols[2].value(i),
            mean: cols[3].value(i),
            cmean: cols[4].value(i),
            incremental: cols[5].value(i) != 0.0,
        });
    }

    fn value(&self) -> Option<f64> {
        AvgState::value(self)
    }

    fn state_col(&self, c: usize) -> f64 {
        match c {
            0 => self.count,
            1 => self.sum,
            2 => self.c,
            3 => self.mean,
            4 => self.cmean,
            _ => {
                if self.incremental {
                    1.0
                } else {
                    0.0
                }
            }
        }
    }
}

/// `max` (`MAX`) or `min`; `None` until a value arrives (NaN in the state is a value).
#[derive(Debug, Default)]
pub(super) struct Extreme<const MAX: bool> {
    value: Option<f64>,
}

impl<const MAX: bool> GroupState for Extreme<MAX> {
    const NAME: &'static str = if MAX { "prom_max" } else { "prom_min" };
    const STATE_LEN: usize = 2;

    fn add(&mut self, v: f64) {
        match self.value {
            Some(m) if !m.is_nan() && !(if MAX { v > m } else { v < m }) => {}
            _ => self.value = Some(v),
        }
    }

    fn merge_row(
        &mut self,
        cols: &[&datafusion::arrow::array::PrimitiveArray<Float64Type>],
        i: usize,
    ) {
        // Column 0 says whether the partial state has a value, column 1 holds it.
        if cols[0].value(i) != 0.0 {
            self.add(cols[1].value(i));
        }
    }

    fn value(&self) -> Option<f64> {
        self.value
    }

    fn state_col(&self, c: usize) -> f64 {
        match (self.value, c) {
            (Some(_), 0) => 1.0,
            (Some(v), _) => v,
            (None, _) => 0.0,
        }
    }
}

/// `count` (and `group`, which answers 1 wherever it counts any): the values seen.
#[derive(Debug, Default)]
pub(super) struct Count {
    n: f64,
}

impl GroupState for Count {
    const NAME: &'static str = "prom_count";
    const STATE_LEN: usize = 1;

    fn add(&mut self, _v: f64) {
        self.n += 1.0;
    }

    fn merge_row(
        &mut self,
        cols: &[&datafusion::arrow::array::PrimitiveArray<Float64Type>],
        i: usize,
    ) {
        self.n += cols[0].value(i);
    }

    fn value(&self) -> Option<f64> {
        Some(self.n)
    }

    fn state_col(&self, _c: usize) -> f64 {
        self.n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::promql::kernels::range_fns as rf;

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
                let got = merged::<Sum>(a, b);
                let want = rf::sum(xs);
                // A sum that overflows depends on the order of its terms (here -Inf in
                // sequence, NaN as -Inf + Inf from two halves), in Prometheus too.
                let overflowed = !want.is_finite() && xs.iter().all(|v| v.is_finite());
                if !overflowed {
                    assert!(same(&got, want), "sum {xs:?} cut {cut}: {got:?} vs {want}");
                }

                let got = merged::<Avg>(a, b);
                let want = rf::avg(xs);
                assert!(same(&got, want), "avg {xs:?} cut {cut}: {got:?} vs {want}");

                let got = merged::<Extreme<true>>(a, b);
                assert!(same(&got, rf::max(xs)), "max {xs:?} cut {cut}");
                let got = merged::<Extreme<false>>(a, b);
                assert!(same(&got, rf::min(xs)), "min {xs:?} cut {cut}");
            }
        }
    }

    /// `a` and `b` aggregated in two groups' partial states (through the grouped
    /// accumulator's `state`), merged into one group by `merge_batch`, then evaluated.
    /// Rows turned into partial states directly (DataFusion's skipped partial
    /// aggregation) equal the states of one group per row.
    #[test]
    fn rows_as_states_equal_one_group_per_row() {
        fn check<S: GroupState>(values: &[f64]) {
            let arr: ArrayRef = Arc::new(Float64Array::from(values.to_vec()));
            let mut each = Groups::<S> { states: Vec::new() };
            let groups: Vec<usize> = (0..values.len()).collect();
            each.update_batch(std::slice::from_ref(&arr), &groups, None, values.len())
                .unwrap();
            let want = each.state(EmitTo::All).unwrap();
            let got = each.convert_to_state(&[arr], None).unwrap();
            assert_eq!(got.len(), S::STATE_LEN);
            for (g, w) in got.iter().zip(&want) {
                let (g, w) = (f64s(g), f64s(w));
                let bits = |a: &datafusion::arrow::array::PrimitiveArray<Float64Type>| {
                    a.values().iter().map(|x| x.to_bits()).collect::<Vec<_>>()
                };
                assert_eq!(bits(g), bits(w), "{}", S::NAME);
            }
        }
        let values = [1.0, -0.0, f64::NAN, f64::INFINITY, 1e308, 0.1, -3.5];
        check::<Sum>(&values);
        check::<Avg>(&values);
        check::<Extreme<true>>(&values);
        check::<Extreme<false>>(&values);
    }

    fn merged<S: GroupState>(a: &[f64], b: &[f64]) -> ScalarValue {
        let mut partial = Groups::<S> { states: Vec::new() };
        let values: Vec<f64> = a.iter().chain(b).copied().collect();
        let groups: Vec<usize> = (0..values.len())
            .map(|i| usize::from(i >= a.len()))
            .collect();
        let arr: ArrayRef = Arc::new(Float64Array::from(values));
        partial.update_batch(&[arr], &groups, None, 2).unwrap();
        let state = partial.state(EmitTo::All).unwrap();
        let mut last = Groups::<S> { states: Vec::new() };
        last.merge_batch(&state, &[0, 0], 1).unwrap();
        let out = last.evaluate(EmitTo::All).unwrap();
        let out = out.as_primitive::<Float64Type>();
        ScalarValue::Float64((!out.is_null(0)).then(|| out.value(0)))
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
