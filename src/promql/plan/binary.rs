//! Binary operators: a vector with a plan-time scalar becomes a [`MapValues`] operator;
//! vector/vector arithmetic and comparisons are a join ([`super::vector_match`]); `and`,
//! `or`, `unless` semi- and anti-joins ([`super::set_op`]). Scalar/scalar is a scalar,
//! which the planner leaves to the evaluator.

use promql_parser::parser::value::ValueType;
use promql_parser::parser::{BinaryExpr, Expr};

use super::decline::Decline;
use super::instant_fn::map;
use super::scalar::scalar;
use super::{Lowered, PlanCtx, set_op, vector_match};
use crate::promql::error::PromqlError;
use crate::promql::kernels::value_fn::ValueFn;
use crate::promql::op::BinOp;

pub(super) fn lower(p: &PlanCtx, b: &BinaryExpr) -> Result<Option<Lowered>, PromqlError> {
    let Some(op) = BinOp::of(b.op) else {
        return p.decline(Decline::unlowered(&Expr::Binary(b.clone())));
    };
    let return_bool = b.modifier.as_ref().is_some_and(|m| m.return_bool);
    match (b.lhs.value_type(), b.rhs.value_type()) {
        (ValueType::Vector, ValueType::Scalar) => {
            with_scalar(p, op, &b.lhs, &b.rhs, false, return_bool)
        }
        (ValueType::Scalar, ValueType::Vector) => {
            with_scalar(p, op, &b.rhs, &b.lhs, true, return_bool)
        }
        (ValueType::Vector, ValueType::Vector) => match op {
            BinOp::Arith(op) => vector_match::lower(p, op, b, return_bool),
            set => set_op::lower(p, set, b),
        },
        _ => Ok(None),
    }
}

fn with_scalar(
    p: &PlanCtx,
    op: BinOp,
    vector: &Expr,
    s: &Expr,
    scalar_left: bool,
    return_bool: bool,
) -> Result<Option<Lowered>, PromqlError> {
    let BinOp::Arith(op) = op else {
        return p.decline(Decline::Operator(op));
    };
    let Some(values) = scalar(p, s) else {
        return p.decline(Decline::ScalarOperand);
    };
    let f = ValueFn::Scalar {
        op,
        scalar_left,
        return_bool,
    };
    map(p, vector, f, values, vec![])
}
