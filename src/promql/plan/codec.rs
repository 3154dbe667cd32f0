//! Physical plans to bytes and back (datafusion-proto): DataFusion encodes its own
//! operators (joins, aggregations, repartitions, unions, projections); [`PlanCodec`]
//! encodes Quiver's — the leaves ([`LeafExec`] with its source), the row operators
//! ([`UnaryExec`] with its [`RowOp`]), the folds ([`FoldExec`] with its [`Folder`]) — and names the
//! aggregate functions ([`super::udaf`]).
//!
//! What an operator holds is either data fixed at planning (series ids, maps, per-step
//! parameters, which are written out) or the query's context (the storage snapshot a
//! leaf reads, the sample budget, cancellation, where annotations go), which the decoding
//! side supplies: the codec is made for the query that runs the decoded plan. A
//! distributed engine would ship these bytes to a worker whose codec holds the worker's
//! snapshot of the same bucket.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::common::{internal_datafusion_err, internal_err, not_impl_err};
use datafusion::error::Result as DfResult;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::AggregateUDF;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use prost::Message;

use super::absent::Absent;
use super::constant::ConstantExec;
use super::fold::{FoldExec, Folder};
use super::group_fold::{GroupFn, GroupFold};
use super::histogram_quantile::HistogramQuantile;
use super::keyed::Keyed;
use super::leaf::{Budget, LeafExec, LeafSource};
use super::map_values::MapValues;
use super::merge::Merge;
use super::range_fn::{CounterNotes, RangeScan};
use super::regroup::Regroup;
use super::set_op::Or;
use super::subquery::SubqueryWindow;
use super::udaf;
use super::unary::{RowOp, UnaryExec};
use super::vector_match::Combine;
use super::vector_select::Selection;
use crate::promql::engine::Engine;
use crate::promql::kernels::annotations::Annotator;
use crate::promql::kernels::range_fns::RangeFn;
use crate::promql::kernels::value_fn::{ArithOp, ValueFn};
use crate::storage::Snapshot;

/// One of Quiver's operators, as written.
#[derive(Clone, PartialEq, Message)]
struct Node {
    #[prost(oneof = "Kind", tags = "1, 2, 3, 4")]
    kind: Option<Kind>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum Kind {
    #[prost(message, tag = "1")]
    Leaf(LeafNode),
    #[prost(message, tag = "2")]
    Unary(UnaryNode),
    #[prost(message, tag = "3")]
    Fold(FoldNode),
    /// `vector(s)`: the value at every step.
    #[prost(message, tag = "4")]
    Constant(ConstantNode),
}

#[derive(Clone, PartialEq, Message)]
struct ConstantNode {
    #[prost(double, repeated, tag = "1")]
    values: Vec<f64>,
}

/// A leaf: what it reads (series ids and time range of the snapshot) and computes.
#[derive(Clone, PartialEq, Message)]
struct LeafNode {
    /// `VectorSelect` or `RangeFnSelect`.
    #[prost(string, tag = "1")]
    source: String,
    #[prost(string, tag = "2")]
    text: String,
    /// The scan's series, a serialised roaring bitmap.
    #[prost(bytes = "vec", tag = "3")]
    ids: Vec<u8>,
    #[prost(int64, tag = "4")]
    min_t: i64,
    #[prost(int64, tag = "5")]
    max_t: i64,
    /// Evaluation time of every step.
    #[prost(sint64, repeated, tag = "6")]
    times: Vec<i64>,
    #[prost(int64, tag = "7")]
    lookback: i64,
    /// Range function name, window ends and length.
    #[prost(string, tag = "8")]
    function: String,
    #[prost(sint64, repeated, tag = "9")]
    ends: Vec<i64>,
    #[prost(int64, tag = "10")]
    range_ms: i64,
    /// Series-table index of each scanned series id (range functions).
    #[prost(uint32, repeated, tag = "11")]
    table_ids: Vec<u32>,
    #[prost(uint32, repeated, tag = "12")]
    table_index: Vec<u32>,
    #[prost(uint32, tag = "13")]
    partitions: u32,
    /// A range function's scalar parameters at every step.
    #[prost(double, repeated, tag = "14")]
    p1: Vec<f64>,
    #[prost(double, repeated, tag = "15")]
    p2: Vec<f64>,
    /// An instant selection's rows carry sample times (`timestamp(v)`).
    #[prost(bool, tag = "16")]
    timestamps: bool,
    /// `rate`/`increase`: the infos of series that do not look like counters.
    #[prost(uint32, repeated, tag = "17")]
    note_index: Vec<u32>,
    #[prost(string, repeated, tag = "18")]
    note_text: Vec<String>,
}

/// A row operator.
#[derive(Clone, PartialEq, Message)]
struct UnaryNode {
    /// `Regroup`, `Keyed`, `MapValues` or `Combine`.
    #[prost(string, tag = "1")]
    op: String,
    /// The series map (regroup, keys, combine's outputs).
    #[prost(uint32, repeated, tag = "2")]
    map: Vec<u32>,
    #[prost(uint64, tag = "3")]
    outputs: u64,
    #[prost(string, tag = "4")]
    what: String,
    /// The function (`ValueFn` name) or operator symbol.
    #[prost(string, tag = "5")]
    function: String,
    #[prost(double, repeated, tag = "6")]
    a: Vec<f64>,
    #[prost(double, repeated, tag = "7")]
    b: Vec<f64>,
    #[prost(bool, tag = "8")]
    return_bool: bool,
    #[prost(bool, tag = "9")]
    one_on_left: bool,
}

/// A per-group fold: `HistogramQuantile` (φ, bounds, names), `GroupFold` (function,
/// parameter, ranks) or `Or` (left series count, right series' results).
#[derive(Clone, PartialEq, Message)]
struct FoldNode {
    #[prost(string, tag = "1")]
    folder: String,
    #[prost(string, tag = "2")]
    function: String,
    #[prost(double, repeated, tag = "3")]
    param: Vec<f64>,
    #[prost(double, repeated, tag = "4")]
    les: Vec<f64>,
    #[prost(string, repeated, tag = "5")]
    names: Vec<String>,
    #[prost(uint32, repeated, tag = "6")]
    rank: Vec<u32>,
    /// `Or`: the left side's series count; `Absent`: the steps.
    #[prost(uint32, tag = "7")]
    left: u32,
    /// `SubqueryWindow`: the call as written, the inner grid, the outer window ends,
    /// length and evaluation times, the second parameter.
    #[prost(string, tag = "8")]
    text: String,
    #[prost(int64, tag = "9")]
    inner_start: i64,
    #[prost(int64, tag = "10")]
    inner_step: i64,
    #[prost(sint64, repeated, tag = "11")]
    ends: Vec<i64>,
    #[prost(int64, tag = "12")]
    range_ms: i64,
    #[prost(sint64, repeated, tag = "13")]
    times: Vec<i64>,
    #[prost(double, repeated, tag = "14")]
    param2: Vec<f64>,
    /// `SubqueryWindow` of `rate`/`increase`: infos of series that do not look like
    /// counters.
    #[prost(uint32, repeated, tag = "15")]
    note_index: Vec<u32>,
    #[prost(string, repeated, tag = "16")]
    note_text: Vec<String>,
}

/// Counter notes on the wire: series indexes and their texts, in index order.
fn notes_wire(notes: &CounterNotes) -> (Vec<u32>, Vec<String>) {
    let mut pairs: Vec<(u32, String)> = notes.texts.iter().map(|(i, t)| (*i, t.clone())).collect();
    pairs.sort_unstable();
    pairs.into_iter().unzip()
}

/// Encodes Quiver's operators; decodes them into one query's context.
#[derive(Clone)]
pub(crate) struct PlanCodec {
    snapshot: Snapshot,
    budget: Budget,
    cancel: crate::promql::Cancel,
    annotator: Annotator,
}

impl std::fmt::Debug for PlanCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("PlanCodec")
    }
}

impl PlanCodec {
    /// Decodes into `engine`'s query: its snapshot, sample limit, cancellation and
    /// annotations.
    pub(crate) fn new(engine: &Engine) -> Self {
        PlanCodec {
            snapshot: engine.snapshot().clone(),
            budget: Budget::of(engine, engine.loaded()),
            cancel: engine.opts.cancel.clone(),
            annotator: engine.annotator(),
        }
    }

    /// Counter notes decoded into this query's annotations.
    fn notes(&self, index: Vec<u32>, text: Vec<String>) -> CounterNotes {
        CounterNotes {
            texts: Arc::new(index.into_iter().zip(text).collect()),
            annotator: self.annotator.clone(),
        }
    }

    fn encode_leaf(&self, e: &LeafExec) -> DfResult<LeafNode> {
        let source = e.source.as_any();
        let mut node = LeafNode {
            source: e.source.name().to_string(),
            text: e.source.text().to_string(),
            partitions: e.partitions as u32,
            ..Default::default()
        };
        let scan = e.source.scan();
        let ids: roaring::RoaringBitmap = scan.ids().iter().copied().collect();
        ids.serialize_into(&mut node.ids)
            .map_err(|err| internal_datafusion_err!("series ids: {err}"))?;
        (node.min_t, node.max_t) = scan.time_range();
        if let Some(s) = source.downcast_ref::<Selection>() {
            node.times = s.times.to_vec();
            node.lookback = s.lookback;
            node.timestamps = s.timestamps;
        } else if let Some(r) = source.downcast_ref::<RangeScan>() {
            node.function = r.function.name().to_string();
            node.ends = r.ends.to_vec();
            node.range_ms = r.range_ms;
            node.p1 = r.p1.to_vec();
            node.p2 = r.p2.to_vec();
            node.times = r.times.to_vec();
            (node.note_index, node.note_text) = notes_wire(&r.notes);
            let mut table: Vec<(u32, u32)> = r.group_of.iter().map(|(&k, &v)| (k, v)).collect();
            table.sort_unstable();
            (node.table_ids, node.table_index) = table.into_iter().unzip();
        } else {
            return internal_err!("no encoding for leaf {}", e.source.name());
        }
        Ok(node)
    }

    fn decode_leaf(&self, n: LeafNode) -> DfResult<Arc<dyn ExecutionPlan>> {
        if n.source == "RangeFnSelect" && n.times.len() != n.ends.len() {
            return internal_err!(
                "range function with {} steps and {} windows",
                n.times.len(),
                n.ends.len()
            );
        }
        let ids = roaring::RoaringBitmap::deserialize_from(n.ids.as_slice())
            .map_err(|err| internal_datafusion_err!("series ids: {err}"))?;
        let scan = self.snapshot.scan(&ids, n.min_t, n.max_t);
        let source: Arc<dyn LeafSource> = match n.source.as_str() {
            "VectorSelect" => Arc::new(Selection {
                scan,
                times: Arc::new(n.times),
                lookback: n.lookback,
                text: n.text,
                timestamps: n.timestamps,
            }),
            "RangeFnSelect" => {
                let Some(function) = RangeFn::parse(&n.function) else {
                    return internal_err!("unknown range function {}", n.function);
                };
                let group_of: HashMap<u32, u32> =
                    n.table_ids.into_iter().zip(n.table_index).collect();
                Arc::new(RangeScan {
                    scan,
                    function,
                    group_of: Arc::new(group_of),
                    ends: Arc::new(n.ends),
                    range_ms: n.range_ms,
                    p1: Arc::new(n.p1),
                    p2: Arc::new(n.p2),
                    times: Arc::new(n.times),
                    cancel: self.cancel.clone(),
                    text: n.text,
                    notes: self.notes(n.note_index, n.note_text),
                })
            }
            other => return internal_err!("unknown leaf {other}"),
        };
        Ok(Arc::new(LeafExec::new(
            source,
            self.budget.clone(),
            n.partitions as usize,
        )))
    }

    fn encode_unary(&self, op: &dyn RowOp) -> DfResult<UnaryNode> {
        let any = op.as_any();
        let mut n = UnaryNode {
            op: op.name().to_string(),
            ..Default::default()
        };
        if let Some(r) = any.downcast_ref::<Regroup>() {
            n.map = r.map.to_vec();
            n.outputs = r.outputs as u64;
        } else if let Some(k) = any.downcast_ref::<Keyed>() {
            n.map = k.keys.to_vec();
            n.what = k.what.clone();
        } else if let Some(m) = any.downcast_ref::<MapValues>() {
            n.function = m.f.name();
            n.a = m.a.to_vec();
            n.b = m.b.to_vec();
        } else if let Some(c) = any.downcast_ref::<Combine>() {
            n.map = c.outputs.to_vec();
            n.function = c.op.symbol().to_string();
            n.return_bool = c.return_bool;
            n.one_on_left = c.one_on_left;
        } else {
            return internal_err!("no encoding for {}", op.name());
        }
        Ok(n)
    }

    fn decode_unary(
        &self,
        n: UnaryNode,
        input: Arc<dyn ExecutionPlan>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let op: Arc<dyn RowOp> = match n.op.as_str() {
            "Regroup" => Arc::new(Regroup {
                map: Arc::new(n.map),
                outputs: n.outputs as usize,
            }),
            "Keyed" => Arc::new(Keyed {
                keys: Arc::new(n.map),
                what: n.what,
            }),
            "MapValues" => {
                let Some(f) = ValueFn::from_name(&n.function) else {
                    return internal_err!("unknown value function {}", n.function);
                };
                Arc::new(MapValues {
                    f,
                    a: Arc::new(n.a),
                    b: Arc::new(n.b),
                })
            }
            "Combine" => {
                let Some(op) = ArithOp::parse(&n.function) else {
                    return internal_err!("unknown operator {}", n.function);
                };
                Arc::new(Combine {
                    op,
                    return_bool: n.return_bool,
                    one_on_left: n.one_on_left,
                    outputs: Arc::new(n.map),
                })
            }
            other => return internal_err!("unknown row operator {other}"),
        };
        Ok(Arc::new(UnaryExec::new(input, op)))
    }
}

impl PlanCodec {
    fn encode_fold(&self, folder: &dyn Folder) -> DfResult<FoldNode> {
        let any = folder.as_any();
        let mut n = FoldNode {
            folder: folder.name().to_string(),
            ..Default::default()
        };
        if let Some(h) = any.downcast_ref::<HistogramQuantile>() {
            n.param = h.phi.clone();
            n.les = h.les.clone();
            n.names = h.names.clone();
        } else if let Some(g) = any.downcast_ref::<GroupFold>() {
            n.function = g.f.name().to_string();
            n.param = g.param.clone();
            n.rank = g.rank.clone();
        } else if let Some(w) = any.downcast_ref::<SubqueryWindow>() {
            n.function = w.function.name().to_string();
            n.text = w.text.clone();
            n.inner_start = w.inner_start;
            n.inner_step = w.inner_step;
            n.ends = w.ends.clone();
            n.range_ms = w.range_ms;
            n.times = w.times.clone();
            n.param = w.p1.clone();
            n.param2 = w.p2.clone();
            (n.note_index, n.note_text) = notes_wire(&w.notes);
        } else if any.is::<Merge>() {
        } else if let Some(a) = any.downcast_ref::<Absent>() {
            n.left = a.steps;
        } else if let Some(o) = any.downcast_ref::<Or>() {
            n.rank = o.right_to.to_vec();
            n.left = o.left;
        } else {
            return internal_err!("no encoding for {}", folder.name());
        }
        Ok(n)
    }

    fn decode_fold(
        &self,
        n: FoldNode,
        input: Arc<dyn ExecutionPlan>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let folder: Arc<dyn Folder> = match n.folder.as_str() {
            "HistogramQuantile" => Arc::new(HistogramQuantile {
                phi: n.param,
                les: n.les,
                names: n.names,
                annotator: self.annotator.clone(),
            }),
            "GroupFold" => {
                let Some(f) = GroupFn::parse(&n.function) else {
                    return internal_err!("unknown aggregation {}", n.function);
                };
                Arc::new(GroupFold {
                    f,
                    param: n.param,
                    rank: n.rank,
                })
            }
            // A step count is a grid the query already holds: never more than its limit.
            "Absent" if n.left as usize <= self.budget.max_samples() => {
                Arc::new(Absent { steps: n.left })
            }
            "Merge" => Arc::new(Merge),
            "SubqueryWindow" => {
                let Some(function) = RangeFn::parse(&n.function) else {
                    return internal_err!("unknown range function {}", n.function);
                };
                if n.times.len() != n.ends.len() || n.inner_step <= 0 {
                    return internal_err!("subquery window with an inconsistent grid");
                }
                Arc::new(SubqueryWindow {
                    function,
                    text: n.text,
                    inner_start: n.inner_start,
                    inner_step: n.inner_step,
                    ends: n.ends,
                    range_ms: n.range_ms,
                    p1: n.param,
                    p2: n.param2,
                    times: n.times,
                    cancel: self.cancel.clone(),
                    notes: self.notes(n.note_index, n.note_text),
                })
            }
            "Or" => Arc::new(Or {
                left: n.left,
                right_to: Arc::new(n.rank),
            }),
            other => return internal_err!("unknown fold {other}"),
        };
        Ok(Arc::new(FoldExec::new(input, folder)))
    }
}

impl PhysicalExtensionCodec for PlanCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        _ctx: &TaskContext,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let node = Node::decode(buf).map_err(|e| internal_datafusion_err!("plan node: {e}"))?;
        match (node.kind, inputs) {
            (Some(Kind::Leaf(n)), []) => self.decode_leaf(n),
            (Some(Kind::Unary(n)), [input]) => self.decode_unary(n, input.clone()),
            (Some(Kind::Fold(n)), [input]) => self.decode_fold(n, input.clone()),
            (Some(Kind::Constant(n)), []) => Ok(Arc::new(ConstantExec::new(Arc::new(n.values)))),
            (kind, inputs) => internal_err!(
                "plan node {kind:?} with {} inputs cannot be decoded",
                inputs.len()
            ),
        }
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> DfResult<()> {
        let kind = if let Some(e) = node.downcast_ref::<LeafExec>() {
            Kind::Leaf(self.encode_leaf(e)?)
        } else if let Some(e) = node.downcast_ref::<UnaryExec>() {
            Kind::Unary(self.encode_unary(e.op.as_ref())?)
        } else if let Some(e) = node.downcast_ref::<ConstantExec>() {
            Kind::Constant(ConstantNode {
                values: e.values.to_vec(),
            })
        } else if let Some(e) = node.downcast_ref::<FoldExec>() {
            Kind::Fold(self.encode_fold(e.folder.as_ref())?)
        } else {
            return not_impl_err!("no encoding for {}", node.name());
        };
        Node { kind: Some(kind) }
            .encode(buf)
            .map_err(|e| internal_datafusion_err!("plan node: {e}"))
    }

    /// Quiver's aggregate functions are not registered with the session (they exist
    /// only in its plans), so decoding finds them here, by name.
    fn try_decode_udaf(&self, name: &str, _buf: &[u8]) -> DfResult<Arc<AggregateUDF>> {
        Ok(Arc::new(match name {
            "prom_sum" => udaf::prom_sum(),
            "prom_avg" => udaf::prom_avg(),
            "prom_max" => udaf::prom_max(),
            "prom_min" => udaf::prom_min(),
            other => return not_impl_err!("no aggregate function {other}"),
        }))
    }
}

/// `plan` written to bytes and read back into `engine`'s query; an error unless the copy
/// displays exactly as the original.
pub(super) fn roundtrip(
    engine: &Engine,
    plan: Arc<dyn ExecutionPlan>,
    session: &datafusion::prelude::SessionContext,
) -> DfResult<Arc<dyn ExecutionPlan>> {
    use datafusion::physical_plan::displayable;
    use datafusion_proto::bytes::{
        physical_plan_from_bytes_with_extension_codec, physical_plan_to_bytes_with_extension_codec,
    };
    let codec = PlanCodec::new(engine);
    let bytes = physical_plan_to_bytes_with_extension_codec(plan.clone(), &codec)?;
    let copy = physical_plan_from_bytes_with_extension_codec(&bytes, &session.task_ctx(), &codec)?;
    let (a, b) = (
        displayable(plan.as_ref()).indent(true).to_string(),
        displayable(copy.as_ref()).indent(true).to_string(),
    );
    if a != b {
        return internal_err!("plan changed in its round trip:\n{a}\nbecame\n{b}");
    }
    Ok(copy)
}

#[cfg(test)]
mod tests {
    use datafusion_proto::physical_plan::DefaultPhysicalProtoConverter;

    use super::*;
    use crate::promql::QueryOptions;
    use crate::storage::Storage;

    /// Decoding takes sizes from bytes: a node whose vectors disagree, or that would
    /// allocate more than the query may hold, is an error, never a panic or a huge
    /// allocation.
    #[tokio::test]
    async fn decoding_refuses_inconsistent_or_oversized_nodes() {
        let storage = Arc::new(Storage::in_memory().await.unwrap());
        let engine = Engine::new(
            storage,
            QueryOptions {
                max_samples: 1000,
                ..QueryOptions::default()
            },
        );
        let codec = PlanCodec::new(&engine);
        let (ctx, conv) = (TaskContext::default(), DefaultPhysicalProtoConverter {});
        let input: Arc<dyn ExecutionPlan> = Arc::new(ConstantExec::new(Arc::new(vec![1.0])));
        let decode = |kind: Kind, inputs: &[Arc<dyn ExecutionPlan>]| {
            let bytes = Node { kind: Some(kind) }.encode_to_vec();
            codec.try_decode(&bytes, inputs, &ctx, &conv).is_ok()
        };
        let absent = |steps| {
            Kind::Fold(FoldNode {
                folder: "Absent".into(),
                left: steps,
                ..Default::default()
            })
        };
        assert!(decode(absent(10), std::slice::from_ref(&input)));
        assert!(!decode(absent(u32::MAX), std::slice::from_ref(&input)));
        let window = |times: Vec<i64>| {
            Kind::Fold(FoldNode {
                folder: "SubqueryWindow".into(),
                function: "rate".into(),
                inner_step: 1000,
                ends: vec![1, 2],
                times,
                ..Default::default()
            })
        };
        assert!(decode(window(vec![1, 2]), std::slice::from_ref(&input)));
        assert!(!decode(window(vec![1]), std::slice::from_ref(&input)));
        let mut ids = Vec::new();
        roaring::RoaringBitmap::new()
            .serialize_into(&mut ids)
            .unwrap();
        let leaf = |times: Vec<i64>| {
            Kind::Leaf(LeafNode {
                source: "RangeFnSelect".into(),
                function: "rate".into(),
                ids: ids.clone(),
                ends: vec![1, 2],
                times,
                partitions: 1,
                ..Default::default()
            })
        };
        assert!(decode(leaf(vec![1, 2]), &[]));
        assert!(!decode(leaf(vec![1]), &[]));
        // A leaf with an input, and bytes that are no node at all.
        assert!(!decode(leaf(vec![1, 2]), std::slice::from_ref(&input)));
        assert!(codec.try_decode(&[0xff, 0xff], &[], &ctx, &conv).is_err());
    }
}
