//! Aggregations (`sum by (…) (…)` and friends), all steps at once.

use std::collections::HashMap;

use promql_parser::parser::AggregateExpr;

use crate::model::Labels;
use crate::promql::engine::{Ctx, Engine};
use crate::promql::error::PromqlError;
use crate::promql::kernels::grouping::{group_labels, keep_count, rank_by_value, sort_by_value};
use crate::promql::kernels::range_fns as rf;
use crate::promql::op::AggOp;
use crate::promql::value::{Series, Value};

impl Engine {
    pub(super) async fn aggregate(
        &self,
        a: &AggregateExpr,
        ctx: Ctx,
    ) -> Result<Value, PromqlError> {
        let op = AggOp::of(a.op)
            .ok_or_else(|| PromqlError::exec(format!("unknown aggregation operator {}", a.op)))?;
        let n = ctx.steps.len();
        let param = match &a.param {
            Some(p) => Some(self.eval(p, ctx).await?),
            None => None,
        };
        let input = match self.eval(&a.expr, ctx).await? {
            Value::Vector(v) => v,
            other => {
                return Err(PromqlError::exec(format!(
                    "{op}: expected instant vector, got {}",
                    other.type_name()
                )));
            }
        };
        let scalar_param = |what: &str| -> Result<Vec<f64>, PromqlError> {
            match &param {
                Some(Value::Scalar(v)) => Ok(v.clone()),
                _ => Err(PromqlError::exec(format!("{op}: expected scalar {what}"))),
            }
        };
        // Group membership is static: labels do not change across steps.
        let mut group_of: Vec<usize> = Vec::with_capacity(input.len());
        let mut groups: Vec<Labels> = Vec::new();
        let mut index = crate::model::hashing::map::<Labels, usize>(0);
        for s in &input {
            let g = group_labels(&s.labels, &a.modifier);
            let id = *index.entry(g.clone()).or_insert_with(|| {
                groups.push(g);
                groups.len() - 1
            });
            group_of.push(id);
        }

        match op {
            AggOp::TopK | AggOp::BottomK => {
                let k = scalar_param("k")?;
                let mut selected: Vec<Vec<bool>> = vec![vec![false; n]; input.len()];
                // Each group's members at a step, the vectors kept from step to step.
                let mut per_group: Vec<Vec<(f64, usize)>> = vec![Vec::new(); groups.len()];
                for i in 0..n {
                    let kk = k[i];
                    if kk.is_nan() {
                        return Err(PromqlError::exec("Parameter value is NaN"));
                    }
                    if keep_count(false, kk, 1) == 0 {
                        continue;
                    }
                    for (si, s) in input.iter().enumerate() {
                        if let Some(v) = s.vals[i] {
                            per_group[group_of[si]].push((v, si));
                        } else if s.hist(i).is_some() {
                            self.info(format!("ignored histogram in {op} aggregation"));
                        }
                    }
                    for members in per_group.iter_mut().filter(|m| !m.is_empty()) {
                        let top = op == AggOp::TopK;
                        rank_by_value(members, |m| m.0, top);
                        let take = keep_count(false, kk, members.len());
                        for &(_, si) in members.iter().take(take) {
                            selected[si][i] = true;
                        }
                        members.clear();
                    }
                }
                let mut out = Vec::new();
                for (si, s) in input.into_iter().enumerate() {
                    let vals: Vec<Option<f64>> = s
                        .vals
                        .iter()
                        .enumerate()
                        .map(|(i, v)| if selected[si][i] { *v } else { None })
                        .collect();
                    if vals.iter().any(Option::is_some) {
                        out.push(Series {
                            hists: Vec::new(),
                            labels: s.labels,
                            vals,
                        });
                    }
                }
                if n == 1 {
                    sort_by_value(&mut out, op == AggOp::TopK);
                }
                Ok(Value::Vector(out))
            }
            AggOp::LimitK | AggOp::LimitRatio => {
                let k = scalar_param("parameter")?;
                if k.iter().any(|x| x.is_nan()) {
                    return Err(PromqlError::exec(if op == AggOp::LimitK {
                        "Parameter value is NaN"
                    } else {
                        "Ratio value is NaN"
                    }));
                }
                if op == AggOp::LimitRatio {
                    return Err(PromqlError::exec("limit_ratio is not supported yet"));
                }
                // The first k series of each group in label order, per step.
                let mut order: Vec<usize> = (0..input.len()).collect();
                order.sort_by(|a, b| input[*a].labels.cmp(&input[*b].labels));
                let mut keep = vec![vec![false; n]; input.len()];
                let mut per_group: Vec<Vec<usize>> = vec![Vec::new(); groups.len()];
                for i in 0..n {
                    for &si in order.iter().filter(|&&si| input[si].has(i)) {
                        per_group[group_of[si]].push(si);
                    }
                    for members in per_group.iter_mut().filter(|m| !m.is_empty()) {
                        let take = keep_count(true, k[i], members.len());
                        for &si in members.iter().take(take) {
                            keep[si][i] = true;
                        }
                        members.clear();
                    }
                }
                let out = input
                    .into_iter()
                    .enumerate()
                    .map(|(si, s)| Series {
                        hists: s
                            .hists
                            .iter()
                            .enumerate()
                            .map(|(i, h)| if keep[si][i] { h.clone() } else { None })
                            .collect(),
                        labels: s.labels,
                        vals: s
                            .vals
                            .iter()
                            .enumerate()
                            .map(|(i, v)| if keep[si][i] { *v } else { None })
                            .collect(),
                    })
                    .filter(|s| !s.is_empty())
                    .collect();
                Ok(Value::Vector(out))
            }
            AggOp::CountValues => {
                let label = match &param {
                    Some(Value::String(s)) => s.clone(),
                    _ => return Err(PromqlError::exec("count_values: expected string parameter")),
                };
                let mut out: HashMap<Labels, Series> = HashMap::new();
                for (si, s) in input.iter().enumerate() {
                    self.check()?;
                    for i in 0..n {
                        // A histogram counts under Prometheus's text of it.
                        let text = match (s.vals[i], s.hist(i)) {
                            (Some(v), _) => crate::model::go_float::format(
                                v,
                                crate::model::go_float::Style::Fixed,
                            ),
                            (None, Some(h)) => h.to_string(),
                            (None, None) => continue,
                        };
                        {
                            let l = crate::promql::kernels::labels::set_label(
                                &groups[group_of[si]],
                                &label,
                                &text,
                            );
                            if !out.contains_key(&l) {
                                // Each distinct value is a new series of `n` steps: bound
                                // them before allocating, not after.
                                self.check_points(out.len() + 1, n)?;
                            }
                            let e = out.entry(l.clone()).or_insert_with(|| Series::new(l, n));
                            e.vals[i] = Some(e.vals[i].unwrap_or(0.0) + 1.0);
                        }
                    }
                }
                Ok(Value::Vector(out.into_values().collect()))
            }
            _ => {
                let q = if op == AggOp::Quantile {
                    Some(scalar_param("quantile")?)
                } else {
                    None
                };
                if let Some(q) = &q {
                    self.check_quantile(q);
                }
                // Collect per group and step.
                let mut vals: Vec<Vec<Vec<f64>>> = vec![vec![Vec::new(); n]; groups.len()];
                // Histograms (with their series' metric name), only when there are any.
                let any_hists = input.iter().any(Series::has_hists);
                let mut hvals: Vec<Vec<Vec<(&crate::promql::value::Hist, &str)>>> = if any_hists {
                    vec![vec![Vec::new(); n]; groups.len()]
                } else {
                    Vec::new()
                };
                for (si, s) in input.iter().enumerate() {
                    for (i, v) in s.vals.iter().enumerate() {
                        if let Some(v) = v {
                            vals[group_of[si]][i].push(*v);
                        } else if let Some(h) = s.hist(i) {
                            let name = s.labels.metric_name().unwrap_or("");
                            hvals[group_of[si]][i].push((h, name));
                        }
                    }
                }
                let mut out = Vec::with_capacity(groups.len());
                for (g, per_step) in vals.into_iter().enumerate() {
                    let mut o = Series::new(groups[g].clone(), n);
                    for (i, mut xs) in per_step.into_iter().enumerate() {
                        let hs: &[(&crate::promql::value::Hist, &str)] =
                            hvals.get(g).map_or(&[], |h| h[i].as_slice());
                        if !hs.is_empty() {
                            match op {
                                AggOp::Sum | AggOp::Avg if xs.is_empty() => {
                                    if let Some(h) =
                                        super::histogram_agg::sum(self, hs, op == AggOp::Avg)
                                    {
                                        self.charge(h.sample_weight())?;
                                        o.set_hist(i, h);
                                    }
                                    continue;
                                }
                                AggOp::Sum | AggOp::Avg => {
                                    self.warn(
                                        "encountered a mix of histograms and floats for aggregation"
                                            .into(),
                                    );
                                    continue;
                                }
                                AggOp::Count => {
                                    o.vals[i] = Some((xs.len() + hs.len()) as f64);
                                    continue;
                                }
                                AggOp::Group => {
                                    o.vals[i] = Some(1.0);
                                    continue;
                                }
                                // min, max, stddev, stdvar, quantile: floats only.
                                _ => self.info(format!("ignored histogram in {op} aggregation")),
                            }
                        }
                        if xs.is_empty() {
                            continue;
                        }
                        o.vals[i] = Some(match op {
                            AggOp::Sum => rf::sum(&xs),
                            AggOp::Avg => rf::avg(&xs),
                            AggOp::Count => xs.len() as f64,
                            AggOp::Group => 1.0,
                            AggOp::Min => rf::min(&xs),
                            AggOp::Max => rf::max(&xs),
                            AggOp::Stddev => rf::variance(&xs).sqrt(),
                            AggOp::Stdvar => rf::variance(&xs),
                            AggOp::Quantile => {
                                rf::quantile(q.as_ref().expect("quantile param")[i], &mut xs)
                            }
                            other => {
                                return Err(PromqlError::exec(format!(
                                    "aggregation {other} is not supported yet"
                                )));
                            }
                        });
                    }
                    if !o.is_empty() {
                        out.push(o);
                    }
                }
                Ok(Value::Vector(out))
            }
        }
    }
}
