//! Scalar functions whose output size is an argument (`repeat('x', 2000000000)`,
//! `lpad`, `rpad`, `array_repeat`, the array forms of `range`/`generate_series`) allocate
//! it at once, outside DataFusion's memory pool: one anonymous query could take gigabytes.
//! Sessions served over HTTP replace them with wrappers that refuse sizes over a bound
//! before calling the original.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::compute::{cast, max, min};
use datafusion::arrow::datatypes::{DataType, FieldRef, Int64Type};
use datafusion::common::exec_err;
use datafusion::error::Result;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature,
};
use datafusion::prelude::SessionContext;

/// Largest string length or element count one value of these functions may have.
pub const MAX_VALUE_LEN: i64 = 1 << 20;

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

/// Max (or min) of an integer argument over all rows; `None` when it is not an integer.
fn int_extreme(v: &ColumnarValue, want_max: bool) -> Result<Option<i64>> {
    let array = match v {
        ColumnarValue::Scalar(s) => {
            if s.is_null() {
                return Ok(None);
            }
            s.to_array()?
        }
        ColumnarValue::Array(a) => a.clone(),
    };
    if !array.data_type().is_integer() {
        return Ok(None);
    }
    let ints = cast(&array, &DataType::Int64)?;
    let ints = ints.as_primitive::<Int64Type>();
    Ok(if want_max { max(ints) } else { min(ints) })
}

fn too_large(name: &str, n: i128) -> Result<()> {
    if n > MAX_VALUE_LEN as i128 {
        return exec_err!(
            "{name}() would build a value of {n} elements or characters; the limit is {MAX_VALUE_LEN}"
        );
    }
    Ok(())
}

impl Bounded {
    fn check(&self, args: &[ColumnarValue]) -> Result<()> {
        let name = self.inner.name();
        match self.size {
            Size::CountArg => {
                if let Some(n) = args
                    .get(1)
                    .map(|a| int_extreme(a, true))
                    .transpose()?
                    .flatten()
                {
                    too_large(name, n as i128)?;
                }
            }
            Size::Range => {
                let ints = args.iter().all(|a| match a {
                    ColumnarValue::Scalar(s) => s.data_type().is_integer() || s.is_null(),
                    ColumnarValue::Array(a) => a.data_type().is_integer(),
                });
                if !ints {
                    // Temporal ranges have interval steps; their count is not bounded here.
                    return exec_err!(
                        "{name}() as an array is limited to integers here; use the table function `SELECT * FROM {name}(...)`"
                    );
                }
                let (start, stop, step) = match args.len() {
                    1 => (Some(0), int_extreme(&args[0], true)?, Some(1)),
                    2 => (
                        int_extreme(&args[0], false)?,
                        int_extreme(&args[1], true)?,
                        Some(1),
                    ),
                    _ => {
                        // The smallest step (by magnitude) gives the most elements.
                        let lo = int_extreme(&args[2], false)?;
                        let hi = int_extreme(&args[2], true)?;
                        let step = [lo, hi]
                            .into_iter()
                            .flatten()
                            .map(|s| s.unsigned_abs().max(1) as i64)
                            .min();
                        let lo0 = int_extreme(&args[0], false)?;
                        let hi1 = int_extreme(&args[1], true)?;
                        // Descending ranges: the widest span either way.
                        let (a, b) = (
                            lo0.zip(hi1),
                            int_extreme(&args[0], true)?.zip(int_extreme(&args[1], false)?),
                        );
                        let span = [
                            a.map(|(s, e)| e as i128 - s as i128),
                            b.map(|(s, e)| s as i128 - e as i128),
                        ]
                        .into_iter()
                        .flatten()
                        .max();
                        if let (Some(span), Some(step)) = (span, step) {
                            too_large(name, span / step as i128)?;
                        }
                        return Ok(());
                    }
                };
                if let (Some(s), Some(e), Some(st)) = (start, stop, step) {
                    too_large(name, (e as i128 - s as i128) / st as i128)?;
                }
            }
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
        self.check(&args.args)?;
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
