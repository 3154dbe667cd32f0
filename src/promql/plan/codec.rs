//! Physical plans to bytes and back (datafusion-proto): DataFusion encodes its own
//! operators (joins, aggregations, repartitions, unions, projections); [`PlanCodec`]
//! encodes Quiver's. This file is a registry: each operator's wire form (its message, its
//! `encode`, its `decode`) lives in the operator's own file, and what is here is the
//! envelope — which shape (leaf, row operator, fold, constant), which operator by name,
//! its bytes — and the tables from names to decoders. An operator without a wire form
//! does not compile (`encode` is a required method of [`LeafSource`], [`RowOp`] and
//! [`Folder`]); one missing from a table fails the round-trip tests.
//!
//! What an operator holds is either data fixed at planning (series ids, maps, per-step
//! parameters, which are written out) or the query's context (the storage snapshot a
//! leaf reads, the sample budget, cancellation, where annotations go), which the decoding
//! side supplies: the codec is made for the query that runs the decoded plan. A
//! distributed engine ships these bytes to a worker whose codec holds the worker's
//! snapshot of the same bucket.

use std::sync::Arc;

use datafusion::common::{internal_datafusion_err, internal_err, not_impl_err};
use datafusion::error::Result as DfResult;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::AggregateUDF;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use prost::Message;

use super::absent::Absent;
use super::agg_one::AggOne;
use super::constant::ConstantExec;
use super::fold::{FoldExec, Folder};
use super::group_fold::GroupFold;
use super::histogram_quantile::HistogramQuantile;
use super::keyed::Keyed;
use super::leaf::{Budget, LeafExec, LeafSource};
use super::map_values::MapValues;
use super::merge::Merge;
use super::range_fn::{CounterNotes, RangeScan};
use super::regroup::Regroup;
use super::series_ref::LeafSeries;
use super::set_op::Or;
use super::step_agg::StepAggExec;
use super::step_join::StepJoinExec;
use super::subquery::SubqueryWindow;
use super::top_rows::TopRows;
use super::udaf;
use super::unary::{RowOp, UnaryExec};
use super::vector_match::Combine;
use super::vector_select::Selection;
use crate::promql::engine::Engine;
use crate::promql::kernels::annotations::Annotator;
use crate::promql::scope::QueryScope;
use crate::storage::Snapshot;

/// A decoder of one kind of operator part, from its bytes into this query.
type Decode<T> = fn(&[u8], &PlanCodec) -> DfResult<Arc<T>>;
/// Most partitions a decoded leaf may declare (a plan's are the query's target
/// partitions, a few per core).
const MAX_LEAF_PARTITIONS: usize = 4096;

/// A leaf source's decoder also gets the series its leaf reads.
type DecodeSource = fn(&[u8], LeafSeries, &PlanCodec) -> DfResult<Arc<dyn LeafSource>>;

/// Leaf sources by name.
const SOURCES: &[(&str, DecodeSource)] = &[
    ("VectorSelect", Selection::decode),
    ("RangeFnSelect", RangeScan::decode),
];

/// Row operators by name.
const ROW_OPS: &[(&str, Decode<dyn RowOp>)] = &[
    ("Regroup", Regroup::decode),
    ("AggOne", AggOne::decode),
    ("Keyed", Keyed::decode),
    ("MapValues", MapValues::decode),
    ("Combine", Combine::decode),
    ("TopRows", TopRows::decode),
];

/// Folds by name.
const FOLDERS: &[(&str, Decode<dyn Folder>)] = &[
    ("HistogramQuantile", HistogramQuantile::decode),
    ("GroupFold", GroupFold::decode),
    ("Absent", Absent::decode),
    ("Merge", Merge::decode),
    ("SubqueryWindow", SubqueryWindow::decode),
    ("Or", Or::decode),
];

fn find<T: Copy>(table: &[(&str, T)], name: &str, what: &str) -> DfResult<T> {
    match table.iter().find(|(n, _)| *n == name) {
        Some((_, d)) => Ok(*d),
        None => internal_err!("unknown {what} {name}"),
    }
}

/// One of Quiver's operators, as written.
#[derive(Clone, PartialEq, Message)]
struct Node {
    #[prost(oneof = "Kind", tags = "1, 2, 3, 4, 5, 6")]
    kind: Option<Kind>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum Kind {
    #[prost(message, tag = "1")]
    Leaf(LeafNode),
    /// A row operator over one input.
    #[prost(message, tag = "2")]
    Unary(Part),
    /// A fold over one keyed input.
    #[prost(message, tag = "3")]
    Fold(Part),
    /// `vector(s)`: the operator's own bytes.
    #[prost(bytes = "vec", tag = "4")]
    Constant(Vec<u8>),
    /// An aggregation by group and step over one input.
    #[prost(bytes = "vec", tag = "5")]
    StepAgg(Vec<u8>),
    /// Vector matching's pairs by one-side series and step, over the many side and the
    /// one side.
    #[prost(bytes = "vec", tag = "6")]
    StepJoin(Vec<u8>),
}

/// A named part and its own bytes.
#[derive(Clone, PartialEq, Message)]
struct Part {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(bytes = "vec", tag = "2")]
    body: Vec<u8>,
}

/// A leaf: what it reads (its series, named portably, and the time range of the
/// snapshot), into how many partitions, and its source.
#[derive(Clone, PartialEq, Message)]
struct LeafNode {
    #[prost(message, optional, tag = "1")]
    source: Option<Part>,
    /// The series and their rows ([`LeafSeries`]'s wire form; tag 2 held process-local
    /// catalog ids before issue 26).
    #[prost(bytes = "vec", tag = "6")]
    series: Vec<u8>,
    #[prost(int64, tag = "3")]
    min_t: i64,
    #[prost(int64, tag = "4")]
    max_t: i64,
    #[prost(uint32, tag = "5")]
    partitions: u32,
}

/// Encodes Quiver's operators; decodes them into one query's context.
#[derive(Clone)]
pub(crate) struct PlanCodec {
    snapshot: Snapshot,
    /// The process's index, where leaves find their series by matchers and fingerprints.
    catalog: Arc<crate::catalog::Catalog>,
    /// The series the decoding query's caller may read (`None`: all).
    allowed: Option<roaring::RoaringBitmap>,
    budget: Budget,
    cancel: crate::promql::Cancel,
    annotator: Annotator,
    /// Whether decoded operators hand annotations back in their metrics (a task of
    /// another process's plan).
    report: bool,
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
        Self::of(&QueryScope::of(engine))
    }

    /// Decodes into a query's scope: an engine's, or one rebuilt from the settings that
    /// came with a task of another process's plan.
    pub(crate) fn of(scope: &QueryScope) -> Self {
        PlanCodec {
            snapshot: scope.snapshot.clone(),
            catalog: scope.storage.catalog().clone(),
            allowed: scope.allowed.clone(),
            budget: Budget::of(scope),
            cancel: scope.cancel.clone(),
            annotator: scope.annotator.clone(),
            report: scope.report,
        }
    }

    /// The decoding query's cancellation and deadline.
    pub(super) fn cancel(&self) -> crate::promql::Cancel {
        self.cancel.clone()
    }

    /// Where the decoding query's annotations go.
    pub(super) fn annotator(&self) -> Annotator {
        self.annotator.clone()
    }

    /// The decoding query's sample limit (for grids an operator would allocate).
    pub(super) fn max_samples(&self) -> usize {
        self.budget.max_samples()
    }

    /// Counter notes decoded into this query's annotations.
    pub(super) fn notes(&self, index: Vec<u32>, text: Vec<String>) -> CounterNotes {
        CounterNotes {
            texts: Arc::new(index.into_iter().zip(text).collect()),
            annotator: self.annotator.clone(),
        }
    }

    fn encode_leaf(&self, e: &LeafExec) -> DfResult<LeafNode> {
        let mut node = LeafNode {
            source: Some(Part {
                name: e.source.name().to_string(),
                body: e.source.encode()?,
            }),
            series: e.source.series().encode(&self.catalog)?,
            partitions: e.partitions as u32,
            ..Default::default()
        };
        (node.min_t, node.max_t) = e.source.scan().time_range();
        Ok(node)
    }

    fn decode_leaf(&self, n: LeafNode) -> DfResult<Arc<dyn ExecutionPlan>> {
        let Some(source) = n.source else {
            return internal_err!("leaf without a source");
        };
        let decode = find(SOURCES, &source.name, "leaf")?;
        // Exactly the encoded partitions: every task of a stage declares the same.
        if n.partitions as usize > MAX_LEAF_PARTITIONS {
            return internal_err!("leaf with {} partitions", n.partitions);
        }
        let series = LeafSeries::decode(
            &n.series,
            &self.catalog,
            self.allowed.as_ref(),
            &self.snapshot,
            (n.min_t, n.max_t),
        )?;
        Ok(Arc::new(LeafExec::exactly(
            decode(&source.body, series, self)?,
            self.budget.clone(),
            n.partitions as usize,
        )))
    }
}

/// Counter notes on the wire: series indexes and their texts, in index order.
pub(super) fn notes_wire(notes: &CounterNotes) -> (Vec<u32>, Vec<String>) {
    let mut pairs: Vec<(u32, String)> = notes.texts.iter().map(|(i, t)| (*i, t.clone())).collect();
    pairs.sort_unstable();
    pairs.into_iter().unzip()
}

pub(super) use crate::wire::decode as decode_wire;

impl PhysicalExtensionCodec for PlanCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        _ctx: &TaskContext,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let node: Node = decode_wire(buf, "plan node")?;
        match (node.kind, inputs) {
            (Some(Kind::Leaf(n)), []) => self.decode_leaf(n),
            (Some(Kind::Unary(p)), [input]) => {
                let op = find(ROW_OPS, &p.name, "row operator")?(&p.body, self)?;
                Ok(Arc::new(UnaryExec::new(input.clone(), op)))
            }
            (Some(Kind::Fold(p)), [input]) => {
                let folder = find(FOLDERS, &p.name, "fold")?(&p.body, self)?;
                Ok(Arc::new(
                    FoldExec::new(input.clone(), folder)
                        .reporting(self.report.then(|| self.annotator.clone())),
                ))
            }
            (Some(Kind::Constant(body)), []) => Ok(Arc::new(ConstantExec::decode(&body)?)),
            (Some(Kind::StepAgg(body)), [input]) => {
                Ok(Arc::new(StepAggExec::decode(&body, input.clone())?))
            }
            (Some(Kind::StepJoin(body)), [many, one]) => Ok(Arc::new(StepJoinExec::decode(
                &body,
                many.clone(),
                one.clone(),
            )?)),
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
        let part = |name: &str, body: Vec<u8>| Part {
            name: name.to_string(),
            body,
        };
        let kind = if let Some(e) = node.downcast_ref::<LeafExec>() {
            Kind::Leaf(self.encode_leaf(e)?)
        } else if let Some(e) = node.downcast_ref::<UnaryExec>() {
            Kind::Unary(part(e.op.name(), e.op.encode()?))
        } else if let Some(e) = node.downcast_ref::<FoldExec>() {
            Kind::Fold(part(e.folder.name(), e.folder.encode()?))
        } else if let Some(e) = node.downcast_ref::<ConstantExec>() {
            Kind::Constant(e.encode())
        } else if let Some(e) = node.downcast_ref::<StepAggExec>() {
            Kind::StepAgg(e.encode())
        } else if let Some(e) = node.downcast_ref::<StepJoinExec>() {
            Kind::StepJoin(e.encode())
        } else {
            return not_impl_err!("no encoding for {}", node.name());
        };
        Node { kind: Some(kind) }
            .encode(buf)
            .map_err(|e| internal_datafusion_err!("plan node: {e}"))
    }

    /// Quiver's aggregate functions (and the `count` a lowered plan uses) are not
    /// registered with the session (they exist only in its plans), so decoding finds them
    /// here, by name.
    fn try_decode_udaf(&self, name: &str, _buf: &[u8]) -> DfResult<Arc<AggregateUDF>> {
        Ok(Arc::new(match name {
            "prom_sum" => udaf::prom_sum(),
            "prom_avg" => udaf::prom_avg(),
            "prom_max" => udaf::prom_max(),
            "prom_min" => udaf::prom_min(),
            // `count` and `group` lower to DataFusion's own count, which a PromQL session
            // does not register by name either.
            "count" => return Ok(datafusion::functions_aggregate::count::count_udaf()),
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
    crate::wire::roundtrip(plan, &session.task_ctx(), &PlanCodec::new(engine))
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
        let part = |name: &str, body: Vec<u8>| Part {
            name: name.into(),
            body,
        };
        let absent = |steps| {
            Kind::Fold(part(
                "Absent",
                super::super::absent::AbsentWire { steps }.encode_to_vec(),
            ))
        };
        assert!(decode(absent(10), std::slice::from_ref(&input)));
        assert!(!decode(absent(u32::MAX), std::slice::from_ref(&input)));
        let window = |times: Vec<i64>| {
            Kind::Fold(part(
                "SubqueryWindow",
                super::super::subquery::SubqueryWindowWire {
                    function: "rate".into(),
                    inner_step: 1000,
                    ends: vec![1, 2],
                    times,
                    ..Default::default()
                }
                .encode_to_vec(),
            ))
        };
        assert!(decode(window(vec![1, 2]), std::slice::from_ref(&input)));
        assert!(!decode(window(vec![1]), std::slice::from_ref(&input)));
        let leaf = |times: Vec<i64>| {
            Kind::Leaf(LeafNode {
                source: Some(part(
                    "RangeFnSelect",
                    super::super::range_fn::RangeScanWire {
                        function: "rate".into(),
                        ends: vec![1, 2],
                        times,
                        ..Default::default()
                    }
                    .encode_to_vec(),
                )),
                partitions: 1,
                ..Default::default()
            })
        };
        assert!(decode(leaf(vec![1, 2]), &[]));
        assert!(!decode(leaf(vec![1]), &[]));
        // A leaf with an input, an unknown operator, and bytes that are no node at all.
        assert!(!decode(leaf(vec![1, 2]), std::slice::from_ref(&input)));
        assert!(!decode(
            Kind::Unary(part("Nonesuch", Vec::new())),
            std::slice::from_ref(&input)
        ));
        assert!(codec.try_decode(&[0xff, 0xff], &[], &ctx, &conv).is_err());
    }

    /// Each registry names an operator once.
    #[test]
    fn registry_names_are_unique() {
        let mut names: Vec<&str> = SOURCES.iter().map(|e| e.0).collect();
        names.extend(ROW_OPS.iter().map(|e| e.0));
        names.extend(FOLDERS.iter().map(|e| e.0));
        let n = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), n);
    }
}
