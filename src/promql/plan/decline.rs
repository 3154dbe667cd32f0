//! Why the planner leaves a node to the evaluator: one enum, so every reason is known at
//! compile time and listed in docs/conformance.md ("Still evaluated"), whether or not the
//! upstream tests happen to reach it.
//!
//! A reason is a template with at most one placeholder (`<aggregation>`, `<function>`,
//! `<operator>`, `<node>`, `<type>`); `Display` fills it in. [`TEMPLATES`] holds every
//! template and [`Decline::template`] maps each variant to its own by an exhaustive match,
//! so a new variant cannot exist without a template, and a test checks that every template
//! is documented.

use std::fmt;

use promql_parser::parser::Expr;
use promql_parser::parser::value::ValueType;

use super::group_fold::GroupFn;
use crate::promql::func::Func;
use crate::promql::op::{AggOp, BinOp};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decline {
    /// The whole expression is not an instant vector (`scalar`, `string`, `matrix`).
    NotAVector(ValueType),
    /// More steps than a plan's `u32` step index can name.
    TooManySteps,
    /// A selector whose series hold native-histogram samples in the range.
    NativeHistograms,
    /// `quantile`, `topk`, `bottomk`, `limitk` with a parameter computed from samples.
    AggregationParam(GroupFn),
    /// A function's scalar parameter computed from samples (`clamp(v, scalar(w), 1)`).
    FunctionParam(Func),
    /// `topk`, `bottomk`, `limitk` with a NaN parameter: the evaluator words the error.
    NanParam(GroupFn),
    /// A set operator with a scalar operand (or an operator the planner does not know).
    Operator(BinOp),
    /// A scalar operand computed from samples (`v * scalar(w)`).
    ScalarOperand,
    /// `sort_by_label()` whose label arguments are not string literals.
    SortLabels,
    /// `vector()` of a scalar computed from samples.
    VectorOfScalar,
    /// `label_replace`/`label_join` with invalid arguments: the evaluator words the error.
    LabelArguments,
    /// A subquery of a scalar expression.
    ScalarSubquery,
    /// Many-to-many matching of an arithmetic operator (an error the evaluator words).
    ManyToMany,
    /// `group_left`/`group_right` with a match group twice on the one side.
    DuplicateOnOneSide,
    /// One-to-one matching with a match group twice on a side.
    DuplicateOneToOne,
    /// Vector matching whose result series would collide.
    ResultCollision,
    /// An aggregation with no lowering (`count_values`, `limit_ratio`).
    Aggregation(AggOp),
    /// A function call with no lowering.
    Call(Func),
    /// Any other node kind with no lowering (a subquery, a range vector, a literal, a
    /// binary operator between these types, …), by its kind.
    Node(NodeKind),
}

/// A node kind the planner has no lowering for, as [`Decline::Node`] names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NodeKind {
    Subquery,
    RangeVector,
    Literal,
    Binary(ValueType, BinOp, ValueType),
    Other(ValueType),
}

/// Every reason, as docs/conformance.md lists it.
pub const TEMPLATES: &[&str] = &[
    "<type> result",
    "more steps than a plan's u32 step index",
    "native histograms in the selection",
    "<aggregation> with a parameter that is not a plan-time scalar",
    "<function>() with a parameter that is not a plan-time scalar",
    "<aggregation> with a NaN parameter (an error)",
    "operator <operator>",
    "a scalar operand that is not a plan-time scalar (scalar())",
    "sort_by_label() with a label that is not a string literal",
    "vector() of a scalar that is not a plan-time scalar (scalar())",
    "label function with invalid arguments (the evaluator words the error)",
    "subquery of a scalar",
    "many-to-many matching of an arithmetic operator",
    "vector matching with a match group twice on the one side",
    "one-to-one matching with a match group twice on a side",
    "vector matching whose result series would collide",
    "<aggregation> aggregation",
    "<function>()",
    "<node>",
];

impl Decline {
    /// This reason's template (an entry of [`TEMPLATES`]) and what fills its placeholder.
    pub fn template(&self) -> (&'static str, Option<String>) {
        use Decline::*;
        let (i, fill) = match self {
            NotAVector(t) => (0, Some(t.to_string())),
            TooManySteps => (1, None),
            NativeHistograms => (2, None),
            AggregationParam(f) => (3, Some(f.name().to_string())),
            FunctionParam(f) => (4, Some(f.name().to_string())),
            NanParam(f) => (5, Some(f.name().to_string())),
            Operator(op) => (6, Some(op.to_string())),
            ScalarOperand => (7, None),
            SortLabels => (8, None),
            VectorOfScalar => (9, None),
            LabelArguments => (10, None),
            ScalarSubquery => (11, None),
            ManyToMany => (12, None),
            DuplicateOnOneSide => (13, None),
            DuplicateOneToOne => (14, None),
            ResultCollision => (15, None),
            Aggregation(op) => (16, Some(op.to_string())),
            Call(f) => (17, Some(f.name().to_string())),
            Node(k) => (18, Some(k.to_string())),
        };
        (TEMPLATES[i], fill)
    }

    /// The reason a node of this kind has no lowering.
    pub fn unlowered(expr: &Expr) -> Decline {
        match expr {
            Expr::Aggregate(a) => match AggOp::of(a.op) {
                Some(op) => Decline::Aggregation(op),
                None => Decline::Node(NodeKind::Other(expr.value_type())),
            },
            Expr::Call(c) => match Func::of(c.func.name) {
                Some(f) => Decline::Call(f),
                None => Decline::Node(NodeKind::Other(expr.value_type())),
            },
            Expr::Subquery(_) => Decline::Node(NodeKind::Subquery),
            Expr::MatrixSelector(_) => Decline::Node(NodeKind::RangeVector),
            Expr::Binary(b) => match BinOp::of(b.op) {
                Some(op) => {
                    Decline::Node(NodeKind::Binary(b.lhs.value_type(), op, b.rhs.value_type()))
                }
                None => Decline::Node(NodeKind::Other(expr.value_type())),
            },
            Expr::NumberLiteral(_) | Expr::StringLiteral(_) => Decline::Node(NodeKind::Literal),
            other => Decline::Node(NodeKind::Other(other.value_type())),
        }
    }
}

impl fmt::Display for NodeKind {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            NodeKind::Subquery => f.write_str("subquery"),
            NodeKind::RangeVector => f.write_str("range vector"),
            NodeKind::Literal => f.write_str("literal"),
            NodeKind::Binary(l, op, r) => write!(f, "{l} {} {r}", op.name()),
            NodeKind::Other(t) => write!(f, "{t} expression"),
        }
    }
}

impl fmt::Display for Decline {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let (template, fill) = self.template();
        match (template.find('<'), template.find('>'), fill) {
            (Some(a), Some(b), Some(fill)) => {
                write!(f, "{}{fill}{}", &template[..a], &template[b + 1..])
            }
            _ => f.write_str(template),
        }
    }
}

/// Whether `reason` (a `Decline` as displayed) is an instance of `template`.
pub fn instance_of(reason: &str, template: &str) -> bool {
    match (template.find('<'), template.find('>')) {
        (Some(a), Some(b)) => {
            let (pre, post) = (&template[..a], &template[b + 1..]);
            reason.len() > pre.len() + post.len()
                && reason.starts_with(pre)
                && reason.ends_with(post)
        }
        _ => reason == template,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One instance of every variant: each displays as an instance of its template, and
    /// the templates of all of them are all of [`TEMPLATES`].
    #[test]
    fn every_variant_displays_as_its_template() {
        let all = [
            Decline::NotAVector(ValueType::Scalar),
            Decline::TooManySteps,
            Decline::NativeHistograms,
            Decline::AggregationParam(GroupFn::TopK),
            Decline::FunctionParam(Func::Clamp),
            Decline::NanParam(GroupFn::LimitK),
            Decline::Operator(BinOp::And),
            Decline::ScalarOperand,
            Decline::SortLabels,
            Decline::VectorOfScalar,
            Decline::LabelArguments,
            Decline::ScalarSubquery,
            Decline::ManyToMany,
            Decline::DuplicateOnOneSide,
            Decline::DuplicateOneToOne,
            Decline::ResultCollision,
            Decline::Aggregation(AggOp::CountValues),
            Decline::Call(Func::HistogramCount),
            Decline::Node(NodeKind::Subquery),
        ];
        let mut seen: Vec<&str> = Vec::new();
        for d in &all {
            let (template, _) = d.template();
            let text = d.to_string();
            assert!(instance_of(&text, template), "{text:?} vs {template:?}");
            assert!(!text.contains('<'), "{text}");
            seen.push(template);
        }
        seen.sort_unstable();
        seen.dedup();
        let mut want = TEMPLATES.to_vec();
        want.sort_unstable();
        assert_eq!(seen, want, "an instance of every template");
        // As the reasons read before they were an enum.
        assert_eq!(
            Decline::NotAVector(ValueType::Matrix).to_string(),
            "matrix result"
        );
        assert_eq!(
            Decline::AggregationParam(GroupFn::Quantile).to_string(),
            "quantile with a parameter that is not a plan-time scalar"
        );
        assert_eq!(
            Decline::Aggregation(AggOp::LimitRatio).to_string(),
            "limit_ratio aggregation"
        );
        assert_eq!(
            Decline::Call(Func::HistogramCount).to_string(),
            "histogram_count()"
        );
        assert_eq!(Decline::Operator(BinOp::And).to_string(), "operator and");
    }

    /// docs/conformance.md lists every template (not only those the upstream tests reach).
    #[test]
    fn every_template_is_documented() {
        let doc =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/conformance.md"))
                .unwrap();
        let section = doc
            .split("### Still evaluated")
            .nth(1)
            .expect("a \"### Still evaluated\" section");
        let section = section.split("\n#").next().unwrap_or(section);
        let listed: Vec<&str> = section
            .lines()
            .filter_map(|l| l.strip_prefix("- `"))
            .filter_map(|l| l.split('`').next())
            .collect();
        let missing: Vec<&&str> = TEMPLATES.iter().filter(|t| !listed.contains(t)).collect();
        assert!(
            missing.is_empty(),
            "not in docs/conformance.md: {missing:?}"
        );
        let stale: Vec<&&str> = listed.iter().filter(|l| !TEMPLATES.contains(l)).collect();
        assert!(stale.is_empty(), "documented but no reason: {stale:?}");
    }
}
