//! Function calls: range functions over windows, element-wise math, label manipulation,
//! sorting, `absent`, `histogram_quantile`, date functions.

use std::collections::BTreeMap;

use promql_parser::parser::{Call, Expr};

use super::{histogram_fns, merge_same_labels, range_hist};
use crate::model::{Labels, METRIC_NAME};
use crate::promql::engine::{Ctx, Engine};
use crate::promql::error::PromqlError;
use crate::promql::func::Func;
use crate::promql::kernels::args::{string_arg, unwrap_paren};
use crate::promql::kernels::bucket_quantile::{bucket_quantile, parse_le};
use crate::promql::kernels::grouping::{drop_name, sort_vector};
use crate::promql::kernels::labels::{absent_result, set_label};
use crate::promql::kernels::range_fns::{self as rf, RangeFn, Window, window_value};
use crate::promql::kernels::select::window;
use crate::promql::kernels::value_fn::{self, ValueFn};
use crate::promql::value::{Series, Value};

fn scalar_arg(v: Value, f: &str) -> Result<Vec<f64>, PromqlError> {
    match v {
        Value::Scalar(s) => Ok(s),
        other => Err(PromqlError::exec(format!(
            "{f}: expected scalar argument, got {}",
            other.type_name()
        ))),
    }
}

fn vector_arg(v: Value, f: &str) -> Result<Vec<Series>, PromqlError> {
    match v {
        Value::Vector(s) => Ok(s),
        other => Err(PromqlError::exec(format!(
            "{f}: expected instant vector argument, got {}",
            other.type_name()
        ))),
    }
}

fn map_values(series: Vec<Series>, keep_name: bool, f: impl Fn(f64) -> f64) -> Vec<Series> {
    series
        .into_iter()
        .map(|s| Series {
            hists: Vec::new(),
            labels: if keep_name {
                s.labels
            } else {
                drop_name(&s.labels)
            },
            vals: s.vals.into_iter().map(|v| v.map(&f)).collect(),
        })
        // Histograms are dropped (float functions): a series left empty goes.
        .filter(|s| !s.is_empty())
        .collect()
}

impl Engine {
    pub(super) async fn call(&self, call: &Call, ctx: Ctx) -> Result<Value, PromqlError> {
        let name = call.func.name;
        let not_supported = || PromqlError::exec(format!("function {name}() is not supported yet"));
        let Some(f) = Func::of(name) else {
            return Err(not_supported());
        };
        let args = &call.args.args;
        let n = ctx.steps.len();
        match f {
            Func::QuantileOverTime => {
                let q = scalar_arg(self.eval(&args[0], ctx).await?, name)?;
                self.check_quantile(&q);
                self.range_call(RangeFn::QuantileOverTime, &args[1], Some((q, vec![])), ctx)
                    .await
            }
            Func::PredictLinear => {
                let d = scalar_arg(self.eval(&args[1], ctx).await?, name)?;
                self.range_call(RangeFn::PredictLinear, &args[0], Some((d, vec![])), ctx)
                    .await
            }
            Func::DoubleExponentialSmoothing => {
                let sf = scalar_arg(self.eval(&args[1], ctx).await?, name)?;
                let tf = scalar_arg(self.eval(&args[2], ctx).await?, name)?;
                for (s, t) in sf.iter().zip(&tf) {
                    if *s <= 0.0 || *s >= 1.0 {
                        return Err(PromqlError::exec(format!(
                            "invalid smoothing factor. Expected: 0 < sf < 1, got: {s}"
                        )));
                    }
                    if *t <= 0.0 || *t >= 1.0 {
                        return Err(PromqlError::exec(format!(
                            "invalid trend factor. Expected: 0 < tf < 1, got: {t}"
                        )));
                    }
                }
                self.range_call(
                    RangeFn::DoubleExponentialSmoothing,
                    &args[0],
                    Some((sf, tf)),
                    ctx,
                )
                .await
            }
            Func::AbsentOverTime => {
                let input = self.range_input(&args[0], &ctx).await?;
                let mut present = vec![false; n];
                for s in &input.series {
                    for (i, &end) in input.ends.iter().enumerate() {
                        let (a, b) = window(&s.ts, end, input.range_ms);
                        let (ha, hb) = window(&s.hts, end, input.range_ms);
                        if a < b || ha < hb {
                            present[i] = true;
                        }
                    }
                }
                Ok(Value::Vector(absent_result(
                    unwrap_paren(&args[0]),
                    &present,
                )))
            }
            Func::Time => Ok(Value::Scalar(
                ctx.steps.iter().map(|t| t as f64 / 1000.0).collect(),
            )),
            Func::Pi => Ok(Value::Scalar(vec![std::f64::consts::PI; n])),
            Func::Start => Ok(Value::Scalar(vec![ctx.query_start as f64 / 1000.0; n])),
            Func::End => Ok(Value::Scalar(vec![ctx.query_end as f64 / 1000.0; n])),
            Func::Range => Ok(Value::Scalar(vec![
                (ctx.query_end - ctx.query_start) as f64
                    / 1000.0;
                n
            ])),
            Func::Step => Ok(Value::Scalar(vec![ctx.query_step as f64 / 1000.0; n])),
            Func::MinOf | Func::MaxOf => {
                let a = scalar_arg(self.eval(&args[0], ctx).await?, name)?;
                let b = scalar_arg(self.eval(&args[1], ctx).await?, name)?;
                Ok(Value::Scalar(value_fn::extreme_of(
                    f == Func::MaxOf,
                    &a,
                    &b,
                )))
            }
            Func::Vector => {
                let v = scalar_arg(self.eval(&args[0], ctx).await?, name)?;
                Ok(Value::Vector(vec![Series {
                    hists: Vec::new(),
                    labels: Labels::default(),
                    vals: v.into_iter().map(Some).collect(),
                }]))
            }
            Func::Scalar => {
                let vs = vector_arg(self.eval(&args[0], ctx).await?, name)?;
                let mut out = vec![f64::NAN; n];
                for (i, o) in out.iter_mut().enumerate() {
                    let mut present = vs.iter().filter_map(|s| s.vals[i]);
                    if let (Some(v), None) = (present.next(), present.next()) {
                        *o = v;
                    }
                }
                Ok(Value::Scalar(out))
            }
            Func::Abs
            | Func::Ceil
            | Func::Floor
            | Func::Exp
            | Func::Sqrt
            | Func::Ln
            | Func::Log2
            | Func::Log10
            | Func::Sgn
            | Func::Acos
            | Func::Acosh
            | Func::Asin
            | Func::Asinh
            | Func::Atan
            | Func::Atanh
            | Func::Cos
            | Func::Cosh
            | Func::Sin
            | Func::Sinh
            | Func::Tan
            | Func::Tanh
            | Func::Deg
            | Func::Rad => {
                let vs = vector_arg(self.eval(&args[0], ctx).await?, name)?;
                let Some(ValueFn::Unary(_, g)) = f.value_fn() else {
                    return Err(PromqlError::exec(format!("unknown function {name}")));
                };
                Ok(Value::Vector(merge_same_labels(map_values(vs, false, g))?))
            }
            Func::Round => {
                let vs = vector_arg(self.eval(&args[0], ctx).await?, name)?;
                let to = match args.get(1) {
                    Some(a) => scalar_arg(self.eval(a, ctx).await?, name)?,
                    None => vec![1.0; n],
                };
                let out = vs
                    .into_iter()
                    .map(|s| Series {
                        hists: Vec::new(),
                        labels: drop_name(&s.labels),
                        vals: s
                            .vals
                            .iter()
                            .zip(&to)
                            .map(|(v, t)| v.map(|x| value_fn::round(x, *t)))
                            .collect(),
                    })
                    .filter(|s| !s.is_empty())
                    .collect();
                Ok(Value::Vector(merge_same_labels(out)?))
            }
            Func::Clamp | Func::ClampMin | Func::ClampMax => {
                let vs = vector_arg(self.eval(&args[0], ctx).await?, name)?;
                let a = scalar_arg(self.eval(&args[1], ctx).await?, name)?;
                let b = match args.get(2) {
                    Some(e) => scalar_arg(self.eval(e, ctx).await?, name)?,
                    None => vec![f64::NAN; n],
                };
                let vf = f
                    .value_fn()
                    .ok_or_else(|| PromqlError::exec(format!("unknown function {name}")))?;
                let mut out = Vec::new();
                for s in vs {
                    let mut o = Series::new(drop_name(&s.labels), n);
                    for i in 0..n {
                        let Some(v) = s.vals[i] else { continue };
                        o.vals[i] = value_fn::clamp(&vf, v, a[i], b[i]);
                    }
                    if !o.is_empty() {
                        out.push(o);
                    }
                }
                Ok(Value::Vector(merge_same_labels(out)?))
            }
            Func::Timestamp => {
                let inner = unwrap_paren(&args[0]);
                if let Expr::VectorSelector(vs) = inner {
                    // The time of the sample the selector picks, not the evaluation time.
                    let out = self
                        .instant_selection(vs, &ctx, true)
                        .await?
                        .into_iter()
                        .map(|s| Series {
                            hists: Vec::new(),
                            labels: drop_name(&s.labels),
                            vals: s.vals,
                        })
                        .collect();
                    return Ok(Value::Vector(merge_same_labels(out)?));
                }
                let vs = vector_arg(self.eval(&args[0], ctx).await?, name)?;
                let out = vs
                    .into_iter()
                    .map(|s| Series {
                        labels: drop_name(&s.labels),
                        vals: (0..s.vals.len())
                            .map(|i| s.has(i).then(|| ctx.steps.at(i) as f64 / 1000.0))
                            .collect(),
                        hists: Vec::new(),
                    })
                    .collect();
                Ok(Value::Vector(merge_same_labels(out)?))
            }
            Func::Minute
            | Func::Hour
            | Func::DayOfMonth
            | Func::DayOfWeek
            | Func::DayOfYear
            | Func::DaysInMonth
            | Func::Month
            | Func::Year => {
                let vs = match args.first() {
                    Some(a) => vector_arg(self.eval(a, ctx).await?, name)?,
                    None => vec![Series {
                        hists: Vec::new(),
                        labels: Labels::default(),
                        vals: ctx.steps.iter().map(|t| Some(t as f64 / 1000.0)).collect(),
                    }],
                };
                Ok(Value::Vector(merge_same_labels(map_values(
                    vs,
                    false,
                    |v| value_fn::date_part(name, v),
                ))?))
            }
            Func::LabelReplace => {
                let vs = vector_arg(self.eval(&args[0], ctx).await?, name)?;
                let dst = string_arg(&args[1])?;
                let repl = string_arg(&args[2])?;
                let src = string_arg(&args[3])?;
                let re_str = string_arg(&args[4])?;
                let re = regex::Regex::new(&format!("^(?s:{re_str})$")).map_err(|e| {
                    PromqlError::exec(format!(
                        "invalid regular expression in label_replace(): {re_str}: {e}"
                    ))
                })?;
                if dst.is_empty() {
                    return Err(PromqlError::exec(format!(
                        "invalid destination label name in label_replace(): {dst}"
                    )));
                }
                let mut out = Vec::with_capacity(vs.len());
                for s in vs {
                    let src_val = s.labels.get(&src).unwrap_or("");
                    let labels = match re.captures(src_val) {
                        Some(caps) => {
                            let mut v = String::new();
                            caps.expand(&repl, &mut v);
                            set_label(&s.labels, &dst, &v)
                        }
                        None => s.labels.clone(),
                    };
                    out.push(Series {
                        hists: s.hists,
                        labels,
                        vals: s.vals,
                    });
                }
                Ok(Value::Vector(merge_same_labels(out)?))
            }
            Func::LabelJoin => {
                let vs = vector_arg(self.eval(&args[0], ctx).await?, name)?;
                let dst = string_arg(&args[1])?;
                let sep = string_arg(&args[2])?;
                let srcs: Vec<String> = args[3..]
                    .iter()
                    .map(|a| string_arg(a))
                    .collect::<Result<_, _>>()?;
                let mut out = Vec::with_capacity(vs.len());
                for s in vs {
                    let joined: Vec<&str> =
                        srcs.iter().map(|l| s.labels.get(l).unwrap_or("")).collect();
                    let v = joined.join(&sep);
                    out.push(Series {
                        hists: s.hists,
                        labels: set_label(&s.labels, &dst, &v),
                        vals: s.vals,
                    });
                }
                Ok(Value::Vector(merge_same_labels(out)?))
            }
            Func::Sort | Func::SortDesc | Func::SortByLabel | Func::SortByLabelDesc => {
                let mut vs = vector_arg(self.eval(&args[0], ctx).await?, name)?;
                if n > 1 || ctx.is_range {
                    self.warn(crate::promql::kernels::annotations::SORT_IN_RANGE_QUERY.into());
                }
                let names: Vec<String> = args[1..]
                    .iter()
                    .map(|a| string_arg(a))
                    .collect::<Result<_, _>>()?;
                if matches!(f, Func::Sort | Func::SortDesc) {
                    // Sorting by value keeps the floats only (Prometheus's filterFloats).
                    vs = vs
                        .into_iter()
                        .map(Series::without_hists)
                        .filter(|s| !s.is_empty())
                        .collect();
                }
                sort_vector(f, &names, &mut vs);
                Ok(Value::Vector(vs))
            }
            Func::Absent => {
                let vs = vector_arg(self.eval(&args[0], ctx).await?, name)?;
                let present: Vec<bool> = (0..n).map(|i| vs.iter().any(|s| s.has(i))).collect();
                Ok(Value::Vector(absent_result(
                    unwrap_paren(&args[0]),
                    &present,
                )))
            }
            Func::HistogramQuantile => {
                let q = scalar_arg(self.eval(&args[0], ctx).await?, name)?;
                self.check_quantile(&q);
                let vs = vector_arg(self.eval(&args[1], ctx).await?, name)?;
                if vs.iter().any(Series::has_hists) {
                    let classic = self.histogram_quantile(&q, vs.clone(), n)?;
                    return Ok(Value::Vector(histogram_fns::quantile(
                        self, &q, &vs, classic,
                    )?));
                }
                Ok(Value::Vector(self.histogram_quantile(&q, vs, n)?))
            }
            Func::HistogramCount
            | Func::HistogramSum
            | Func::HistogramAvg
            | Func::HistogramStddev
            | Func::HistogramStdvar => {
                let vs = vector_arg(self.eval(&args[0], ctx).await?, name)?;
                let stat = histogram_fns::stat(f).expect("listed above");
                Ok(Value::Vector(merge_same_labels(histogram_fns::map(
                    vs,
                    |_, _, h| stat(h),
                ))?))
            }
            Func::HistogramFraction => {
                let lower = scalar_arg(self.eval(&args[0], ctx).await?, name)?;
                let upper = scalar_arg(self.eval(&args[1], ctx).await?, name)?;
                let vs = vector_arg(self.eval(&args[2], ctx).await?, name)?;
                Ok(Value::Vector(merge_same_labels(histogram_fns::fraction(
                    self, &lower, &upper, vs,
                ))?))
            }
            // The range functions of one argument.
            _ => match f.range_fn() {
                Some(r) => self.range_call(r, &args[0], None, ctx).await,
                None => Err(not_supported()),
            },
        }
    }

    /// A function over range windows; `extra` carries scalar parameters per step.
    async fn range_call(
        &self,
        f: RangeFn,
        arg: &Expr,
        extra: Option<(Vec<f64>, Vec<f64>)>,
        ctx: Ctx,
    ) -> Result<Value, PromqlError> {
        let input = self.range_input(arg, &ctx).await?;
        // Rate of a counter-looking name, only where it gave floats (histograms say
        // themselves whether they are counters).
        let counter_info = |s: &super::selector::Raw, o: &Series| {
            if matches!(f, RangeFn::Rate | RangeFn::Increase)
                && o.vals.iter().any(Option::is_some)
                && let Some(text) = crate::promql::kernels::annotations::possible_non_counter(
                    s.labels.metric_name().unwrap_or(""),
                )
            {
                self.info(text);
            }
        };
        let keep_name = matches!(f, RangeFn::LastOverTime | RangeFn::FirstOverTime);
        let (p1, p2) = extra.unwrap_or_default();
        self.check_points(input.series.len(), ctx.steps.len())?;
        let mut out = Vec::with_capacity(input.series.len());
        for s in &input.series {
            self.check()?;
            let mut o = Series::new(
                if keep_name {
                    s.labels.clone()
                } else {
                    drop_name(&s.labels)
                },
                ctx.steps.len(),
            );
            if !s.hists.is_empty() {
                self.histogram_windows(f, s, &input, &p1, &p2, &ctx, &mut o)?;
                counter_info(s, &o);
                if !o.is_empty() {
                    out.push(o);
                }
                continue;
            }
            rf::for_each_value(
                f,
                &s.ts,
                &s.vals,
                &input.ends,
                input.range_ms,
                (&p1, &p2),
                |i| ctx.steps.at(i),
                || self.check().is_ok(),
                |i, v| o.vals[i] = Some(v),
            );
            counter_info(s, &o);
            if !o.is_empty() {
                out.push(o);
            }
        }
        // The windows of a cancelled query stop early: never answer with what they left.
        self.check()?;
        Ok(Value::Vector(merge_same_labels(out)?))
    }
}

impl Engine {
    /// A range function over one series that holds native histograms: each window's
    /// floats and histograms go to `range_hist`.
    #[allow(clippy::too_many_arguments)]
    fn histogram_windows(
        &self,
        f: RangeFn,
        s: &super::selector::Raw,
        input: &super::selector::RangeInput,
        p1: &[f64],
        p2: &[f64],
        ctx: &Ctx,
        o: &mut Series,
    ) -> Result<(), PromqlError> {
        let name = s.labels.metric_name().unwrap_or("");
        let mut fw = rf::Windows::new(&s.ts, input.range_ms);
        let mut hw = rf::Windows::new(&s.hts, input.range_ms);
        for (i, &end) in input.ends.iter().enumerate() {
            if i % 4096 == 0 {
                self.check()?;
            }
            let (a, b) = fw.at(end);
            let (ha, hb) = hw.at(end);
            let (p1, p2) = (
                p1.get(i).copied().unwrap_or(f64::NAN),
                p2.get(i).copied().unwrap_or(f64::NAN),
            );
            let start = end.saturating_sub(input.range_ms);
            let value = if ha >= hb {
                if a >= b {
                    continue;
                }
                let w = Window {
                    ts: &s.ts[a..b],
                    vals: &s.vals[a..b],
                    start,
                    end,
                    range_ms: input.range_ms,
                    no_resets: false,
                };
                window_value(f, &w, p1, p2, ctx.steps.at(i)).map(range_hist::Point::F)
            } else {
                let w = range_hist::Mixed {
                    fts: &s.ts[a..b],
                    fv: &s.vals[a..b],
                    hts: &s.hts[ha..hb],
                    hv: &s.hists[ha..hb],
                    start,
                    end,
                    range_ms: input.range_ms,
                };
                range_hist::window_value(self, f, name, &w, p1, p2, ctx.steps.at(i))
            };
            match value {
                Some(range_hist::Point::F(v)) => o.vals[i] = Some(v),
                Some(range_hist::Point::H(h)) => {
                    // Every step makes a histogram of its own: count them like loaded
                    // samples, so steps × series × buckets stays under the limit.
                    self.charge(h.sample_weight())?;
                    o.set_hist(i, h)
                }
                None => {}
            }
        }
        Ok(())
    }
}

impl Engine {
    #[allow(clippy::needless_range_loop)] // Steps index several parallel arrays.
    fn histogram_quantile(
        &self,
        q: &[f64],
        vs: Vec<Series>,
        n: usize,
    ) -> Result<Vec<Series>, PromqlError> {
        // Group bucket series by their labels without `le` and `__name__`.
        let mut groups: BTreeMap<Labels, Vec<(f64, &Series)>> = BTreeMap::new();
        for s in &vs {
            let Some(le) = s.labels.get("le") else {
                continue;
            };
            let Some(bound) = parse_le(le) else { continue };
            let key = Labels::from_sorted_strs(
                s.labels
                    .iter()
                    .filter(|(k, _)| *k != "le" && *k != METRIC_NAME),
            );
            groups.entry(key).or_default().push((bound, s));
        }
        let mut out = Vec::new();
        for (labels, buckets) in groups {
            let mut o = Series::new(labels, n);
            for i in 0..n {
                let mut bs: Vec<(f64, f64)> = buckets
                    .iter()
                    .filter_map(|(b, s)| s.vals[i].map(|v| (*b, v)))
                    .collect();
                if bs.is_empty() {
                    continue;
                }
                let (v, forced) = bucket_quantile(q[i], &mut bs);
                if forced {
                    let name = buckets
                        .first()
                        .and_then(|(_, s)| s.labels.metric_name())
                        .unwrap_or("");
                    let name = name.strip_suffix("_bucket").unwrap_or(name);
                    self.info(crate::promql::kernels::annotations::forced_monotonicity(
                        name,
                    ));
                }
                o.vals[i] = Some(v);
            }
            if !o.is_empty() {
                out.push(o);
            }
        }
        Ok(out)
    }
}
