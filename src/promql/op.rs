//! PromQL operators parsed once, from the parser's token ids, into enums: the engines
//! dispatch on these, never on operator text.

use std::fmt;

use promql_parser::parser::token::{self, TokenType};

pub use super::kernels::value_fn::ArithOp;

/// An aggregation operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AggOp {
    Sum,
    Avg,
    Count,
    Group,
    Min,
    Max,
    Stddev,
    Stdvar,
    Quantile,
    TopK,
    BottomK,
    LimitK,
    LimitRatio,
    CountValues,
}

impl AggOp {
    pub const ALL: [AggOp; 14] = [
        AggOp::Sum,
        AggOp::Avg,
        AggOp::Count,
        AggOp::Group,
        AggOp::Min,
        AggOp::Max,
        AggOp::Stddev,
        AggOp::Stdvar,
        AggOp::Quantile,
        AggOp::TopK,
        AggOp::BottomK,
        AggOp::LimitK,
        AggOp::LimitRatio,
        AggOp::CountValues,
    ];

    /// The operator of an aggregation token; `None` for a token that is not one.
    pub fn of(t: TokenType) -> Option<AggOp> {
        Some(match t.id() {
            token::T_SUM => AggOp::Sum,
            token::T_AVG => AggOp::Avg,
            token::T_COUNT => AggOp::Count,
            token::T_GROUP => AggOp::Group,
            token::T_MIN => AggOp::Min,
            token::T_MAX => AggOp::Max,
            token::T_STDDEV => AggOp::Stddev,
            token::T_STDVAR => AggOp::Stdvar,
            token::T_QUANTILE => AggOp::Quantile,
            token::T_TOPK => AggOp::TopK,
            token::T_BOTTOMK => AggOp::BottomK,
            token::T_LIMITK => AggOp::LimitK,
            token::T_LIMIT_RATIO => AggOp::LimitRatio,
            token::T_COUNT_VALUES => AggOp::CountValues,
            _ => return None,
        })
    }

    /// Its name as PromQL writes it.
    pub fn name(self) -> &'static str {
        match self {
            AggOp::Sum => "sum",
            AggOp::Avg => "avg",
            AggOp::Count => "count",
            AggOp::Group => "group",
            AggOp::Min => "min",
            AggOp::Max => "max",
            AggOp::Stddev => "stddev",
            AggOp::Stdvar => "stdvar",
            AggOp::Quantile => "quantile",
            AggOp::TopK => "topk",
            AggOp::BottomK => "bottomk",
            AggOp::LimitK => "limitk",
            AggOp::LimitRatio => "limit_ratio",
            AggOp::CountValues => "count_values",
        }
    }
}

impl fmt::Display for AggOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A binary operator: arithmetic or comparison (with its value kernel), or a set operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    Arith(ArithOp),
    And,
    Or,
    Unless,
}

impl BinOp {
    /// The operator of a binary expression's token; `None` for a token that is not one.
    pub fn of(t: TokenType) -> Option<BinOp> {
        use ArithOp::*;
        Some(BinOp::Arith(match t.id() {
            token::T_ADD => Add,
            token::T_SUB => Sub,
            token::T_MUL => Mul,
            token::T_DIV => Div,
            token::T_MOD => Mod,
            token::T_POW => Pow,
            token::T_ATAN2 => Atan2,
            token::T_EQLC => Eq,
            token::T_NEQ => Ne,
            token::T_GTR => Gt,
            token::T_LSS => Lt,
            token::T_GTE => Ge,
            token::T_LTE => Le,
            token::T_LAND => return Some(BinOp::And),
            token::T_LOR => return Some(BinOp::Or),
            token::T_LUNLESS => return Some(BinOp::Unless),
            _ => return None,
        }))
    }

    pub fn is_set(self) -> bool {
        !matches!(self, BinOp::Arith(_))
    }

    pub fn is_comparison(self) -> bool {
        matches!(self, BinOp::Arith(a) if a.is_comparison())
    }

    /// As PromQL writes it.
    pub fn name(self) -> &'static str {
        match self {
            BinOp::Arith(a) => a.symbol(),
            BinOp::And => "and",
            BinOp::Or => "or",
            BinOp::Unless => "unless",
        }
    }
}

impl fmt::Display for BinOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every operator round-trips through the parser: its name parses to its token.
    #[test]
    fn every_aggregation_parses_to_its_operator() {
        for op in AggOp::ALL {
            let q = match op {
                AggOp::TopK | AggOp::BottomK | AggOp::LimitK | AggOp::LimitRatio => {
                    format!("{op}(1, x)")
                }
                AggOp::Quantile => format!("{op}(0.5, x)"),
                AggOp::CountValues => format!("{op}(\"v\", x)"),
                _ => format!("{op}(x)"),
            };
            let Ok(promql_parser::parser::Expr::Aggregate(a)) = promql_parser::parser::parse(&q)
            else {
                panic!("{q} does not parse as an aggregation");
            };
            assert_eq!(AggOp::of(a.op), Some(op), "{q}");
        }
    }

    /// Every binary operator parses to its enum, and its name is what the parser read.
    #[test]
    fn every_binary_operator_parses_to_its_operator() {
        for text in [
            "+", "-", "*", "/", "%", "^", "atan2", "==", "!=", ">", "<", ">=", "<=", "and", "or",
            "unless",
        ] {
            let q = format!("a {text} b");
            let Ok(promql_parser::parser::Expr::Binary(b)) = promql_parser::parser::parse(&q)
            else {
                panic!("{q} does not parse as a binary expression");
            };
            let op = BinOp::of(b.op).unwrap_or_else(|| panic!("{q}: no operator"));
            assert_eq!(op.name(), text);
        }
    }
}
