//! PromQL: parse with `promql-parser`, evaluate over all steps at once against storage.
//!
//! `eval` dispatches on the AST node kind; selectors, functions, aggregations and binary
//! operators live in their own files.

mod aggregate;
mod binary;
mod binary_hist;
pub mod cancel;
mod error;
mod eval;
mod functions;
pub mod guard;
mod histogram_agg;
mod histogram_fns;
pub(crate) mod kernels;
pub mod op;
mod plan;
mod range_fns;
mod range_hist;
mod selector;
pub mod value;
mod value_fn;

pub use cancel::Cancel;
pub use error::PromqlError;
pub use eval::{Annotations, Engine, QueryOptions};
pub use selector::matcher_sets as selector_matchers;
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

/// Go's `strconv.FormatFloat(f, 'f', -1, 64)`-like shortest form used for label values
/// (count_values) and Prometheus's JSON.
pub fn format_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else {
        let s = format!("{v}");
        // Rust prints integral floats without exponent or fraction ("3"), like Go's %v for
        // moderate magnitudes; very large/small values use exponent form in Go.
        let a = v.abs();
        if a != 0.0 && !(1e-4..1e21).contains(&a) {
            let e = format!("{v:e}");
            // Go writes e+21 / e-05 style exponents.
            if let Some((m, exp)) = e.split_once('e') {
                let (sign, digits) = if let Some(d) = exp.strip_prefix('-') {
                    ('-', d)
                } else {
                    ('+', exp)
                };
                let digits = if digits.len() < 2 {
                    format!("0{digits}")
                } else {
                    digits.to_string()
                };
                return format!("{m}e{sign}{digits}");
            }
        }
        s
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
