//! SQL plans to bytes and back (datafusion-proto): DataFusion encodes its own operators,
//! [`SqlCodec`] encodes Quiver's SQL operators — the `samples` and `series` scans and
//! [`CancelExec`](super::cancel::CancelExec). Like the PromQL codec (`promql::plan::codec`)
//! this is a registry: each operator's wire form lives in its own file, and the decoding
//! side supplies the query's context (its storage snapshot and catalog, its samples budget,
//! its cancellation), so a plan names series and time ranges, never memory.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use datafusion::common::{internal_datafusion_err, internal_err, not_impl_err};
use datafusion::error::Result as DfResult;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use prost::Message;

use super::cancel::CancelExec;
use super::scan::SamplesScanExec;
use super::series_scan::SeriesScanExec;
use crate::catalog::Catalog;
use crate::promql::Cancel;
use crate::storage::{Snapshot, Storage};

/// One of Quiver's SQL operators: its name and its own bytes.
#[derive(Clone, PartialEq, Message)]
struct Node {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(bytes = "vec", tag = "2")]
    body: Vec<u8>,
}

/// Encodes Quiver's SQL operators; decodes them into one statement's context.
#[derive(Clone)]
pub struct SqlCodec {
    snapshot: Snapshot,
    catalog: Arc<Catalog>,
    /// The series the caller may read (`None`: all): a task's scans resolve only these.
    allowed: Option<roaring::RoaringBitmap>,
    budget: Option<(usize, Arc<AtomicUsize>)>,
    cancel: Cancel,
}

impl std::fmt::Debug for SqlCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("SqlCodec")
    }
}

impl SqlCodec {
    /// Decodes into a statement over `storage` (its snapshot now) that may load
    /// `max_samples` (`None`: unlimited) and stops when `cancel` says so.
    pub fn new(storage: &Storage, max_samples: Option<usize>, cancel: Cancel) -> Self {
        SqlCodec {
            snapshot: storage.snapshot(),
            catalog: storage.catalog().clone(),
            allowed: None,
            budget: max_samples.map(|m| (m, Arc::default())),
            cancel,
        }
    }

    /// Decodes into a query's scope: the tasks of another process's plan read its
    /// snapshot and series, within its samples budget and deadline.
    pub(crate) fn of(scope: &crate::promql::scope::QueryScope) -> Self {
        SqlCodec {
            snapshot: scope.snapshot.clone(),
            catalog: scope.storage.catalog().clone(),
            allowed: scope.allowed.clone(),
            budget: Some((scope.max_samples, scope.charged.clone())),
            cancel: scope.cancel.clone(),
        }
    }

    pub(super) fn allowed(&self) -> Option<&roaring::RoaringBitmap> {
        self.allowed.as_ref()
    }

    pub(super) fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    pub(super) fn catalog(&self) -> Arc<Catalog> {
        self.catalog.clone()
    }

    pub(super) fn budget(&self) -> Option<(usize, Arc<AtomicUsize>)> {
        self.budget.clone()
    }

    pub(super) fn cancel(&self) -> Cancel {
        self.cancel.clone()
    }
}

pub(super) use crate::wire::decode as decode_wire;

impl PhysicalExtensionCodec for SqlCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        _ctx: &TaskContext,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let node: Node = decode_wire(buf, "SQL plan node")?;
        match (node.name.as_str(), inputs) {
            ("SamplesScanExec", []) => Ok(Arc::new(SamplesScanExec::decode(&node.body, self)?)),
            ("SeriesScanExec", []) => Ok(Arc::new(SeriesScanExec::decode(&node.body, self)?)),
            ("CancelExec", [input]) => Ok(Arc::new(CancelExec::decode(input.clone(), self))),
            (name, inputs) => internal_err!(
                "SQL plan node {name} with {} inputs cannot be decoded",
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
        let body = if let Some(e) = node.downcast_ref::<SamplesScanExec>() {
            e.encode(&self.catalog)?
        } else if let Some(e) = node.downcast_ref::<SeriesScanExec>() {
            e.encode()?
        } else if node.downcast_ref::<CancelExec>().is_some() {
            Vec::new()
        } else {
            return not_impl_err!("no encoding for {}", node.name());
        };
        Node {
            name: node.name().to_string(),
            body,
        }
        .encode(buf)
        .map_err(|e| internal_datafusion_err!("SQL plan node: {e}"))
    }
}

/// `plan` written to bytes and read back through `codec`; an error unless the copy
/// displays exactly as the original.
pub fn roundtrip(
    plan: Arc<dyn ExecutionPlan>,
    ctx: &datafusion::prelude::SessionContext,
    codec: &SqlCodec,
) -> DfResult<Arc<dyn ExecutionPlan>> {
    crate::wire::roundtrip(plan, &ctx.task_ctx(), codec)
}
