//! Which queries run on the thread their request arrived on rather than on the query
//! runtime. Handing a query to a query thread and taking its answer back costs two thread
//! wake-ups, more than a constant's whole evaluation (docs/benchmarks.md, "Session 24").
//! A query qualifies when it reads no samples (no selectors, no subqueries: its work is its
//! steps, at most 11,000, times its few operators) and its text is short and shallow
//! enough for any thread's stack (the HTTP runtime's threads have 64 MiB, `main.rs`).

use promql_parser::parser::Expr;

use crate::promql::{Engine, PromqlError};

/// Longest query text considered.
const MAX_BYTES: usize = 256;
/// Deepest AST considered (`promql::guard::depth_bound`).
const MAX_DEPTH: usize = 16;

/// The query parsed, when it is short and shallow enough to parse on any thread; `None`:
/// leave parsing to a query thread.
pub(super) fn parse_small(q: &str) -> Option<Result<Expr, PromqlError>> {
    (q.len() <= MAX_BYTES && crate::promql::guard::depth_bound(q) <= MAX_DEPTH)
        .then(|| Engine::parse(q))
}

/// Whether evaluating `e` reads no samples and runs no subquery steps.
pub(super) fn reads_nothing(e: &Expr) -> bool {
    match e {
        Expr::VectorSelector(_) | Expr::MatrixSelector(_) | Expr::Subquery(_) => false,
        Expr::Extension(_) => false,
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) => true,
        Expr::Aggregate(a) => {
            reads_nothing(&a.expr) && a.param.as_deref().is_none_or(reads_nothing)
        }
        Expr::Unary(u) => reads_nothing(&u.expr),
        Expr::Binary(b) => reads_nothing(&b.lhs) && reads_nothing(&b.rhs),
        Expr::Paren(p) => reads_nothing(&p.expr),
        Expr::Call(c) => c.args.args.iter().all(|a| reads_nothing(a)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn here(q: &str) -> bool {
        parse_small(q)
            .and_then(Result::ok)
            .is_some_and(|e| reads_nothing(&e))
    }

    #[test]
    fn constants_run_here_and_reads_go_to_query_threads() {
        for q in [
            "vector(1)",
            "time()",
            "day_of_week()",
            "-(1 + 2) * scalar(vector(3))",
            "sum by (a) (label_replace(vector(1), \"a\", \"x\", \"\", \"\"))",
            "topk(1, vector(time()))",
        ] {
            assert!(here(q), "{q}");
        }
        for q in [
            "up",
            "rate(x[5m])",
            "absent(up{job=\"node\"})",
            "vector(1) + on() group_left up",
            // No selector, but a subquery's steps are work of their own.
            "max_over_time(vector(1)[30d:1s])",
            "topk(scalar(up), vector(1))",
        ] {
            assert!(!here(q), "{q}");
        }
        // Long or deep texts parse on a query thread, whatever they hold.
        let long = format!("vector({})", "1+".repeat(200) + "1");
        assert!(parse_small(&long).is_none());
        let deep = format!("{}1{}", "(".repeat(20), ")".repeat(20));
        assert!(parse_small(&deep).is_none());
        assert!(parse_small("((1))").is_some_and(|r| r.is_ok()));
    }
}
