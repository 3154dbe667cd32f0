//! PromQL: parse with `promql-parser`, then answer with two engines over one core.
//!
//! - [`engine`]: one query's state (options, snapshot, scope, budget, annotations) and its
//!   entry points; the only module that knows both engines.
//! - `plan`: instant-vector subtrees lowered to DataFusion plans.
//! - `eval`: the step-vector evaluator, for what the planner declines and as its oracle.
//! - `kernels`: what both compute (selection, lookback, grouping, sums, texts, functions).
//!   `plan` and `eval` import `kernels` and never each other.
//! - [`op`], [`func`]: operators and functions, parsed once into the enums both engines
//!   dispatch on.

pub mod cancel;
mod engine;
mod error;
mod eval;
pub mod func;
pub mod guard;
pub(crate) mod kernels;
pub mod op;
mod plan;
pub(crate) mod scope;
pub mod value;

pub use cancel::Cancel;
pub use engine::{EVALUATE_BELOW, Engine, QueryOptions};
pub use error::PromqlError;
pub use kernels::annotations::Annotations;
pub use kernels::select::matcher_sets as selector_matchers;
/// Why the planner leaves a node to the evaluator: every reason's template (as
/// docs/conformance.md lists it), and whether a displayed reason is an instance of one.
pub use plan::Distribution;
pub use plan::decline::{TEMPLATES as DECLINE_TEMPLATES, instance_of as is_decline_of};
pub use plan::explain::{Explained, Phase, PlanNode, RunStats};
pub(crate) use plan::explain::{phases_line, plan_text};
pub(crate) use plan::series_ref;
pub(crate) use plan::{task_ext, task_session, worth_retrying};
pub use value::{RangeSeries, Series, Steps, Value};

/// Parses a PromQL expression. `promql-parser` panics on some inputs instead of returning an
/// error (e.g. `x offset NaN`: its grammar action converts NaN seconds to a `Duration`); a
/// query must never take a request down, so a panic becomes a parse error.
///
/// Text that is too long or could nest too deeply is refused first (see `guard`).
pub fn parse(query: &str) -> Result<promql_parser::parser::Expr, String> {
    guard::check(query)?;
    match std::panic::catch_unwind(|| promql_parser::parser::parse(query)) {
        Ok(result) => result,
        Err(panic) => {
            let why = crate::panic_message(panic.as_ref()).unwrap_or("the parser failed");
            Err(format!("invalid expression: {why}"))
        }
    }
}

#[cfg(test)]
mod tests {
    /// Found by `promql_fuzz`: promql-parser panics converting NaN seconds to a Duration.
    #[test]
    fn parser_panics_become_parse_errors() {
        for q in ["by offset NaN", "up offset NaN", "up offset Inf"] {
            let e = super::parse(q).expect_err(q);
            assert!(!e.is_empty(), "{q}");
        }
        assert!(super::parse("up offset 5m").is_ok());
    }
}
