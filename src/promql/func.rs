//! PromQL functions parsed once, from a call's name, into an enum: the engines dispatch on
//! it, never on function names (which stay for display: plans, explain, error texts).

use std::fmt;

use super::kernels::range_fns::RangeFn;
use super::kernels::value_fn::ValueFn;

/// A PromQL function Quiver evaluates (promql-parser knows a few more: those are "not
/// supported yet").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Func {
    // Range functions, over the windows of a range vector (`RangeFn`).
    Rate,
    Increase,
    Delta,
    Irate,
    Idelta,
    Deriv,
    PredictLinear,
    Resets,
    Changes,
    AvgOverTime,
    MinOverTime,
    MaxOverTime,
    SumOverTime,
    CountOverTime,
    StddevOverTime,
    StdvarOverTime,
    LastOverTime,
    FirstOverTime,
    PresentOverTime,
    MadOverTime,
    QuantileOverTime,
    /// Also parsed from `holt_winters`, its pre-3.0 name.
    DoubleExponentialSmoothing,
    TsOfLastOverTime,
    TsOfFirstOverTime,
    TsOfMaxOverTime,
    TsOfMinOverTime,
    AbsentOverTime,
    // Scalars of the query's times.
    Time,
    Pi,
    Start,
    End,
    Range,
    Step,
    MinOf,
    MaxOf,
    // Conversions.
    Vector,
    Scalar,
    // Element-wise math (`ValueFn`).
    Abs,
    Ceil,
    Floor,
    Exp,
    Sqrt,
    Ln,
    Log2,
    Log10,
    Sgn,
    Acos,
    Acosh,
    Asin,
    Asinh,
    Atan,
    Atanh,
    Cos,
    Cosh,
    Sin,
    Sinh,
    Tan,
    Tanh,
    Deg,
    Rad,
    Round,
    Clamp,
    ClampMin,
    ClampMax,
    // Times.
    Timestamp,
    Minute,
    Hour,
    DayOfMonth,
    DayOfWeek,
    DayOfYear,
    DaysInMonth,
    Month,
    Year,
    // Labels.
    LabelReplace,
    LabelJoin,
    // Order.
    Sort,
    SortDesc,
    SortByLabel,
    SortByLabelDesc,
    Absent,
    // Histograms.
    HistogramQuantile,
    HistogramCount,
    HistogramSum,
    HistogramAvg,
    HistogramStddev,
    HistogramStdvar,
    HistogramFraction,
}

impl Func {
    pub const ALL: [Func; 87] = [
        Func::Rate,
        Func::Increase,
        Func::Delta,
        Func::Irate,
        Func::Idelta,
        Func::Deriv,
        Func::PredictLinear,
        Func::Resets,
        Func::Changes,
        Func::AvgOverTime,
        Func::MinOverTime,
        Func::MaxOverTime,
        Func::SumOverTime,
        Func::CountOverTime,
        Func::StddevOverTime,
        Func::StdvarOverTime,
        Func::LastOverTime,
        Func::FirstOverTime,
        Func::PresentOverTime,
        Func::MadOverTime,
        Func::QuantileOverTime,
        Func::DoubleExponentialSmoothing,
        Func::TsOfLastOverTime,
        Func::TsOfFirstOverTime,
        Func::TsOfMaxOverTime,
        Func::TsOfMinOverTime,
        Func::AbsentOverTime,
        Func::Time,
        Func::Pi,
        Func::Start,
        Func::End,
        Func::Range,
        Func::Step,
        Func::MinOf,
        Func::MaxOf,
        Func::Vector,
        Func::Scalar,
        Func::Abs,
        Func::Ceil,
        Func::Floor,
        Func::Exp,
        Func::Sqrt,
        Func::Ln,
        Func::Log2,
        Func::Log10,
        Func::Sgn,
        Func::Acos,
        Func::Acosh,
        Func::Asin,
        Func::Asinh,
        Func::Atan,
        Func::Atanh,
        Func::Cos,
        Func::Cosh,
        Func::Sin,
        Func::Sinh,
        Func::Tan,
        Func::Tanh,
        Func::Deg,
        Func::Rad,
        Func::Round,
        Func::Clamp,
        Func::ClampMin,
        Func::ClampMax,
        Func::Timestamp,
        Func::Minute,
        Func::Hour,
        Func::DayOfMonth,
        Func::DayOfWeek,
        Func::DayOfYear,
        Func::DaysInMonth,
        Func::Month,
        Func::Year,
        Func::LabelReplace,
        Func::LabelJoin,
        Func::Sort,
        Func::SortDesc,
        Func::SortByLabel,
        Func::SortByLabelDesc,
        Func::Absent,
        Func::HistogramQuantile,
        Func::HistogramCount,
        Func::HistogramSum,
        Func::HistogramAvg,
        Func::HistogramStddev,
        Func::HistogramStdvar,
        Func::HistogramFraction,
    ];

    /// The function a call names; `None` for one Quiver does not evaluate.
    pub fn of(name: &str) -> Option<Func> {
        use Func::*;
        Some(match name {
            "rate" => Rate,
            "increase" => Increase,
            "delta" => Delta,
            "irate" => Irate,
            "idelta" => Idelta,
            "deriv" => Deriv,
            "predict_linear" => PredictLinear,
            "resets" => Resets,
            "changes" => Changes,
            "avg_over_time" => AvgOverTime,
            "min_over_time" => MinOverTime,
            "max_over_time" => MaxOverTime,
            "sum_over_time" => SumOverTime,
            "count_over_time" => CountOverTime,
            "stddev_over_time" => StddevOverTime,
            "stdvar_over_time" => StdvarOverTime,
            "last_over_time" => LastOverTime,
            "first_over_time" => FirstOverTime,
            "present_over_time" => PresentOverTime,
            "mad_over_time" => MadOverTime,
            "quantile_over_time" => QuantileOverTime,
            "double_exponential_smoothing" | "holt_winters" => DoubleExponentialSmoothing,
            "ts_of_last_over_time" => TsOfLastOverTime,
            "ts_of_first_over_time" => TsOfFirstOverTime,
            "ts_of_max_over_time" => TsOfMaxOverTime,
            "ts_of_min_over_time" => TsOfMinOverTime,
            "absent_over_time" => AbsentOverTime,
            "time" => Time,
            "pi" => Pi,
            "start" => Start,
            "end" => End,
            "range" => Range,
            "step" => Step,
            "min_of" => MinOf,
            "max_of" => MaxOf,
            "vector" => Vector,
            "scalar" => Scalar,
            "abs" => Abs,
            "ceil" => Ceil,
            "floor" => Floor,
            "exp" => Exp,
            "sqrt" => Sqrt,
            "ln" => Ln,
            "log2" => Log2,
            "log10" => Log10,
            "sgn" => Sgn,
            "acos" => Acos,
            "acosh" => Acosh,
            "asin" => Asin,
            "asinh" => Asinh,
            "atan" => Atan,
            "atanh" => Atanh,
            "cos" => Cos,
            "cosh" => Cosh,
            "sin" => Sin,
            "sinh" => Sinh,
            "tan" => Tan,
            "tanh" => Tanh,
            "deg" => Deg,
            "rad" => Rad,
            "round" => Round,
            "clamp" => Clamp,
            "clamp_min" => ClampMin,
            "clamp_max" => ClampMax,
            "timestamp" => Timestamp,
            "minute" => Minute,
            "hour" => Hour,
            "day_of_month" => DayOfMonth,
            "day_of_week" => DayOfWeek,
            "day_of_year" => DayOfYear,
            "days_in_month" => DaysInMonth,
            "month" => Month,
            "year" => Year,
            "label_replace" => LabelReplace,
            "label_join" => LabelJoin,
            "sort" => Sort,
            "sort_desc" => SortDesc,
            "sort_by_label" => SortByLabel,
            "sort_by_label_desc" => SortByLabelDesc,
            "absent" => Absent,
            "histogram_quantile" => HistogramQuantile,
            "histogram_count" => HistogramCount,
            "histogram_sum" => HistogramSum,
            "histogram_avg" => HistogramAvg,
            "histogram_stddev" => HistogramStddev,
            "histogram_stdvar" => HistogramStdvar,
            "histogram_fraction" => HistogramFraction,
            _ => return None,
        })
    }

    /// Its name as PromQL writes it (the current one: `double_exponential_smoothing`).
    pub fn name(self) -> &'static str {
        use Func::*;
        match self {
            Rate => "rate",
            Increase => "increase",
            Delta => "delta",
            Irate => "irate",
            Idelta => "idelta",
            Deriv => "deriv",
            PredictLinear => "predict_linear",
            Resets => "resets",
            Changes => "changes",
            AvgOverTime => "avg_over_time",
            MinOverTime => "min_over_time",
            MaxOverTime => "max_over_time",
            SumOverTime => "sum_over_time",
            CountOverTime => "count_over_time",
            StddevOverTime => "stddev_over_time",
            StdvarOverTime => "stdvar_over_time",
            LastOverTime => "last_over_time",
            FirstOverTime => "first_over_time",
            PresentOverTime => "present_over_time",
            MadOverTime => "mad_over_time",
            QuantileOverTime => "quantile_over_time",
            DoubleExponentialSmoothing => "double_exponential_smoothing",
            TsOfLastOverTime => "ts_of_last_over_time",
            TsOfFirstOverTime => "ts_of_first_over_time",
            TsOfMaxOverTime => "ts_of_max_over_time",
            TsOfMinOverTime => "ts_of_min_over_time",
            AbsentOverTime => "absent_over_time",
            Time => "time",
            Pi => "pi",
            Start => "start",
            End => "end",
            Range => "range",
            Step => "step",
            MinOf => "min_of",
            MaxOf => "max_of",
            Vector => "vector",
            Scalar => "scalar",
            Abs => "abs",
            Ceil => "ceil",
            Floor => "floor",
            Exp => "exp",
            Sqrt => "sqrt",
            Ln => "ln",
            Log2 => "log2",
            Log10 => "log10",
            Sgn => "sgn",
            Acos => "acos",
            Acosh => "acosh",
            Asin => "asin",
            Asinh => "asinh",
            Atan => "atan",
            Atanh => "atanh",
            Cos => "cos",
            Cosh => "cosh",
            Sin => "sin",
            Sinh => "sinh",
            Tan => "tan",
            Tanh => "tanh",
            Deg => "deg",
            Rad => "rad",
            Round => "round",
            Clamp => "clamp",
            ClampMin => "clamp_min",
            ClampMax => "clamp_max",
            Timestamp => "timestamp",
            Minute => "minute",
            Hour => "hour",
            DayOfMonth => "day_of_month",
            DayOfWeek => "day_of_week",
            DayOfYear => "day_of_year",
            DaysInMonth => "days_in_month",
            Month => "month",
            Year => "year",
            LabelReplace => "label_replace",
            LabelJoin => "label_join",
            Sort => "sort",
            SortDesc => "sort_desc",
            SortByLabel => "sort_by_label",
            SortByLabelDesc => "sort_by_label_desc",
            Absent => "absent",
            HistogramQuantile => "histogram_quantile",
            HistogramCount => "histogram_count",
            HistogramSum => "histogram_sum",
            HistogramAvg => "histogram_avg",
            HistogramStddev => "histogram_stddev",
            HistogramStdvar => "histogram_stdvar",
            HistogramFraction => "histogram_fraction",
        }
    }

    /// The window kernel of a function over a range vector (`absent_over_time` has none:
    /// it only asks whether a window holds a sample).
    pub(crate) fn range_fn(self) -> Option<RangeFn> {
        use Func::*;
        Some(match self {
            Rate => RangeFn::Rate,
            Increase => RangeFn::Increase,
            Delta => RangeFn::Delta,
            Irate => RangeFn::Irate,
            Idelta => RangeFn::Idelta,
            Deriv => RangeFn::Deriv,
            PredictLinear => RangeFn::PredictLinear,
            Resets => RangeFn::Resets,
            Changes => RangeFn::Changes,
            AvgOverTime => RangeFn::AvgOverTime,
            MinOverTime => RangeFn::MinOverTime,
            MaxOverTime => RangeFn::MaxOverTime,
            SumOverTime => RangeFn::SumOverTime,
            CountOverTime => RangeFn::CountOverTime,
            StddevOverTime => RangeFn::StddevOverTime,
            StdvarOverTime => RangeFn::StdvarOverTime,
            LastOverTime => RangeFn::LastOverTime,
            FirstOverTime => RangeFn::FirstOverTime,
            PresentOverTime => RangeFn::PresentOverTime,
            MadOverTime => RangeFn::MadOverTime,
            QuantileOverTime => RangeFn::QuantileOverTime,
            DoubleExponentialSmoothing => RangeFn::DoubleExponentialSmoothing,
            TsOfLastOverTime => RangeFn::TsOfLastOverTime,
            TsOfFirstOverTime => RangeFn::TsOfFirstOverTime,
            TsOfMaxOverTime => RangeFn::TsOfMaxOverTime,
            TsOfMinOverTime => RangeFn::TsOfMinOverTime,
            _ => return None,
        })
    }

    /// The per-sample kernel of an element-wise function of one vector: the math
    /// functions, `round`, `clamp*` and the date parts.
    pub(crate) fn value_fn(self) -> Option<ValueFn> {
        ValueFn::function(self.name())
    }

    /// `sort`, `sort_desc`, `sort_by_label`, `sort_by_label_desc`: the result's order, not
    /// its samples.
    pub fn is_sort(self) -> bool {
        matches!(
            self,
            Func::Sort | Func::SortDesc | Func::SortByLabel | Func::SortByLabelDesc
        )
    }
}

impl fmt::Display for Func {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every function promql-parser 0.11 knows (its `FUNCTIONS` table is private, so the
    /// list is copied here and checked against the parser below).
    const PARSER_FUNCTIONS: &[&str] = &[
        "abs",
        "absent",
        "absent_over_time",
        "acos",
        "acosh",
        "asin",
        "asinh",
        "atan",
        "atanh",
        "avg_over_time",
        "ceil",
        "changes",
        "clamp",
        "clamp_max",
        "clamp_min",
        "cos",
        "cosh",
        "count_over_time",
        "day_of_month",
        "day_of_week",
        "day_of_year",
        "days_in_month",
        "deg",
        "delta",
        "deriv",
        "double_exponential_smoothing",
        "end",
        "exp",
        "first_over_time",
        "floor",
        "histogram_avg",
        "histogram_count",
        "histogram_fraction",
        "histogram_quantile",
        "histogram_quantiles",
        "histogram_stddev",
        "histogram_stdvar",
        "histogram_sum",
        "hour",
        "idelta",
        "increase",
        "info",
        "integral",
        "irate",
        "label_join",
        "label_replace",
        "last_over_time",
        "ln",
        "log10",
        "log2",
        "mad_over_time",
        "max_of",
        "max_over_time",
        "min_of",
        "min_over_time",
        "minute",
        "month",
        "pi",
        "predict_linear",
        "present_over_time",
        "quantile_over_time",
        "rad",
        "range",
        "rate",
        "resets",
        "round",
        "scalar",
        "sgn",
        "sin",
        "sinh",
        "sort",
        "sort_by_label",
        "sort_by_label_desc",
        "sort_desc",
        "sqrt",
        "start",
        "start_timestamp",
        "stddev_over_time",
        "stdvar_over_time",
        "step",
        "sum_over_time",
        "tan",
        "tanh",
        "time",
        "timestamp",
        "ts_of_first_over_time",
        "ts_of_last_over_time",
        "ts_of_max_over_time",
        "ts_of_min_over_time",
        "vector",
        "year",
    ];

    /// Functions the parser knows that Quiver does not evaluate: "not supported yet".
    const UNSUPPORTED: &[&str] = &["histogram_quantiles", "info", "integral", "start_timestamp"];

    /// Whether promql-parser knows a function of this name: a call of it with no
    /// arguments parses, or fails for its arguments, not for its name.
    fn parser_knows(name: &str) -> bool {
        match promql_parser::parser::parse(&format!("{name}()")) {
            Ok(_) => true,
            Err(e) => !e.contains("unknown function with name"),
        }
    }

    #[test]
    fn every_function_round_trips_through_its_name() {
        for (i, f) in Func::ALL.into_iter().enumerate() {
            assert_eq!(Func::of(f.name()), Some(f), "{f:?}");
            assert_eq!(f.to_string(), f.name());
            assert!(!Func::ALL[..i].contains(&f), "{f:?} twice in ALL");
        }
        assert_eq!(
            Func::of("holt_winters"),
            Some(Func::DoubleExponentialSmoothing)
        );
        assert_eq!(Func::of("nope"), None);
    }

    /// Every function the parser knows has a variant, or is listed as unsupported; every
    /// variant is one the parser knows.
    #[test]
    fn every_parser_function_is_a_variant_or_unsupported() {
        assert!(!parser_knows("non_existent_function_far_bar"));
        for name in PARSER_FUNCTIONS {
            assert!(parser_knows(name), "promql-parser does not know {name}");
            match Func::of(name) {
                Some(f) => {
                    assert_eq!(f.name(), *name);
                    assert!(Func::ALL.contains(&f), "{f:?} missing from ALL");
                    assert!(!UNSUPPORTED.contains(name), "{name} is supported");
                }
                None => assert!(UNSUPPORTED.contains(name), "{name}: no variant"),
            }
        }
        for name in UNSUPPORTED {
            assert!(PARSER_FUNCTIONS.contains(name), "{name}");
        }
        assert_eq!(Func::ALL.len(), PARSER_FUNCTIONS.len() - UNSUPPORTED.len());
        for f in Func::ALL {
            assert!(parser_knows(f.name()), "promql-parser does not know {f}");
        }
    }

    /// The range functions are `RangeFn`'s, under the same names (the plan codec's wire
    /// names); the element-wise ones are `ValueFn`'s.
    #[test]
    fn kernels_agree_on_names() {
        for f in Func::ALL {
            match f.range_fn() {
                Some(r) => {
                    assert_eq!(r.name(), f.name());
                    assert_eq!(RangeFn::parse(f.name()), Some(r));
                }
                None => assert_eq!(RangeFn::parse(f.name()), None, "{f}"),
            }
            if let Some(v) = f.value_fn() {
                assert_eq!(v.name(), f.name());
            }
        }
        assert_eq!(
            RangeFn::parse("holt_winters"),
            Func::of("holt_winters").and_then(Func::range_fn)
        );
        let element_wise: Vec<Func> = Func::ALL
            .into_iter()
            .filter(|f| f.value_fn().is_some())
            .collect();
        assert_eq!(element_wise.len(), 23 + 4 + 8, "{element_wise:?}");
        assert!(element_wise.iter().all(|f| f.range_fn().is_none()));
    }
}
