//! Reading the parser's call arguments the same way in both engines.

use promql_parser::parser::Expr;

use crate::promql::error::PromqlError;

pub(crate) fn unwrap_paren(e: &Expr) -> &Expr {
    match e {
        Expr::Paren(p) => unwrap_paren(&p.expr),
        other => other,
    }
}

pub(crate) fn string_arg(e: &Expr) -> Result<String, PromqlError> {
    match e {
        Expr::StringLiteral(s) => Ok(s.val.clone()),
        Expr::Paren(p) => string_arg(&p.expr),
        _ => Err(PromqlError::exec("expected string literal argument")),
    }
}
