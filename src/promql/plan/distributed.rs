//! One PromQL plan on several processes, with datafusion-distributed (issue 26).
//!
//! - **Coordinator** ([`Engine::run_plan`]): the querier a request reaches plans the query
//!   as always, then lets datafusion-distributed cut the physical plan into stages at its
//!   repartitions and send each stage's tasks to the cluster's queriers ([`Distribution`]),
//!   its own worker included; a querier alone runs its plans locally. What the tasks found besides rows (annotations, samples
//!   read) comes back in their metrics ([`super::report`]). A query whose tasks fail for
//!   another reason than the query's own limits runs once more, on the queriers that still
//!   answer (or here alone), with a warning.
//! - **Tasks**: a leaf becomes one task per slice of whole series ([`LeafExec::slice`]), so
//!   range windows see every sample of their series.
//! - **Worker** ([`worker_session`]): the session a querier builds for a task of another
//!   process's plan: Quiver's codec in the task's [`QueryScope`], rebuilt from the settings
//!   the task carries, and Quiver's aggregate functions, which the composed codec names
//!   but does not carry.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::common::config::ExtensionOptions;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::{SessionState, SessionStateBuilder};
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion_distributed::{
    ChannelResolver, DesiredTaskCountEvent, DesiredTaskCountEventResponse, DistributedExec,
    DistributedExt, DistributedLeafExec, DistributedMetricsFormat, GetWorkerInfoRequest,
    RouteTasksEvent, RouteTasksEventResponse, RouteTasksHandler, ScaleUpLeafNodeEvent,
    ScaleUpLeafNodeEventResponse, SessionStateBuilderExt, WorkerChannel, WorkerQueryContext,
    WorkerResolver,
};
use datafusion_proto::physical_plan::PhysicalExtensionCodec;
use url::Url;

use super::codec::PlanCodec;
use super::leaf::LeafExec;
use super::pace::{Pace, TaskWork};
use super::udaf::{prom_avg, prom_max, prom_min, prom_sum};
use super::{PromQueryPlanner, df_error};
use crate::promql::scope::{QueryScope, QuiverQueryExt, ext_for};
use crate::promql::{Engine, PromqlError};
use crate::storage::Storage;

/// Where datafusion-distributed sends a session's config extensions (gRPC metadata).
const CONFIG_HEADER_PREFIX: &str = "x-datafusion-distributed-config-";

/// The processes a plan's tasks may run on: a cluster's queriers, each a
/// datafusion-distributed worker, and how to reach them.
#[derive(Clone)]
pub struct Distribution {
    members: Arc<dyn WorkerResolver>,
    channels: Arc<dyn ChannelResolver + Send + Sync>,
    /// The URL others reach this process's own worker at (`None`: it is none of them). Its
    /// tasks go there over the network like the others' (in process, a task's coordinator
    /// channel outlived an abandoned query); alone in the list, it runs plans locally.
    me: Option<Url>,
    /// Plans run across workers so far.
    runs: Arc<std::sync::atomic::AtomicUsize>,
    /// The least samples (estimated) a PromQL plan's leaves read to run across workers.
    min_samples: usize,
    /// Partial aggregates go to the coordinator, which folds them (no shuffle stage).
    fold_here: bool,
    /// Plans whose aggregations answer at most this many cells fold on the coordinator
    /// too ([`small_aggregations`]).
    fold_cells: usize,
    /// Each querier's measured speed: the share of a leaf's series its task reads.
    pace: Arc<Pace>,
}

impl std::fmt::Debug for Distribution {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let urls = self.members.get_urls().unwrap_or_default();
        f.debug_struct("Distribution")
            .field("workers", &urls.len())
            .field("me", &self.me.as_ref().map(Url::as_str))
            .finish()
    }
}

impl Distribution {
    pub fn new(
        members: Arc<dyn WorkerResolver>,
        channels: Arc<dyn ChannelResolver + Send + Sync>,
        me: Option<Url>,
    ) -> Self {
        Distribution {
            members,
            channels,
            me,
            runs: Default::default(),
            min_samples: 0,
            fold_here: false,
            fold_cells: FOLD_CELLS,
            pace: Default::default(),
        }
    }

    /// Plans fold their partial aggregates on the coordinator rather than in a stage of
    /// tasks after a shuffle: one exchange less per aggregation, and the final fold on
    /// one process (cheap when the groups are few, as a dashboard's are).
    pub fn fold_on_coordinator(mut self, yes: bool) -> Self {
        self.fold_here = yes;
        self
    }

    /// Plans whose aggregations answer at most `n` cells fold on the coordinator (0: only
    /// with [`Distribution::fold_on_coordinator`]).
    pub fn fold_below(mut self, n: usize) -> Self {
        self.fold_cells = n;
        self
    }

    /// Only PromQL plans whose leaves read at least `n` samples (estimated) run across
    /// workers: a distributed plan pays a fixed cost (the plan sent to every task, a round
    /// trip per exchange, rows encoded between stages) that a small plan does not win
    /// back by splitting its work.
    pub fn with_min_samples(mut self, n: usize) -> Self {
        self.min_samples = n;
        self
    }

    /// With `pace` as the workers' measured speeds (tests).
    #[cfg(test)]
    pub(crate) fn with_pace(mut self, pace: Pace) -> Self {
        self.pace = Arc::new(pace);
        self
    }

    /// How many plans ran across workers.
    pub fn runs(&self) -> usize {
        self.runs.load(Ordering::Relaxed)
    }

    /// The live workers now, this process's own included.
    fn urls(&self) -> Vec<Url> {
        let mut urls = self.members.get_urls().unwrap_or_default();
        if let Some(me) = &self.me
            && !urls.contains(me)
        {
            urls.push(me.clone());
        }
        urls
    }

    /// Whether a worker other than this process is live.
    fn has_others(urls: &[Url], me: Option<&Url>) -> bool {
        urls.iter().any(|u| Some(u) != me)
    }

    fn me(&self) -> Option<&Url> {
        self.me.as_ref()
    }

    /// The workers to run a plan on now, when some besides this process are live.
    pub(crate) fn spread(&self) -> Option<Vec<Url>> {
        let urls = self.urls();
        Self::has_others(&urls, self.me()).then_some(urls)
    }

    /// Counts a plan run across workers.
    pub(crate) fn count_run(&self) {
        self.runs.fetch_add(1, Ordering::Relaxed);
    }

    /// `builder` with plans cut into stages whose tasks run on `urls`: datafusion-
    /// distributed's planner, this cluster's channels, the settings `ext` every task
    /// carries, how PromQL leaves split into tasks, and Quiver's PromQL codec for `scope`
    /// (first of the codecs on every process, [`MoreCodecs`]).
    pub(crate) fn plan_over(
        &self,
        builder: SessionStateBuilder,
        urls: Vec<Url>,
        scope: &QueryScope,
        ext: QuiverQueryExt,
    ) -> SessionStateBuilder {
        let sorted = routed(&urls);
        let (pace, order) = (self.pace.clone(), sorted.clone());
        builder
            .with_distributed_planner()
            .with_distributed_user_codec(PlanCodec::of(scope))
            .with_distributed_route_tasks_handler(StableRouting(sorted))
            .with_distributed_worker_resolver(Urls(urls))
            .with_distributed_channel_resolver(Channels(self.channels.clone()))
            .with_distributed_option_extension(ext)
            .with_distributed_desired_task_count_handler(leaf_task_count)
            .with_distributed_scale_up_leaf_node_handler(move |ev: ScaleUpLeafNodeEvent| {
                let weights = pace.weights(&order, ev.task_count.max(1));
                leaf_scale_up(ev, &weights)
            })
    }

    /// Of `urls`, the workers that answer within a second (after a failure: the dead one
    /// is left out until membership drops it).
    async fn answering(&self, urls: Vec<Url>) -> Vec<Url> {
        let probes = urls.into_iter().map(|u| async move {
            if Some(&u) == self.me() {
                return Some(u);
            }
            let ok = tokio::time::timeout(Duration::from_secs(1), async {
                let mut c = self.channels.get_worker_client_for_url(&u).await.ok()?;
                c.get_worker_info(GetWorkerInfoRequest {}).await.ok()
            })
            .await
            .ok()
            .flatten()
            .is_some();
            ok.then_some(u)
        });
        futures::future::join_all(probes)
            .await
            .into_iter()
            .flatten()
            .collect()
    }
}

/// A stage's tasks on the workers in URL order, task i on worker i mod n, so a query's
/// slice i lands on the same querier each time it runs and reads that querier's samples
/// cache. (datafusion-distributed's own placement starts at a random worker: each slice
/// then visits every querier in turn and is read cold on each.) A stage of one task is
/// left to datafusion-distributed, which puts it beside its input or on the coordinator.
struct StableRouting(Vec<Url>);

impl RouteTasksHandler for StableRouting {
    fn handle(&self, ev: RouteTasksEvent) -> Option<DfResult<RouteTasksEventResponse>> {
        if ev.task_count <= 1 || self.0.is_empty() {
            return None;
        }
        let urls = (0..ev.task_count)
            .map(|i| self.0[i % self.0.len()].clone())
            .collect();
        Some(Ok(RouteTasksEventResponse::new(urls)))
    }
}

/// The order [`StableRouting`] places tasks in: task i on the i-th URL (mod n).
fn routed(urls: &[Url]) -> Vec<Url> {
    let mut sorted = urls.to_vec();
    sorted.sort();
    sorted
}

/// A fixed list of workers (one attempt's).
struct Urls(Vec<Url>);

impl WorkerResolver for Urls {
    fn get_urls(&self) -> DfResult<Vec<Url>> {
        Ok(self.0.clone())
    }
}

/// The distribution's channels, as the session wants them (owned).
struct Channels(Arc<dyn ChannelResolver + Send + Sync>);

#[async_trait]
impl ChannelResolver for Channels {
    async fn get_worker_client_for_url(&self, url: &Url) -> DfResult<Box<dyn WorkerChannel>> {
        self.0.get_worker_client_for_url(url).await
    }
}

/// The error of a failed distributed run, `Ok` when a second try may succeed: not when the query
/// itself failed here (its limits, its cancellation, an operator's PromQL error on this
/// process) or hit its memory limit; yes when a task failed elsewhere or a querier could
/// not be reached.
fn retryable(e: DataFusionError) -> Result<PromqlError, PromqlError> {
    let here = !worth_retrying(&e);
    match df_error(e) {
        e @ (PromqlError::TooManySamples | PromqlError::Timeout | PromqlError::Canceled) => Err(e),
        e if here => Err(e),
        e => Ok(e),
    }
}

impl Engine {
    /// Runs a lowered plan: across the cluster's queriers when others are live, else in
    /// this process.
    pub(super) async fn run_plan(
        &self,
        plan: &LogicalPlan,
    ) -> Result<Vec<RecordBatch>, PromqlError> {
        let Some((d, urls)) = self.distributes() else {
            return self.run_local(plan).await;
        };
        if d.min_samples > 0 {
            let (session, physical) = self.plan_local(plan).await?;
            if estimated_samples(&physical) < d.min_samples {
                return self.collect_local(&session, physical).await;
            }
        }
        let m = &crate::api::metrics::METRICS;
        let read_before = self.loaded().load(Ordering::Relaxed);
        let e = match self.run_distributed(&d, plan, urls.clone()).await {
            Ok(b) => {
                m.distributed_plans.with_label_values(&["ok"]).inc();
                return Ok(b);
            }
            Err(e) => match retryable(e) {
                Ok(e) => e,
                Err(e) => {
                    m.distributed_plans.with_label_values(&["failed"]).inc();
                    return Err(e);
                }
            },
        };
        // Once more, from the start: what the failed run read does not count.
        self.loaded().store(read_before, Ordering::Relaxed);
        let live = d.answering(urls).await;
        let n = live.len().max(1);
        tracing::warn!(error = %e, workers = n, "a distributed plan failed; running it again");
        let again = if e.to_string().contains("snapshot skew")
            || !Distribution::has_others(&live, d.me())
        {
            self.run_local(plan).await
        } else {
            self.run_distributed(&d, plan, live).await.map_err(df_error)
        };
        match &again {
            // A task's own error (the query's, not a querier's) fails the same way twice:
            // that answer needs no word of a retry.
            Err(e2) if e2.to_string() == e.to_string() => {}
            _ => self.annotator().absorb(
                [format!(
                    "a querier failed while running part of this query ({e}); the query was run again on {n} querier(s)"
                )],
                [],
            ),
        }
        let outcome = if again.is_ok() { "retried" } else { "failed" };
        m.distributed_plans.with_label_values(&[outcome]).inc();
        again
    }

    /// Runs a lowered plan in this process.
    async fn run_local(&self, plan: &LogicalPlan) -> Result<Vec<RecordBatch>, PromqlError> {
        let (session, physical) = self.plan_local(plan).await?;
        self.collect_local(&session, physical).await
    }

    /// A lowered plan's physical plan for this process, and its session.
    pub(super) async fn plan_local(
        &self,
        plan: &LogicalPlan,
    ) -> Result<(SessionContext, Arc<dyn ExecutionPlan>), PromqlError> {
        let session = self.session_for(plan).map_err(df_error)?;
        let physical = session
            .state()
            .create_physical_plan(plan)
            .await
            .map_err(df_error)?;
        Ok((session, physical))
    }

    /// Runs a physical plan of [`Engine::plan_local`].
    async fn collect_local(
        &self,
        session: &SessionContext,
        physical: Arc<dyn ExecutionPlan>,
    ) -> Result<Vec<RecordBatch>, PromqlError> {
        let physical = if self.opts.roundtrip_plans {
            super::codec::roundtrip(self, physical, session).map_err(df_error)?
        } else {
            physical
        };
        datafusion::physical_plan::collect(physical, session.task_ctx())
            .await
            .map_err(df_error)
    }

    /// Whether this query's lowered `plan` runs on other processes now: when others are
    /// live and it reads enough samples for that to pay.
    pub(super) async fn distributes_plan(
        &self,
        plan: &LogicalPlan,
    ) -> Result<Option<(Arc<Distribution>, Vec<Url>)>, PromqlError> {
        let Some((d, urls)) = self.distributes() else {
            return Ok(None);
        };
        if d.min_samples > 0 {
            let (_, physical) = self.plan_local(plan).await?;
            if estimated_samples(&physical) < d.min_samples {
                return Ok(None);
            }
        }
        Ok(Some((d, urls)))
    }

    /// Runs a lowered plan with its tasks spread over `urls`.
    async fn run_distributed(
        &self,
        d: &Distribution,
        plan: &LogicalPlan,
        urls: Vec<Url>,
    ) -> DfResult<Vec<RecordBatch>> {
        d.runs.fetch_add(1, Ordering::Relaxed);
        let order = routed(&urls);
        let session = self.distributed_session(d, urls, plan)?;
        let physical = session.state().create_physical_plan(plan).await?;
        let batches =
            datafusion::physical_plan::collect(physical.clone(), session.task_ctx()).await?;
        let tasks = self.absorb_tasks(&physical).await;
        d.pace.observe(&order, &tasks);
        Ok(batches)
    }

    /// Takes the annotations and samples the remote tasks of an executed plan reported;
    /// answers what each task of a stage of several did ([`super::report::absorb`]).
    pub(super) async fn absorb_tasks(
        &self,
        physical: &Arc<dyn ExecutionPlan>,
    ) -> BTreeMap<usize, TaskWork> {
        let Some(dist) = physical.downcast_ref::<DistributedExec>() else {
            return BTreeMap::new();
        };
        // Metrics arrive once every task has ended; a task that never reports (its
        // worker died after answering) must not hold the answer.
        if tokio::time::timeout(Duration::from_secs(5), dist.wait_for_metrics())
            .await
            .is_err()
        {
            tracing::warn!("tasks' metrics did not all arrive; annotations may be missing");
        }
        match datafusion_distributed::rewrite_distributed_plan_with_metrics(
            physical.clone(),
            DistributedMetricsFormat::PerTask,
        )
        .await
        {
            Ok(p) => super::report::absorb(&p, &self.annotator(), &self.loaded()),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the tasks' metrics");
                BTreeMap::new()
            }
        }
    }

    /// The session of a plan whose tasks run on `urls`: the planner of the local session,
    /// wrapped by datafusion-distributed's, Quiver's codec and the query's settings.
    pub(super) fn distributed_session(
        &self,
        d: &Distribution,
        urls: Vec<Url>,
        plan: &LogicalPlan,
    ) -> DfResult<SessionContext> {
        // At least two partitions: datafusion-distributed cuts stages at repartitions, and
        // a querier on one core (one partition) would plan none, keeping every task home.
        let mut config = SessionConfig::new().with_target_partitions(self.opts.partitions.max(2));
        // Without hash-repartitioned aggregations the final fold follows a coalesce,
        // which datafusion-distributed turns into the tasks' rows sent to the coordinator.
        let fold = d.fold_here || small_aggregations(plan, d.fold_cells);
        config.options_mut().optimizer.repartition_aggregations = !fold;
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(crate::memory::query_pool(self.opts.memory_limit_bytes))
            .build_arc()?;
        let scope = QueryScope::of(self);
        let ext = task_ext(&scope, self.caller_access());
        let builder = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(runtime)
            .with_default_features()
            .with_query_planner(Arc::new(PromQueryPlanner));
        let state = d.plan_over(builder, urls, &scope, ext).build();
        Ok(SessionContext::new_with_state(state))
    }

    /// Whether this query's plans may run on other processes now.
    pub(super) fn distributes(&self) -> Option<(Arc<Distribution>, Vec<Url>)> {
        let d = self.opts.distribution.clone()?;
        let urls = d.urls();
        Distribution::has_others(&urls, d.me()).then_some((d, urls))
    }
}

/// The settings every task of a plan of `scope`'s query carries: the caller, what is
/// left of the query's limits, how far this process has read the WAL, and a fresh id.
pub(crate) fn task_ext(scope: &QueryScope, caller: &crate::auth::Access) -> QuiverQueryExt {
    let mut ext = ext_for(scope, &caller.tenant, &caller.matchers);
    ext.positions = encode_positions(&scope.storage);
    ext.query_id = ulid::Ulid::new().to_string();
    ext
}

/// Whether a distributed run that failed with `e` may succeed once more: not when the
/// query itself failed here (its limits, its cancellation, an operator's error on this
/// process) or hit its memory limit; yes when a task failed elsewhere or a querier could
/// not be reached.
pub(crate) fn worth_retrying(e: &DataFusionError) -> bool {
    match e.find_root() {
        DataFusionError::External(inner) => inner.downcast_ref::<PromqlError>().is_none(),
        DataFusionError::ResourcesExhausted(_) => false,
        _ => true,
    }
}

/// The most cells (groups × steps) of an aggregation whose partial aggregates fold on the
/// coordinator by default. A dashboard's aggregation answers a few groups: folding them
/// where the answer is assembled costs microseconds, where a shuffle stage sends every
/// task's partials to the workers and the folded cells back, one more network exchange and
/// as many more tasks (session 30, the 57.6M-sample `sum by (job)` on two queriers against
/// one: folded 1.52–1.73× and shuffled 1.54–1.64× on one cluster, 1.46–1.49× and
/// 1.50–1.53× on another; within the machine's noise, for two fewer tasks a query).
const FOLD_CELLS: usize = 1 << 16;

/// Whether every aggregation of `plan` answers at most `cells` cells (and it has no
/// DataFusion hash aggregation, which the planner uses only past millions of cells).
fn small_aggregations(plan: &LogicalPlan, cells: usize) -> bool {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    let mut small = cells > 0;
    let _ = plan.apply(|node| {
        match node {
            LogicalPlan::Aggregate(_) => small = false,
            LogicalPlan::Extension(e) => {
                if let Some(a) = e.node.as_any().downcast_ref::<super::step_agg::StepAgg>() {
                    small &= a.cells() <= cells;
                }
            }
            _ => {}
        }
        Ok(if small {
            TreeNodeRecursion::Continue
        } else {
            TreeNodeRecursion::Stop
        })
    });
    small
}

/// Samples the leaves of `plan` read, estimated from the blocks' metadata and the heads.
fn estimated_samples(plan: &Arc<dyn ExecutionPlan>) -> usize {
    let here = plan
        .downcast_ref::<LeafExec>()
        .map_or(0, |leaf| leaf.source.scan().estimated_samples());
    plan.children()
        .into_iter()
        .fold(here, |n, c| n.saturating_add(estimated_samples(c)))
}

/// The storage's position in each shard's WAL (`shard:segment,…`; empty outside a
/// cluster's queriers): a task waits until its own storage has caught up to it.
fn encode_positions(storage: &Storage) -> String {
    storage
        .mirror_positions()
        .into_iter()
        .map(|(s, (last, cp))| format!("{s}:{}", last.max(cp)))
        .collect::<Vec<_>>()
        .join(",")
}

/// Waits until `storage` has read each shard's WAL as far as the coordinator had
/// (`positions`), for at most `within`: a task then reads every sample its coordinator's
/// snapshot held. Errors when it has not caught up by then.
pub(crate) async fn catch_up(
    storage: &Storage,
    positions: &str,
    within: Duration,
) -> Result<(), PromqlError> {
    let mut want = Vec::new();
    for p in positions.split(',').filter(|p| !p.is_empty()) {
        let parsed = p
            .split_once(':')
            .and_then(|(s, q)| Some((s.parse::<u32>().ok()?, q.parse::<u64>().ok()?)));
        match parsed {
            Some(x) => want.push(x),
            None => {
                return Err(PromqlError::exec(format!(
                    "task positions: bad entry {p:?}"
                )));
            }
        }
    }
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let have = storage.mirror_positions();
        let behind = want
            .iter()
            .find(|(s, q)| have.get(s).is_none_or(|&(last, cp)| last.max(cp) < *q));
        let Some((s, q)) = behind else {
            return Ok(());
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(PromqlError::exec(format!(
                "snapshot skew: this querier has not read shard {s} up to segment {q}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Codecs of operators from outside `promql` (SQL's) for a task's scope, registered after
/// Quiver's PromQL codec: the composed codec names an operator's codec by its position,
/// so every process registers the same ones in the same order.
pub(crate) type MoreCodecs = fn(&QueryScope) -> Vec<Arc<dyn PhysicalExtensionCodec>>;

/// A leaf asks for a task per series at most; the planner caps it at the workers.
pub(crate) fn leaf_task_count(
    ev: DesiredTaskCountEvent,
) -> Option<DfResult<DesiredTaskCountEventResponse>> {
    let leaf = ev.plan.downcast_ref::<LeafExec>()?;
    Some(Ok(DesiredTaskCountEventResponse::desired(
        leaf.source.scan().num_series().max(1),
    )))
}

/// A leaf's tasks: slice i on task i, sized by `weights` (one per task,
/// [`Pace::weights`]), the same partitions on all.
pub(crate) fn leaf_scale_up(
    ev: ScaleUpLeafNodeEvent,
    weights: &[f64],
) -> Option<DfResult<ScaleUpLeafNodeEventResponse>> {
    let leaf = ev.plan.downcast_ref::<LeafExec>()?;
    let variants = (0..weights.len().max(1))
        .map(|i| Arc::new(leaf.slice(i, weights)) as Arc<dyn ExecutionPlan>);
    Some(
        DistributedLeafExec::try_new(ev.plan.clone(), variants)
            .map(|p| ScaleUpLeafNodeEventResponse::new(Arc::new(p))),
    )
}

/// The settings a task carries, read from its request's headers.
pub(crate) fn ext_from_headers(headers: &axum::http::HeaderMap) -> DfResult<QuiverQueryExt> {
    let mut ext = QuiverQueryExt::default();
    let prefix = format!("{CONFIG_HEADER_PREFIX}quiver.");
    for (name, value) in headers {
        let Some(key) = name.as_str().strip_prefix(&prefix) else {
            continue;
        };
        let value = value
            .to_str()
            .map_err(|e| DataFusionError::Plan(format!("header {name}: {e}")))?;
        ext.set(key, value)?;
    }
    Ok(ext)
}

/// The session of one task of another process's plan, reading `storage` with the
/// settings `ext` the task carried.
pub(crate) fn worker_session(
    storage: Arc<Storage>,
    ext: &QuiverQueryExt,
    stop: Option<&crate::promql::Cancel>,
    builder: SessionStateBuilder,
    more: MoreCodecs,
) -> DfResult<SessionState> {
    let scope = QueryScope::from_ext(storage, ext, stop)
        .map_err(|e| DataFusionError::External(Box::new(e)))?;
    // DataFusion's own functions and Quiver's: the plan names them, the worker's
    // session must know them.
    let mut aggregates = datafusion::execution::SessionStateDefaults::default_aggregate_functions();
    aggregates.extend(
        [prom_sum(), prom_avg(), prom_max(), prom_min()]
            .into_iter()
            .map(Arc::new),
    );
    // datafusion-distributed's builder has DataFusion's default features already (adding
    // them again logs a line per file format, for every task).
    let mut builder = builder
        .with_aggregate_functions(aggregates)
        .with_distributed_user_codec(PlanCodec::of(&scope));
    for codec in more(&scope) {
        builder = builder.with_distributed_user_codec_arc(codec);
    }
    Ok(builder.build())
}

/// A worker's session for a task, as [`Worker::from_session_builder`] wants it: the
/// tenant's storage from `storage_of`, caught up to the coordinator's snapshot; `stop_of`
/// the query's token on this process, by its id, if it has one.
pub(crate) async fn task_session<F, Fut>(
    ctx: WorkerQueryContext,
    storage_of: F,
    stop_of: impl FnOnce(&str) -> Option<crate::promql::Cancel>,
    more: MoreCodecs,
) -> DfResult<SessionState>
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = Result<Arc<Storage>, PromqlError>>,
{
    let ext = ext_from_headers(&ctx.headers)?;
    let external = |e: PromqlError| DataFusionError::External(Box::new(e));
    let storage = storage_of(ext.tenant.clone()).await.map_err(external)?;
    let within = Duration::from_millis(ext.timeout_ms.min(5_000));
    catch_up(&storage, &ext.positions, within)
        .await
        .map_err(external)?;
    let stop = stop_of(&ext.query_id);
    worker_session(storage, &ext, stop.as_ref(), ctx.builder, more)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use async_trait::async_trait;
    use datafusion_distributed::{ChannelResolver, Worker, WorkerChannel, WorkerResolver, grpc};
    use hyper_util::rt::TokioIo;
    use tonic::transport::{Endpoint, Server};
    use url::Url;

    use super::*;
    use crate::promql::plan::tests::{PLANNED, storage, storage_of};
    use crate::promql::{Engine, QueryOptions};

    /// `n` workers in this process, each behind its own in-memory connection and reading
    /// its own storage (with other catalog ids than the coordinator's).
    #[derive(Clone)]
    struct Workers {
        channels: Arc<HashMap<String, grpc::BoxCloneSyncChannel>>,
    }

    impl Workers {
        fn start(storages: Vec<Arc<Storage>>) -> Workers {
            let mut channels = HashMap::new();
            let mut servers = Vec::new();
            for (i, s) in storages.into_iter().enumerate() {
                let (client, server) = tokio::io::duplex(1 << 20);
                let mut client = Some(client);
                let channel = Endpoint::try_from("http://worker")
                    .unwrap()
                    .connect_with_connector_lazy(tower::service_fn(move |_| {
                        let c = client.take().expect("one connection per worker");
                        async move { Ok::<_, std::io::Error>(TokioIo::new(c)) }
                    }));
                channels.insert(url(i).to_string(), grpc::BoxCloneSyncChannel::new(channel));
                servers.push((s, server));
            }
            let workers = Workers {
                channels: Arc::new(channels),
            };
            for (s, server) in servers {
                let me = workers.clone();
                let worker = Worker::from_session_builder(move |ctx: WorkerQueryContext| {
                    let (s, me) = (s.clone(), me.clone());
                    async move {
                        let ctx = WorkerQueryContext {
                            builder: ctx.builder.with_distributed_channel_resolver(me),
                            headers: ctx.headers,
                        };
                        let sql = crate::sql::task_codecs;
                        task_session(ctx, |_| async move { Ok(s) }, |_| None, sql).await
                    }
                });
                tokio::spawn(async move {
                    Server::builder()
                        .add_service(worker.into_worker_server())
                        .serve_with_incoming(tokio_stream::once(Ok::<_, std::io::Error>(server)))
                        .await
                });
            }
            workers
        }
    }

    fn url(i: usize) -> Url {
        Url::parse(&format!("http://worker-{i}")).unwrap()
    }

    #[async_trait]
    impl ChannelResolver for Workers {
        async fn get_worker_client_for_url(&self, url: &Url) -> DfResult<Box<dyn WorkerChannel>> {
            let ch = self
                .channels
                .get(url.as_str())
                .ok_or_else(|| DataFusionError::Plan(format!("no worker at {url}")))?;
            Ok(grpc::create_worker_client(ch.clone()))
        }
    }

    struct UrlsN(usize);

    impl WorkerResolver for UrlsN {
        fn get_urls(&self) -> DfResult<Vec<Url>> {
            Ok((0..self.0).map(url).collect())
        }
    }

    /// An engine over `a` whose plans may run on `d`'s workers.
    fn engine_over(a: &Arc<Storage>, d: Arc<Distribution>) -> Engine {
        let opts = QueryOptions {
            partitions: 2,
            serial_below: 0,
            distribution: Some(d),
            ..QueryOptions::default()
        };
        Engine::new(a.clone(), opts)
    }

    /// `fold`: partial aggregates fold on the coordinator.
    fn distributed(
        a: &Arc<Storage>,
        workers: &Workers,
        n: usize,
        fold: bool,
    ) -> (Engine, Arc<Distribution>) {
        let d = Arc::new(
            Distribution::new(Arc::new(UrlsN(n)), Arc::new(workers.clone()), None)
                .fold_on_coordinator(fold)
                .fold_below(0),
        );
        (engine_over(a, d.clone()), d)
    }

    /// A stage's tasks go to the workers in URL order, the same way every time (so a
    /// slice meets the querier whose cache holds it); a single task is left to
    /// datafusion-distributed.
    #[test]
    fn tasks_land_on_the_same_workers_every_time() {
        let urls: Vec<Url> = [2, 0, 1].into_iter().map(url).collect();
        let mut sorted = urls.clone();
        sorted.sort();
        let routing = StableRouting(sorted);
        let plan: Arc<dyn ExecutionPlan> =
            Arc::new(datafusion::physical_plan::empty::EmptyExec::new(Arc::new(
                datafusion::arrow::datatypes::Schema::empty(),
            )));
        let route = |task_count| {
            routing.handle(RouteTasksEvent {
                task_ctx: Arc::new(datafusion::execution::TaskContext::default()),
                plan: &plan,
                task_count,
            })
        };
        let placed: Vec<Vec<Url>> = (0..3).map(|_| route(5).unwrap().unwrap().urls).collect();
        let want: Vec<Url> = [0, 1, 2, 0, 1].into_iter().map(url).collect();
        assert!(placed.iter().all(|p| *p == want), "{placed:?}");
        assert!(route(1).is_none());
    }

    /// Statements over the joins, groupings and series ids users write.
    const STATEMENTS: &[&str] = &[
        "SELECT count(*) AS n, sum(value) AS total FROM samples",
        "SELECT s.labels['job'] AS job, count(*) AS n, sum(v.value) AS total, max(v.timestamp) AS last \
         FROM samples v JOIN series s ON v.series_id = s.series_id GROUP BY 1",
        "SELECT series_id, min(value) AS lo, max(value) AS hi FROM samples GROUP BY series_id",
        "SELECT series_id, timestamp, value FROM samples WHERE series_id IN (1, 3) AND timestamp >= 600000",
        "SELECT * FROM series",
        "SELECT metric, labels['instance'] AS instance, avg(value) AS mean FROM samples_labeled \
         WHERE timestamp BETWEEN 300000 AND 2400000 GROUP BY 1, 2",
        "SELECT series_id, timestamp, value - lag(value) OVER (PARTITION BY series_id ORDER BY timestamp) AS d \
         FROM samples",
        "SELECT name, count(*) AS n FROM series_labels GROUP BY name",
    ];

    /// A SQL session over `storage`, its plans spread over `d` when given.
    async fn statement_session(
        storage: &Arc<Storage>,
        d: Option<Arc<Distribution>>,
    ) -> SessionContext {
        let limits = crate::sql::SqlLimits {
            memory_bytes: 1 << 30,
            max_samples: 1_000_000,
            cancel: crate::promql::Cancel::default(),
            spread: d.map(|distribution| crate::sql::Spread {
                distribution,
                caller: crate::auth::Access::unrestricted("default"),
            }),
        };
        crate::sql::session_scoped(storage.clone(), None, Some(limits))
            .await
            .unwrap()
    }

    /// Every row of a statement's answer as text, sorted.
    async fn rows_of(ctx: &SessionContext, q: &str) -> (Vec<String>, Arc<dyn ExecutionPlan>) {
        let df = ctx.sql(q).await.unwrap_or_else(|e| panic!("{q}: {e}"));
        let plan = df.create_physical_plan().await.unwrap();
        let batches = datafusion::physical_plan::collect(plan.clone(), ctx.task_ctx())
            .await
            .unwrap_or_else(|e| panic!("{q}: {e}"));
        let text = crate::sql::render(&batches, crate::sql::OutputFormat::Json).unwrap();
        let mut lines: Vec<String> = text.lines().map(String::from).collect();
        lines.sort();
        (lines, plan)
    }

    /// SQL statements (the ones above and every example in `sql/examples/`) run over 3
    /// workers whose storages give the series other ids answer as the one process does:
    /// their `samples` scans split into tasks, the `series` scan runs on a worker, and the
    /// rows carry the coordinator's series ids wherever they were read.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn statements_run_distributed_over_three_workers() {
        let a = storage().await;
        let workers = Workers::start(vec![
            storage_of(4, (0..8).rev().collect()).await,
            storage_of(1, (0..8).collect()).await,
            storage_of(7, vec![3, 1, 4, 0, 5, 2, 7, 6]).await,
        ]);
        let d = Arc::new(Distribution::new(
            Arc::new(UrlsN(3)),
            Arc::new(workers.clone()),
            None,
        ));
        let here = statement_session(&a, None).await;
        let there = statement_session(&a, Some(d)).await;
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/sql/examples");
        let mut examples: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|f| std::fs::read_to_string(f.unwrap().path()).unwrap())
            .collect();
        examples.sort();
        assert!(examples.len() >= 5, "the examples are read");
        let statements = STATEMENTS
            .iter()
            .map(|q| (q.to_string(), true))
            .chain(examples.into_iter().map(|q| (q, false)));
        for (q, ours) in statements {
            let (want, _) = rows_of(&here, &q).await;
            let (got, plan) = rows_of(&there, &q).await;
            assert_eq!(got, want, "{q}");
            if ours {
                assert!(!want.is_empty(), "{q}: an empty answer proves nothing");
                // A statement over `series` alone is one task: it runs here.
                assert_eq!(
                    plan.downcast_ref::<DistributedExec>().is_some(),
                    q.contains("samples"),
                    "{q}: distributed or not"
                );
            }
        }
        // The join's aggregate shows its stages, the samples scan as 3 tasks.
        let x = crate::sql::explain(&there, STATEMENTS[1], true)
            .await
            .unwrap();
        assert!(
            x.text.contains("Stage") && x.text.contains("t2:"),
            "{}",
            x.text
        );
    }

    /// Every planned query, run over 3 workers whose storages give the series other ids,
    /// answers as the one process does: the same series and values, the same warnings and
    /// infos (found on the workers, handed back in the tasks' metrics), the same samples
    /// read.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn plans_run_distributed_over_three_workers() {
        let a = storage().await;
        let workers = Workers::start(vec![
            storage_of(4, (0..8).rev().collect()).await,
            storage_of(1, (0..8).collect()).await,
            storage_of(7, vec![3, 1, 4, 0, 5, 2, 7, 6]).await,
        ]);
        let mut annotated = 0;
        for q in PLANNED {
            let expr = Engine::parse(q).unwrap();
            // Instant and range, aggregates folded in a shuffle stage or on the coordinator.
            for (start, end, fold) in [
                (3_000_000, 3_000_000, false),
                (0, 3_000_000, false),
                (0, 3_000_000, true),
            ] {
                let here = Engine::new(a.clone(), QueryOptions::default());
                let want = here.range(&expr, start, end, 60_000).await.unwrap();
                let (there, d) = distributed(&a, &workers, 3, fold);
                let got = there
                    .range(&expr, start, end, 60_000)
                    .await
                    .unwrap_or_else(|e| panic!("{q}: {e}"));
                assert!(d.runs() > 0, "{q}: not run distributed");
                // `SHOW_PLAN='<query>'` prints that query's distributed plan.
                if std::env::var("SHOW_PLAN").is_ok_and(|v| v == *q) {
                    let x = there.explain_report(&expr, start, end, 60_000, true).await;
                    eprintln!("{}", x.unwrap().text);
                }
                crate::promqltest::compare_values(want.clone(), got.clone())
                    .unwrap_or_else(|e| panic!("{q} ({start}, {end}): {e}\n{want:?}\n{got:?}"));
                let (wa, ga) = (here.take_annotations(), there.take_annotations());
                assert_eq!(wa, ga, "{q} ({start}, {end}): annotations");
                annotated += usize::from(!wa.infos.is_empty() || !wa.warnings.is_empty());
                let read = |e: &Engine| e.loaded().load(Ordering::Relaxed);
                assert_eq!(read(&here), read(&there), "{q}: samples read");
            }
        }
        assert!(annotated > 0, "no query had annotations to compare");
        let q = Engine::parse("sum by (job) (rate(http_requests[5m]))").unwrap();
        let explained = |fold: bool| {
            let (e, _) = distributed(&a, &workers, 3, fold);
            let q = q.clone();
            async move {
                let x = e.explain_report(&q, 0, 3_000_000, 60_000, true).await;
                x.unwrap().text
            }
        };
        // The plan's leaves ran as 3 tasks, one per worker.
        let text = explained(false).await;
        assert!(text.contains("Stage") && text.contains("t2:"), "{text}");
        // Folded on the coordinator: the tasks' partial sums go straight to it.
        let text = explained(true).await;
        assert!(
            text.contains("mode=Final,") && !text.contains("NetworkShuffleExec"),
            "{text}"
        );
        // A plan reading fewer samples than the distribution's least runs here.
        for (least, spread) in [(usize::MAX, false), (1, true)] {
            let d = Arc::new(
                Distribution::new(Arc::new(UrlsN(3)), Arc::new(workers.clone()), None)
                    .with_min_samples(least)
                    .fold_on_coordinator(true),
            );
            let e = engine_over(&a, d.clone());
            e.range(&q, 0, 3_000_000, 60_000).await.unwrap();
            assert_eq!(d.runs() > 0, spread, "at least {least} samples");
        }
        // Uneven shares (one worker measured at 4x another's speed) answer the same, and
        // every run teaches the distribution each worker's pace.
        let seeded = [(url(0), 2.0), (url(1), 0.5), (url(2), 1.0)];
        let d = Arc::new(
            Distribution::new(Arc::new(UrlsN(3)), Arc::new(workers.clone()), None)
                .with_pace(Pace::eager(&seeded)),
        );
        let tasks = d
            .pace
            .weights(&routed(&(0..3).map(url).collect::<Vec<_>>()), 3);
        assert_eq!(tasks, vec![2.0, 0.5, 1.0]);
        for q in PLANNED {
            let expr = Engine::parse(q).unwrap();
            let here = Engine::new(a.clone(), QueryOptions::default());
            let want = here.range(&expr, 0, 3_000_000, 60_000).await.unwrap();
            let there = engine_over(&a, d.clone());
            let got = there.range(&expr, 0, 3_000_000, 60_000).await.unwrap();
            crate::promqltest::compare_values(want.clone(), got.clone())
                .unwrap_or_else(|e| panic!("{q}, uneven shares: {e}\n{want:?}\n{got:?}"));
        }
        let learned = d.pace.snapshot();
        assert_eq!(learned.len(), 3);
        assert!(
            learned.iter().zip(&seeded).any(|((_, w), (_, s))| w != s),
            "no run was measured: {learned:?}"
        );
        // A querier alone (its own worker the only one live) runs its plans here.
        let alone = Arc::new(Distribution::new(
            Arc::new(UrlsN(1)),
            Arc::new(workers.clone()),
            Some(url(0)),
        ));
        let e = engine_over(&a, alone.clone());
        e.range(&q, 0, 3_000_000, 60_000).await.unwrap();
        assert_eq!(
            alone.runs(),
            0,
            "a lone querier's plan went over the network"
        );
    }
}
