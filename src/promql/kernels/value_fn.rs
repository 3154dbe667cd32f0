//! Functions of one sample value (and a scalar per step): element-wise math, `round`,
//! `clamp*`, date parts, unary minus, and arithmetic or comparison with a scalar.
//!
//! One definition serves both engines — the evaluator's function calls and binary
//! operators, and the planner's `MapValues` operator — so they cannot drift apart. Each
//! has a stable name, which is how a plan is displayed and serialised.

use chrono::{Datelike, TimeZone, Timelike};

/// A binary operator on two floats, as Prometheus's `vectorElemBinop`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
    Atan2,
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
}

impl ArithOp {
    pub fn parse(op: &str) -> Option<ArithOp> {
        use ArithOp::*;
        Some(match op {
            "+" => Add,
            "-" => Sub,
            "*" => Mul,
            "/" => Div,
            "%" => Mod,
            "^" => Pow,
            "atan2" => Atan2,
            "==" => Eq,
            "!=" => Ne,
            ">" => Gt,
            "<" => Lt,
            ">=" => Ge,
            "<=" => Le,
            _ => return None,
        })
    }

    pub fn symbol(self) -> &'static str {
        use ArithOp::*;
        match self {
            Add => "+",
            Sub => "-",
            Mul => "*",
            Div => "/",
            Mod => "%",
            Pow => "^",
            Atan2 => "atan2",
            Eq => "==",
            Ne => "!=",
            Gt => ">",
            Lt => "<",
            Ge => ">=",
            Le => "<=",
        }
    }

    pub fn is_comparison(self) -> bool {
        use ArithOp::*;
        matches!(self, Eq | Ne | Gt | Lt | Ge | Le)
    }

    /// `(value, keep)`: arithmetic keeps its result; a comparison keeps `l` when it holds.
    #[inline]
    pub fn apply(self, l: f64, r: f64) -> (f64, bool) {
        use ArithOp::*;
        match self {
            Add => (l + r, true),
            Sub => (l - r, true),
            Mul => (l * r, true),
            Div => (l / r, true),
            Mod => (l % r, true),
            Pow => (l.powf(r), true),
            Atan2 => (l.atan2(r), true),
            Eq => (l, l == r),
            Ne => (l, l != r),
            Gt => (l, l > r),
            Lt => (l, l < r),
            Ge => (l, l >= r),
            Le => (l, l <= r),
        }
    }

    /// One vector/vector element: `None` when a comparison filters it out.
    #[inline]
    pub fn combine(self, l: f64, r: f64, return_bool: bool) -> Option<f64> {
        let (v, keep) = self.apply(l, r);
        if return_bool {
            Some(if keep { 1.0 } else { 0.0 })
        } else {
            keep.then_some(v)
        }
    }
}

/// A function of a sample value `v` and up to two scalars `a`, `b` at its step.
#[derive(Clone, Copy, Debug)]
pub(crate) enum ValueFn {
    /// `abs`, `ceil`, … `rad`, and the date parts of a value (`hour(x)`).
    Unary(&'static str, F64Fn),
    /// `round(v, a)`.
    Round,
    /// `clamp(v, a, b)`, `clamp_min(v, a)`, `clamp_max(v, a)`.
    Clamp,
    ClampMin,
    ClampMax,
    /// `-v`.
    Neg,
    /// `v op a`, or `a op v` when the scalar is on the left.
    Scalar {
        op: ArithOp,
        scalar_left: bool,
        return_bool: bool,
    },
    /// The step's time `a`, for `timestamp(expr)` of a computed vector.
    StepTime,
}

impl PartialEq for ValueFn {
    fn eq(&self, other: &Self) -> bool {
        self.name() == other.name()
    }
}

impl Eq for ValueFn {}

impl std::hash::Hash for ValueFn {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name().hash(state)
    }
}

impl ValueFn {
    /// The instant function `name` of one vector argument and scalar parameters.
    pub fn function(name: &str) -> Option<ValueFn> {
        Some(match name {
            "round" => ValueFn::Round,
            "clamp" => ValueFn::Clamp,
            "clamp_min" => ValueFn::ClampMin,
            "clamp_max" => ValueFn::ClampMax,
            _ => return unary_fn(name).map(|(n, f)| ValueFn::Unary(n, f)),
        })
    }

    /// A stable name: in plans, and what a serialised plan carries.
    pub fn name(&self) -> String {
        match self {
            ValueFn::Unary(n, _) => (*n).to_string(),
            ValueFn::Round => "round".into(),
            ValueFn::Clamp => "clamp".into(),
            ValueFn::ClampMin => "clamp_min".into(),
            ValueFn::ClampMax => "clamp_max".into(),
            ValueFn::Neg => "neg".into(),
            ValueFn::StepTime => "step_time".into(),
            ValueFn::Scalar {
                op,
                scalar_left,
                return_bool,
            } => format!(
                "{}{}{}",
                if *scalar_left { "scalar " } else { "" },
                op.symbol(),
                if *return_bool { " bool" } else { "" }
            ),
        }
    }

    /// The inverse of [`ValueFn::name`].
    pub fn from_name(name: &str) -> Option<ValueFn> {
        match name {
            "neg" => return Some(ValueFn::Neg),
            "step_time" => return Some(ValueFn::StepTime),
            _ => {}
        }
        if let Some(f) = ValueFn::function(name) {
            return Some(f);
        }
        let (scalar_left, rest) = match name.strip_prefix("scalar ") {
            Some(rest) => (true, rest),
            None => (false, name),
        };
        let (return_bool, op) = match rest.strip_suffix(" bool") {
            Some(op) => (true, op),
            None => (false, rest),
        };
        Some(ValueFn::Scalar {
            op: ArithOp::parse(op)?,
            scalar_left,
            return_bool,
        })
    }

    /// Whether the result loses `__name__` (everything but a filtering comparison).
    pub fn drops_name(&self) -> bool {
        match self {
            ValueFn::Scalar {
                op, return_bool, ..
            } => !op.is_comparison() || *return_bool,
            _ => true,
        }
    }

    /// The value at one step, `None` when the sample leaves the result.
    #[inline]
    pub fn apply(&self, v: f64, a: f64, b: f64) -> Option<f64> {
        match *self {
            ValueFn::Unary(_, f) => Some(f(v)),
            ValueFn::Round => Some(round(v, a)),
            ValueFn::Clamp | ValueFn::ClampMin | ValueFn::ClampMax => clamp(self, v, a, b),
            ValueFn::Neg => Some(-v),
            ValueFn::StepTime => Some(a),
            ValueFn::Scalar {
                op,
                scalar_left,
                return_bool,
            } => {
                let (l, r) = if scalar_left { (a, v) } else { (v, a) };
                let (mut val, keep) = op.apply(l, r);
                if op.is_comparison() {
                    // The vector's value is the result, whichever side it is on.
                    val = v;
                }
                if return_bool {
                    Some(if keep { 1.0 } else { 0.0 })
                } else {
                    keep.then_some(val)
                }
            }
        }
    }
}

/// `min_of(a, b)` (`max: false`) or `max_of(a, b)` at every step: NaN if either is.
pub(crate) fn extreme_of(max: bool, a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| {
            if x.is_nan() || y.is_nan() {
                f64::NAN
            } else if max {
                x.max(y)
            } else {
                x.min(y)
            }
        })
        .collect()
}

/// Value order with NaN last either way (`sort`, `sort_desc`, `topk`, `bottomk`).
pub(crate) fn nan_last(x: f64, y: f64, desc: bool) -> std::cmp::Ordering {
    use std::cmp::Ordering::*;
    match (x.is_nan(), y.is_nan()) {
        (true, true) => Equal,
        (true, false) => Greater,
        (false, true) => Less,
        _ if desc => y.partial_cmp(&x).unwrap_or(Equal),
        _ => x.partial_cmp(&y).unwrap_or(Equal),
    }
}

/// A function of one value.
pub(crate) type F64Fn = fn(f64) -> f64;

/// The element-wise function `name`, with its name as a `'static` string.
pub(crate) fn unary_fn(name: &str) -> Option<(&'static str, F64Fn)> {
    const TABLE: &[(&str, F64Fn)] = &[
        ("abs", f64::abs),
        ("ceil", f64::ceil),
        ("floor", f64::floor),
        ("exp", f64::exp),
        ("sqrt", f64::sqrt),
        ("ln", f64::ln),
        ("log2", f64::log2),
        ("log10", f64::log10),
        ("sgn", sgn),
        ("acos", f64::acos),
        ("acosh", f64::acosh),
        ("asin", f64::asin),
        ("asinh", f64::asinh),
        ("atan", f64::atan),
        ("atanh", f64::atanh),
        ("cos", f64::cos),
        ("cosh", f64::cosh),
        ("sin", f64::sin),
        ("sinh", f64::sinh),
        ("tan", f64::tan),
        ("tanh", f64::tanh),
        ("deg", f64::to_degrees),
        ("rad", f64::to_radians),
        ("minute", |v| date_part("minute", v)),
        ("hour", |v| date_part("hour", v)),
        ("day_of_month", |v| date_part("day_of_month", v)),
        ("day_of_week", |v| date_part("day_of_week", v)),
        ("day_of_year", |v| date_part("day_of_year", v)),
        ("days_in_month", |v| date_part("days_in_month", v)),
        ("month", |v| date_part("month", v)),
        ("year", |v| date_part("year", v)),
    ];
    TABLE.iter().find(|(n, _)| *n == name).copied()
}

fn sgn(x: f64) -> f64 {
    if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else {
        x
    }
}

/// PromQL's `round(v, to_nearest)`: halves round up (towards +Inf), as `math.Floor(x + 0.5)`.
pub(crate) fn round(v: f64, to: f64) -> f64 {
    ((v * (1.0 / to)) + 0.5).floor() / (1.0 / to)
}

/// `clamp`, `clamp_min`, `clamp_max` (`b` only for `clamp`).
pub(crate) fn clamp(f: &ValueFn, v: f64, a: f64, b: f64) -> Option<f64> {
    // Go's math.Max and math.Min answer NaN when either argument is NaN; Rust's ignore it.
    let go = |x: f64, y: f64, max: bool| {
        if x.is_nan() || y.is_nan() {
            f64::NAN
        } else if max {
            x.max(y)
        } else {
            x.min(y)
        }
    };
    match f {
        ValueFn::ClampMin => Some(go(a, v, true)),
        ValueFn::ClampMax => Some(go(a, v, false)),
        _ => {
            let (lo, hi) = (a, b);
            if hi < lo {
                None
            } else {
                Some(go(lo, go(hi, v, false), true))
            }
        }
    }
}

/// A date part of `v` seconds since the epoch, UTC.
pub(crate) fn date_part(name: &str, v: f64) -> f64 {
    if !v.is_finite() {
        return f64::NAN;
    }
    let Some(dt) = chrono::Utc.timestamp_opt(v.floor() as i64, 0).single() else {
        return f64::NAN;
    };
    (match name {
        "minute" => dt.minute(),
        "hour" => dt.hour(),
        "day_of_month" => dt.day(),
        "day_of_week" => dt.weekday().num_days_from_sunday(),
        "day_of_year" => dt.ordinal(),
        "month" => dt.month(),
        "year" => dt.year() as u32,
        "days_in_month" => {
            let (y, m) = (dt.year(), dt.month());
            let next = if m == 12 {
                chrono::NaiveDate::from_ymd_opt(y + 1, 1, 1)
            } else {
                chrono::NaiveDate::from_ymd_opt(y, m + 1, 1)
            };
            let first = chrono::NaiveDate::from_ymd_opt(y, m, 1);
            match (next, first) {
                (Some(n), Some(f)) => (n - f).num_days() as u32,
                _ => return f64::NAN,
            }
        }
        _ => return f64::NAN,
    }) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for name in [
            "abs",
            "hour",
            "round",
            "clamp",
            "clamp_min",
            "neg",
            "step_time",
            "+",
            "scalar ^",
            "> bool",
            "scalar <= bool",
            "atan2",
        ] {
            let f = ValueFn::from_name(name).unwrap();
            assert_eq!(f.name(), name);
        }
        assert!(ValueFn::from_name("nope").is_none());
    }

    #[test]
    fn comparisons_keep_the_vectors_value() {
        let gt = ValueFn::Scalar {
            op: ArithOp::Gt,
            scalar_left: true,
            return_bool: false,
        };
        // 5 > v holds for v = 3: the result is v, not the scalar.
        assert_eq!(gt.apply(3.0, 5.0, 0.0), Some(3.0));
        assert_eq!(gt.apply(7.0, 5.0, 0.0), None);
        assert_eq!(ValueFn::Clamp.apply(1.0, 2.0, 1.0), None);
        // NaN in, NaN out, as Go's math.Max/Min (Rust's ignore NaN).
        assert!(
            ValueFn::ClampMin
                .apply(f64::NAN, 1.0, 0.0)
                .unwrap()
                .is_nan()
        );
        assert!(
            ValueFn::ClampMin
                .apply(1.0, f64::NAN, 0.0)
                .unwrap()
                .is_nan()
        );
        assert!(
            ValueFn::ClampMax
                .apply(f64::NAN, 1.0, 0.0)
                .unwrap()
                .is_nan()
        );
        assert!(ValueFn::Clamp.apply(f64::NAN, 0.0, 1.0).unwrap().is_nan());
        assert_eq!(round(2.5, 1.0), 3.0);
        assert_eq!(round(-2.5, 1.0), -2.0);
    }
}
