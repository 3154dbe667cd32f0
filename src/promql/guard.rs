//! Bounds on a query's text, checked before `promql-parser` sees it.
//!
//! The parser, `Expr::value_type`, `Display`, `Drop` and the evaluator all recurse once per
//! AST level, and the parser's type checks walk whole operand chains (quadratic in the
//! depth). A query nested deeper than the thread's stack allows would abort the process, so
//! the depth is bounded here, by a scan of the text that never recurses: the AST depth of a
//! query is at most its deepest bracket nesting plus the number of operators in it. Query
//! threads have stacks sized for the default bound (see `api::query_runtime`).

use std::sync::atomic::{AtomicUsize, Ordering};

/// Default: deeper than any hand-written or generated dashboard query; Prometheus answers
/// 5,000 nested parentheses, and so do we.
pub const DEFAULT_MAX_DEPTH: usize = 10_000;
/// Default longest query text (bytes).
pub const DEFAULT_MAX_LENGTH: usize = 256 << 10;

static MAX_DEPTH: AtomicUsize = AtomicUsize::new(DEFAULT_MAX_DEPTH);
static MAX_LENGTH: AtomicUsize = AtomicUsize::new(DEFAULT_MAX_LENGTH);

/// Sets the process-wide bounds (`--query-max-depth`, `--query-max-length`).
pub fn set_limits(max_depth: usize, max_length: usize) {
    MAX_DEPTH.store(max_depth.max(1), Ordering::Relaxed);
    MAX_LENGTH.store(max_length.max(1), Ordering::Relaxed);
}

/// The bounds in force: (depth, length).
pub fn limits() -> (usize, usize) {
    (
        MAX_DEPTH.load(Ordering::Relaxed),
        MAX_LENGTH.load(Ordering::Relaxed),
    )
}

/// Refuses a query whose text is too long or whose expression could nest too deeply.
pub fn check(query: &str) -> Result<(), String> {
    let (max_depth, max_len) = limits();
    if query.len() > max_len {
        return Err(format!(
            "query is {} bytes long; the limit is {max_len} (--query-max-length)",
            query.len()
        ));
    }
    let bound = depth_bound(query);
    if bound > max_depth {
        return Err(format!(
            "expression nests too deeply: up to {bound} levels, the limit is {max_depth} (--query-max-depth)"
        ));
    }
    Ok(())
}

/// An upper bound of the AST depth: the deepest nesting of `(`, `[`, `{` plus every operator
/// (binary and unary, symbols and keywords) outside strings and label braces.
pub fn depth_bound(q: &str) -> usize {
    let b = q.as_bytes();
    let (mut depth, mut max_depth, mut ops, mut braces) = (0usize, 0usize, 0usize, 0usize);
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'"' | b'\'' | b'`' => {
                // Skip the string; backslash escapes in the two quoted forms.
                i += 1;
                while i < b.len() && b[i] != c {
                    if b[i] == b'\\' && c != b'`' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'#' => {
                // Comment to end of line.
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'(' | b'[' | b'{' => {
                if c == b'{' {
                    braces += 1;
                }
                depth += 1;
                max_depth = max_depth.max(depth);
            }
            b')' | b']' | b'}' => {
                if c == b'}' {
                    braces = braces.saturating_sub(1);
                }
                depth = depth.saturating_sub(1);
            }
            b'+' | b'-' | b'*' | b'/' | b'%' | b'^' | b'<' | b'>' | b'=' | b'!' if braces == 0 => {
                ops += 1;
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                while i + 1 < b.len() && (b[i + 1].is_ascii_alphanumeric() || b[i + 1] == b'_') {
                    i += 1;
                }
                if braces == 0
                    && matches!(
                        q[start..=i].to_ascii_lowercase().as_str(),
                        "and" | "or" | "unless" | "atan2"
                    )
                {
                    ops += 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    max_depth.saturating_add(ops).saturating_add(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bound_is_at_least_the_nesting() {
        assert_eq!(depth_bound("up"), 1);
        assert!(depth_bound("sum(rate(x[5m]))") >= 4);
        assert!(depth_bound(&format!("{}1{}", "(".repeat(50), ")".repeat(50))) >= 50);
        assert!(depth_bound(&"1+".repeat(300)) >= 300);
        assert!(depth_bound(&format!("{}1", "- ".repeat(70))) >= 70);
        assert!(depth_bound(&"x or ".repeat(40)) >= 40);
        // Operators inside label braces and strings do not count.
        assert_eq!(depth_bound(r#"up{a=~"x+-*/", b!="(((("}"#), 2);
    }

    #[test]
    fn deep_and_long_queries_are_refused_before_parsing() {
        let deep = format!("{}1{}", "(".repeat(100_000), ")".repeat(100_000));
        assert!(check(&deep).unwrap_err().contains("--query-max-"));
        let nested_ok = format!("{}1{}", "(".repeat(5_000), ")".repeat(5_000));
        assert!(check(&nested_ok).is_ok());
        assert!(check(&"1+".repeat(60_000)).is_err());
    }
}
