//! `histogram_quantile(φ, buckets)` over classic (`le`-labelled) bucket series.
//!
//! Which series form one histogram and each one's bound are labels, fixed when the query
//! is planned: every bucket series is keyed with its histogram ([`Keyed`]) and a [`Fold`]
//! gathers each histogram's buckets per step and computes Prometheus's `BucketQuantile` —
//! the evaluator's own function.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::error::Result as DfResult;
use promql_parser::parser::Call;

use super::codec::{PlanCodec, decode_wire};
use super::fold::{Cell, Fold, Folder};
use super::keyed::Keyed;
use super::regroup::DROP;
use super::rows;
use super::scalar::scalar;
use super::{Lowered, PlanCtx};
use crate::model::{Labels, METRIC_NAME};
use crate::promql::error::PromqlError;
use crate::promql::kernels::annotations::Annotator;
use crate::promql::kernels::bucket_quantile::{bucket_quantile, parse_le};
use prost::Message;

pub(super) fn lower(p: &PlanCtx, call: &Call) -> Result<Option<Lowered>, PromqlError> {
    let [phi, buckets] = call.args.args.as_slice() else {
        return Ok(None);
    };
    let Some(phi) = scalar(p, phi) else {
        return Ok(None);
    };
    p.hold(phi.len())?;
    let Some(input) = p.lower(buckets)? else {
        return Ok(None);
    };
    p.engine.check_quantile(&phi);
    // Histograms by their labels without `le` and `__name__`, in label order.
    let mut by_labels: BTreeMap<Labels, Vec<usize>> = BTreeMap::new();
    let mut les = vec![f64::NAN; input.series.len()];
    for (i, l) in input.series.iter().enumerate() {
        let Some(le) = l.get("le").and_then(parse_le) else {
            continue;
        };
        les[i] = le;
        let key =
            Labels::from_sorted_strs(l.iter().filter(|(k, _)| *k != "le" && *k != METRIC_NAME));
        by_labels.entry(key).or_default().push(i);
    }
    let mut keys = vec![DROP; input.series.len()];
    let mut series = Vec::with_capacity(by_labels.len());
    let mut names = Vec::with_capacity(by_labels.len());
    for (g, (labels, members)) in by_labels.into_iter().enumerate() {
        for &i in &members {
            keys[i] = g as u32;
        }
        // The evaluator names a histogram after its first bucket series in label order.
        let first = members
            .iter()
            .map(|&i| &input.series[i])
            .min()
            .expect("a histogram has a bucket");
        let name = first.metric_name().unwrap_or("");
        names.push(name.strip_suffix("_bucket").unwrap_or(name).to_string());
        series.push(labels);
    }
    let plan = Fold::plan_node(
        Keyed::plan_node(input.plan, keys, "histogram")?,
        HistogramQuantile {
            phi,
            les,
            names,
            annotator: p.engine.annotator(),
        },
    )?;
    Ok(Some(Lowered { plan, series }))
}

/// The fold: what it needs, fixed at planning.
pub(crate) struct HistogramQuantile {
    /// φ at every step.
    pub(super) phi: Vec<f64>,
    /// Upper bound of every input series (`NaN`: not a bucket).
    pub(super) les: Vec<f64>,
    /// Metric name of every histogram, for the monotonicity annotation.
    pub(super) names: Vec<String>,
    pub(super) annotator: Annotator,
}

impl Folder for HistogramQuantile {
    fn name(&self) -> &'static str {
        "HistogramQuantile"
    }

    fn describe(&self) -> String {
        format!(
            "{} histograms of {} buckets",
            self.names.len(),
            self.les.iter().filter(|l| !l.is_nan()).count()
        )
    }

    fn fold(&self, cells: Vec<((u32, u32), Cell)>) -> DfResult<RecordBatch> {
        let (mut s, mut t, mut v) = (Vec::new(), Vec::new(), Vec::new());
        for ((g, step), cell) in cells {
            let mut buckets: Vec<(f64, f64)> = cell
                .into_iter()
                .map(|(series, value)| {
                    (
                        self.les.get(series as usize).copied().unwrap_or(f64::NAN),
                        value,
                    )
                })
                .collect();
            let phi = self.phi.get(step as usize).copied().unwrap_or(f64::NAN);
            let (q, forced) = bucket_quantile(phi, &mut buckets);
            if forced {
                let name = self.names.get(g as usize).map_or("", String::as_str);
                self.annotator
                    .info(crate::promql::kernels::annotations::forced_monotonicity(
                        name,
                    ));
            }
            s.push(g);
            t.push(step);
            v.push(q);
        }
        rows(s, t, v)
    }

    fn encode(&self) -> DfResult<Vec<u8>> {
        Ok(HistogramQuantileWire {
            phi: self.phi.clone(),
            les: self.les.clone(),
            names: self.names.clone(),
        }
        .encode_to_vec())
    }
}

/// `HistogramQuantile` on the wire (annotations go to the decoding query).
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct HistogramQuantileWire {
    #[prost(double, repeated, tag = "1")]
    pub phi: Vec<f64>,
    #[prost(double, repeated, tag = "2")]
    pub les: Vec<f64>,
    #[prost(string, repeated, tag = "3")]
    pub names: Vec<String>,
}

impl HistogramQuantile {
    pub(super) fn decode(buf: &[u8], q: &PlanCodec) -> DfResult<Arc<dyn Folder>> {
        let w: HistogramQuantileWire = decode_wire(buf, "HistogramQuantile")?;
        Ok(Arc::new(HistogramQuantile {
            phi: w.phi,
            les: w.les,
            names: w.names,
            annotator: q.annotator(),
        }))
    }
}
