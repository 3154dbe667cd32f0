//! Scalar functions whose output size is an argument (`repeat('x', 2000000000)`,
//! `lpad`, `rpad`, `array_repeat`, the array forms of `range`/`generate_series`) allocate
//! it at once, outside DataFusion's memory pool: one anonymous query could take gigabytes.
//! Sessions served over HTTP replace them with wrappers that compute the output size of a
//! call over the whole batch (argument size × count, row by row) and refuse it beyond a
//! budget before calling the original.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::compute::kernels::length::length;
use datafusion::arrow::datatypes::{DataType, FieldRef, Int64Type};
use datafusion::common::exec_err;
use datafusion::error::Result;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature,
};
use datafusion::prelude::SessionContext;

/// Most bytes (strings) or elements × 8 (arrays) one call may build over a whole batch.
pub const MAX_OUTPUT: i64 = 64 << 20;

/// How a function's output size follows from its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Size {
    /// Argument 1 is the length or count (`repeat`, `lpad`, `rpad`, `array_repeat`).
    CountArg,
    /// `range`/`generate_series(stop)`, `(start, stop)` or `(start, stop, step)`.
    Range,
}

#[derive(Debug)]
struct Bounded {
    inner: Arc<ScalarUDF>,
    size: Size,
}

impl PartialEq for Bounded {
    fn eq(&self, other: &Self) -> bool {
        self.inner.name() == other.inner.name() && self.size == other.size
    }
}

impl Eq for Bounded {}

impl Hash for Bounded {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.inner.name().hash(state);
        self.size.hash(state);
    }
}

/// Replaces the size-driven functions in `ctx` with bounded wrappers.
pub fn register(ctx: &SessionContext) {
    let state = ctx.state();
    let funcs = state.scalar_functions();
    for (name, size) in [
        ("repeat", Size::CountArg),
        ("lpad", Size::CountArg),
        ("rpad", Size::CountArg),
        ("array_repeat", Size::CountArg),
        ("range", Size::Range),
        ("generate_series", Size::Range),
    ] {
        if let Some(inner) = funcs.get(name) {
            let wrapped = ScalarUDF::new_from_impl(Bounded {
                inner: inner.clone(),
                size,
            });
            ctx.register_udf(wrapped);
        }
    }
}

/// An argument as one value per row.
fn rows(v: &ColumnarValue, n: usize) -> Result<ArrayRef> {
    v.to_array(n)
}

/// Integers of an argument per row (nulls as 0); `None` when it is not an integer.
fn ints(v: &ColumnarValue, n: usize) -> Result<Option<Vec<i64>>> {
    let a = rows(v, n)?;
    if !a.data_type().is_integer() {
        return Ok(None);
    }
    let c = cast(&a, &DataType::Int64)?;
    let c = c.as_primitive::<Int64Type>();
    Ok(Some(
        (0..c.len())
            .map(|i| if c.is_null(i) { 0 } else { c.value(i) })
            .collect(),
    ))
}

/// Size of each row's value: bytes of a string, elements of a list, 1 otherwise.
fn sizes(v: &ColumnarValue, n: usize) -> Result<Vec<i64>> {
    let a = rows(v, n)?;
    match length(a.as_ref()) {
        Ok(l) => {
            let l = cast(&l, &DataType::Int64)?;
            let l = l.as_primitive::<Int64Type>();
            Ok((0..l.len())
                .map(|i| if l.is_null(i) { 0 } else { l.value(i) })
                .collect())
        }
        Err(_) => Ok(vec![1; n]),
    }
}

impl Bounded {
    /// Refuses a call whose output over the whole batch would exceed the budget.
    fn check(&self, args: &[ColumnarValue], n: usize) -> Result<()> {
        let name = self.inner.name();
        let mut total: i128 = 0;
        match self.size {
            Size::CountArg => {
                let Some(counts) = args.get(1).map(|a| ints(a, n)).transpose()?.flatten() else {
                    return Ok(());
                };
                // lpad/rpad: the count is the output length; repeat and array_repeat:
                // the first argument's size times the count.
                let per = if matches!(name, "lpad" | "rpad") {
                    vec![1; n]
                } else {
                    sizes(&args[0], n)?
                };
                for (c, p) in counts.iter().zip(&per) {
                    total += (*c).max(0) as i128 * (*p).max(1) as i128;
                }
            }
            Size::Range => {
                let all: Vec<Option<Vec<i64>>> =
                    args.iter().map(|a| ints(a, n)).collect::<Result<_>>()?;
                if all.iter().any(Option::is_none) {
                    // Temporal ranges have interval steps; their count is not bounded here.
                    return exec_err!(
                        "{name}() as an array is limited to integers here; use the table function `SELECT * FROM {name}(...)`"
                    );
                }
                let all: Vec<Vec<i64>> = all.into_iter().flatten().collect();
                for i in 0..n {
                    let (start, stop, step) = match all.len() {
                        1 => (0, all[0][i], 1),
                        2 => (all[0][i], all[1][i], 1),
                        _ => (all[0][i], all[1][i], all[2][i]),
                    };
                    let span = (stop as i128 - start as i128).abs();
                    total += span / (step as i128).abs().max(1) + 1;
                }
                // Elements of 8 bytes.
                total *= 8;
            }
        }
        if total > MAX_OUTPUT as i128 {
            return exec_err!(
                "{name}() would build {total} bytes or elements in one batch; the limit is {MAX_OUTPUT}"
            );
        }
        Ok(())
    }
}

impl ScalarUDFImpl for Bounded {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        self.check(&args.args, args.number_rows)?;
        self.inner.invoke_with_args(args)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::common::ScalarValue;

    async fn run(ctx: &SessionContext, sql: &str) -> Result<usize> {
        let batches = ctx.sql(sql).await?.collect().await?;
        Ok(batches.iter().map(|b| b.num_rows()).sum())
    }

    #[tokio::test]
    async fn huge_values_are_refused_and_small_ones_work() {
        let ctx = SessionContext::new();
        register(&ctx);
        for q in [
            "SELECT repeat('x', 2000000000)",
            "SELECT lpad('x', 2000000000, 'y')",
            "SELECT rpad('x', 2000000000)",
            "SELECT array_repeat(1, 2000000000)",
            "SELECT range(10000000000)",
            "SELECT generate_series(1, 10000000000)",
            "SELECT range(1, 10000000000, 3)",
            "SELECT repeat('x', n) FROM (VALUES (1), (2000000000)) AS t(n)",
        ] {
            let e = run(&ctx, q).await.expect_err(q).to_string();
            assert!(e.contains("the limit is"), "{q}: {e}");
        }
        for q in [
            "SELECT repeat(repeat('x', 1048576), 2047)",
            "SELECT array_repeat(range(1048576), 2047)",
            "SELECT max(length(repeat('x', 100000 + value - value))) FROM range(100000)",
        ] {
            let e = run(&ctx, q).await.expect_err(q).to_string();
            assert!(e.contains("the limit is"), "{q}: {e}");
        }
        for q in [
            "SELECT repeat('ab', 3)",
            "SELECT lpad('x', 5, 'y')",
            "SELECT range(5)",
            "SELECT range(1, 10, 2)",
            "SELECT array_repeat(1, 3)",
            "SELECT count(*) FROM range(3000000)",
        ] {
            assert_eq!(run(&ctx, q).await.expect(q), 1, "{q}");
        }
        // The values are the original functions' values.
        let b = ctx
            .sql("SELECT repeat('ab', 3) AS r")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let v = ScalarValue::try_from_array(b[0].column(0), 0).unwrap();
        assert_eq!(v.to_string(), "ababab");
    }
}
