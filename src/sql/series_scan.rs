//! `SeriesScanExec`: the `series` table as a partitioned, streaming leaf over the catalog.
//!
//! The selected series ids are split into contiguous ranges, one per partition; a partition
//! turns its ids into label maps a chunk at a time, so a million series never sit in one
//! batch (nor in memory at once), and rows come out ordered by `series_id`, which the node
//! declares.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, MapBuilder, RecordBatch, StringBuilder, UInt32Array};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::Statistics;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::Result as DfResult;
use datafusion::execution::TaskContext;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{
    EquivalenceProperties, LexOrdering, PhysicalExpr, PhysicalSortExpr,
};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::statistics::StatisticsArgs;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    SendableRecordBatchStream,
};

use crate::catalog::{Catalog, SeriesId};

/// Series turned into rows per batch.
const CHUNK: usize = 8192;

pub struct SeriesScanExec {
    catalog: Arc<Catalog>,
    /// The series' ids as the rows show them (the planner's).
    ids: Arc<Vec<SeriesId>>,
    /// A task of another process's plan: each series' id in this process's catalog, in
    /// the order of `ids` (SQL shows the planner's ids; labels are looked up here).
    here: Option<Arc<Vec<SeriesId>>>,
    /// Columns of `series` to emit (indices into series_id, metric, labels).
    projection: Vec<usize>,
    full: SchemaRef,
    schema: SchemaRef,
    partitions: usize,
    properties: Arc<PlanProperties>,
}

impl SeriesScanExec {
    pub fn new(
        catalog: Arc<Catalog>,
        ids: Vec<SeriesId>,
        full: SchemaRef,
        projection: Vec<usize>,
        partitions: usize,
    ) -> DfResult<Self> {
        let schema = Arc::new(full.project(&projection)?);
        let partitions = partitions.clamp(1, ids.len().max(1));
        let mut eq = EquivalenceProperties::new(schema.clone());
        if let Some(i) = projection.iter().position(|&c| c == 0) {
            let sort = PhysicalSortExpr::new_default(Arc::new(Column::new(
                schema.field(i).name(),
                i,
            )) as Arc<dyn PhysicalExpr>);
            if let Some(o) = LexOrdering::new(vec![sort]) {
                eq.add_ordering(o);
            }
        }
        let properties = PlanProperties::new(
            eq,
            Partitioning::UnknownPartitioning(partitions),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Ok(SeriesScanExec {
            catalog,
            ids: Arc::new(ids),
            here: None,
            projection,
            full,
            schema,
            partitions,
            properties: Arc::new(properties),
        })
    }
}

/// `SeriesScanExec` on the wire (the catalog is the decoding statement's). Series are
/// named by their labels' fingerprints under the encoding process's ids
/// (`promql::series_ref`), which the rows keep.
#[derive(Clone, PartialEq, prost::Message)]
struct SeriesScanWire {
    #[prost(bytes = "vec", tag = "1")]
    series: Vec<u8>,
    #[prost(uint32, repeated, tag = "2")]
    projection: Vec<u32>,
    #[prost(uint32, tag = "3")]
    partitions: u32,
}

impl SeriesScanExec {
    pub(super) fn encode(&self) -> DfResult<Vec<u8>> {
        use prost::Message;
        if self.here.is_some() {
            return datafusion::common::internal_err!("a task's series scan is not re-encoded");
        }
        Ok(SeriesScanWire {
            series: crate::promql::series_ref::encode_ids(&self.catalog, &self.ids)?,
            projection: self.projection.iter().map(|&c| c as u32).collect(),
            partitions: self.partitions as u32,
        }
        .encode_to_vec())
    }

    pub(super) fn decode(buf: &[u8], q: &super::codec::SqlCodec) -> DfResult<Self> {
        let w: SeriesScanWire = super::codec::decode_wire(buf, "SeriesScanExec")?;
        let catalog = q.catalog();
        let rows = crate::promql::series_ref::decode_rows(&w.series, &catalog, q.allowed())?;
        let projection: Vec<usize> = w.projection.into_iter().map(|c| c as usize).collect();
        if projection.iter().any(|&c| c > 2) || w.partitions as usize > 4096 {
            return datafusion::common::internal_err!(
                "series scan: projection {projection:?}, {} partitions",
                w.partitions
            );
        }
        let (ids, here): (Vec<SeriesId>, Vec<SeriesId>) = rows.into_iter().unzip();
        let mut exec =
            SeriesScanExec::new(catalog, ids, super::tables::series_schema(), projection, 1)?;
        // The plan's partitions, however many series this process finds.
        exec.partitions = (w.partitions as usize).max(1);
        exec.properties = Arc::new(
            exec.properties
                .as_ref()
                .clone()
                .with_partitioning(Partitioning::UnknownPartitioning(exec.partitions)),
        );
        exec.here = Some(Arc::new(here));
        Ok(exec)
    }
}

impl fmt::Debug for SeriesScanExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SeriesScanExec(partitions={})", self.partitions)
    }
}

impl DisplayAs for SeriesScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let cols: Vec<&str> = self
            .schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        write!(
            f,
            "SeriesScanExec: series={}, partitions={}, projection=[{}]",
            self.ids.len(),
            self.partitions,
            cols.join(", ")
        )
    }
}

impl ExecutionPlan for SeriesScanExec {
    fn name(&self) -> &str {
        "SeriesScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    /// Exact row count (as an estimate: a series may leave the catalog before it is read).
    fn statistics_from_inputs(
        &self,
        _input_stats: &[Arc<Statistics>],
        args: &StatisticsArgs,
    ) -> DfResult<Arc<Statistics>> {
        Ok(super::estimated_rows(
            &self.schema,
            self.ids.len(),
            self.partitions,
            args.partition(),
        ))
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        partition: usize,
        _ctx: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let n = self.ids.len();
        let per = n.div_ceil(self.partitions).max(1);
        let (a, b) = ((partition * per).min(n), ((partition + 1) * per).min(n));
        let (catalog, ids, here, projection, full, schema) = (
            self.catalog.clone(),
            self.ids.clone(),
            self.here.clone(),
            self.projection.clone(),
            self.full.clone(),
            self.schema.clone(),
        );
        let starts: Vec<usize> = (a..b).step_by(CHUNK).collect();
        let stream = futures::stream::iter(starts).map(move |s| {
            let chunk = &ids[s..(s + CHUNK).min(b)];
            let lookup = here.as_ref().map(|h| &h[s..(s + CHUNK).min(b)]);
            rows(&catalog, chunk, lookup, &full, &schema, &projection)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            stream,
        )))
    }
}

use futures::StreamExt;

/// One batch of `series` rows for `ids`, their labels those of `lookup` in `catalog`
/// (`None`: of `ids`).
fn rows(
    catalog: &Catalog,
    ids: &[SeriesId],
    lookup: Option<&[SeriesId]>,
    full: &SchemaRef,
    schema: &SchemaRef,
    projection: &[usize],
) -> DfResult<RecordBatch> {
    let labels = catalog.labels_many(lookup.unwrap_or(ids).iter().copied());
    let mut kept = Vec::with_capacity(labels.len());
    let mut metric = StringBuilder::new();
    let mut map = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
    let (want_metric, want_labels) = (projection.contains(&1), projection.contains(&2));
    for (&id, l) in ids.iter().zip(&labels) {
        // A series the catalog has let go of since the plan was made is left out.
        let Some(l) = l else { continue };
        kept.push(id);
        if want_metric {
            metric.append_option(l.metric_name());
        }
        if want_labels {
            for (k, v) in l.iter() {
                map.keys().append_value(k);
                map.values().append_value(v);
            }
            map.append(true)?;
        }
    }
    let n = kept.len();
    let cols: Vec<Option<ArrayRef>> = vec![
        Some(Arc::new(UInt32Array::from(kept))),
        want_metric.then(|| Arc::new(metric.finish()) as ArrayRef),
        want_labels.then(|| Arc::new(map.finish()) as ArrayRef),
    ];
    let projected: Vec<ArrayRef> = projection
        .iter()
        .map(|&c| cols[c].clone().expect("column built"))
        .collect();
    debug_assert_eq!(full.fields().len(), 3);
    let options = datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(n));
    Ok(RecordBatch::try_new_with_options(
        schema.clone(),
        projected,
        &options,
    )?)
}
