//! A statement on several queriers (issue 26): the session's plans cut into stages by
//! datafusion-distributed (`promql::Distribution::plan_over`, shared with PromQL), the
//! `samples` scan split into a task per querier, each task reading a contiguous run of
//! the coordinator's series ids. Scans ship their series by label fingerprint and a task
//! answers under the coordinator's ids (`scan.rs`, `series_scan.rs`), so joins, groupings
//! and literals over `series_id` mean the same on every task. The `series` scan and the
//! lanes run as one task.

use std::sync::Arc;

use datafusion::error::Result as DfResult;
use datafusion::execution::SessionStateBuilder;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_distributed::{
    DesiredTaskCountEvent, DesiredTaskCountEventResponse, DistributedExt, DistributedLeafExec,
    ScaleUpLeafNodeEvent, ScaleUpLeafNodeEventResponse,
};
use datafusion_proto::physical_plan::PhysicalExtensionCodec;
use url::Url;

use super::Spread;
use super::codec::SqlCodec;
use super::scan::SamplesScanExec;
use crate::promql::scope::QueryScope;

/// `builder` with the statement's plans run over `urls`: the planner and PromQL's codec
/// (`plan_over`), then SQL's codec ([`task_codecs`], in the order workers register it) and
/// how the `samples` scan splits into tasks.
pub(super) fn plan_over(
    builder: SessionStateBuilder,
    spread: &Spread,
    urls: Vec<Url>,
    scope: &QueryScope,
) -> SessionStateBuilder {
    let ext = crate::promql::task_ext(scope, &spread.caller);
    let mut builder = spread.distribution.plan_over(builder, urls, scope, ext);
    for codec in task_codecs(scope) {
        builder = builder.with_distributed_user_codec_arc(codec);
    }
    builder
        .with_distributed_desired_task_count_handler(scan_task_count)
        .with_distributed_scale_up_leaf_node_handler(scan_scale_up)
}

/// The codecs a worker decodes SQL operators with, for a task's scope
/// (`promql::MoreCodecs`).
pub(crate) fn task_codecs(scope: &QueryScope) -> Vec<Arc<dyn PhysicalExtensionCodec>> {
    vec![Arc::new(SqlCodec::of(scope))]
}

/// A `samples` scan asks for a task per series at most; the planner caps it at the
/// workers.
fn scan_task_count(ev: DesiredTaskCountEvent) -> Option<DfResult<DesiredTaskCountEventResponse>> {
    let scan = ev.plan.downcast_ref::<SamplesScanExec>()?;
    Some(Ok(DesiredTaskCountEventResponse::desired(
        scan.num_series().max(1),
    )))
}

/// A `samples` scan's tasks: slice i of n on task i, the same partitions on all.
fn scan_scale_up(ev: ScaleUpLeafNodeEvent) -> Option<DfResult<ScaleUpLeafNodeEventResponse>> {
    let scan = ev.plan.downcast_ref::<SamplesScanExec>()?;
    let n = ev.task_count.max(1);
    let variants: DfResult<Vec<Arc<dyn ExecutionPlan>>> = (0..n)
        .map(|i| Ok(Arc::new(scan.slice(i, n)?) as Arc<dyn ExecutionPlan>))
        .collect();
    Some(variants.and_then(|v| {
        DistributedLeafExec::try_new(ev.plan.clone(), v)
            .map(|p| ScaleUpLeafNodeEventResponse::new(Arc::new(p)))
    }))
}
