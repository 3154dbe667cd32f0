//! One PromQL plan on several processes, with datafusion-distributed (issue 26): how a
//! leaf becomes tasks (one slice of whole series each, [`LeafExec::slice`]), and the
//! session a worker builds for a task of another process's plan (Quiver's codec in the
//! task's [`QueryScope`], rebuilt from the settings the task carries, and Quiver's
//! aggregate functions, which the composed codec does not carry).

use std::sync::Arc;

use datafusion::common::config::ExtensionOptions;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::SessionState;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_distributed::{
    DesiredTaskCountEvent, DesiredTaskCountEventResponse, DistributedExt, DistributedLeafExec,
    ScaleUpLeafNodeEvent, ScaleUpLeafNodeEventResponse, WorkerQueryContext,
};

use super::codec::PlanCodec;
use super::leaf::LeafExec;
use super::udaf::{prom_avg, prom_max, prom_min, prom_sum};
use crate::promql::scope::{QueryScope, QuiverQueryExt};
use crate::storage::Storage;

/// Where datafusion-distributed sends a session's config extensions (gRPC metadata).
const CONFIG_HEADER_PREFIX: &str = "x-datafusion-distributed-config-";

/// A leaf asks for a task per series at most; the planner caps it at the workers.
#[cfg_attr(
    not(test),
    expect(dead_code, reason = "queriers do not serve as workers yet (issue 26)")
)]
pub(crate) fn leaf_task_count(
    ev: DesiredTaskCountEvent,
) -> Option<DfResult<DesiredTaskCountEventResponse>> {
    let leaf = ev.plan.downcast_ref::<LeafExec>()?;
    Some(Ok(DesiredTaskCountEventResponse::desired(
        leaf.source.scan().num_series().max(1),
    )))
}

/// A leaf's tasks: slice i of n on task i, the same partitions on all.
#[cfg_attr(
    not(test),
    expect(dead_code, reason = "queriers do not serve as workers yet (issue 26)")
)]
pub(crate) fn leaf_scale_up(
    ev: ScaleUpLeafNodeEvent,
) -> Option<DfResult<ScaleUpLeafNodeEventResponse>> {
    let leaf = ev.plan.downcast_ref::<LeafExec>()?;
    let n = ev.task_count.max(1);
    let variants = (0..n).map(|i| Arc::new(leaf.slice(i, n)) as Arc<dyn ExecutionPlan>);
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

/// The session of one task of another process's plan, reading `storage`.
#[cfg_attr(
    not(test),
    expect(dead_code, reason = "queriers do not serve as workers yet (issue 26)")
)]
pub(crate) async fn worker_session(
    storage: Arc<Storage>,
    ctx: WorkerQueryContext,
) -> DfResult<SessionState> {
    let ext = ext_from_headers(&ctx.headers)?;
    let scope =
        QueryScope::from_ext(storage, &ext).map_err(|e| DataFusionError::External(Box::new(e)))?;
    // DataFusion's own functions and Quiver's: the plan names them, the worker's
    // session must know them.
    let mut aggregates = datafusion::execution::SessionStateDefaults::default_aggregate_functions();
    aggregates.extend(
        [prom_sum(), prom_avg(), prom_max(), prom_min()]
            .into_iter()
            .map(Arc::new),
    );
    Ok(ctx
        .builder
        .with_default_features()
        .with_aggregate_functions(aggregates)
        .with_distributed_user_codec(PlanCodec::of(&scope))
        .build())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use async_trait::async_trait;
    use datafusion::execution::SessionStateBuilder;
    use datafusion::prelude::{SessionConfig, SessionContext};
    use datafusion_distributed::{
        ChannelResolver, SessionStateBuilderExt, Worker, WorkerChannel, WorkerResolver, grpc,
    };
    use hyper_util::rt::TokioIo;
    use tonic::transport::{Endpoint, Server};
    use url::Url;

    use super::*;
    use crate::promql::engine::Ctx;
    use crate::promql::plan::tests::{PLANNED, storage, storage_of};
    use crate::promql::plan::{PromQueryPlanner, assemble, value_order};
    use crate::promql::scope::ext_for;
    use crate::promql::{Engine, QueryOptions, Steps, Value};

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
                        worker_session(s, ctx).await
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

    struct Urls(usize);

    impl WorkerResolver for Urls {
        fn get_urls(&self) -> DfResult<Vec<Url>> {
            Ok((0..self.0).map(url).collect())
        }
    }

    /// `q` planned on `a`, run distributed over the workers, assembled with `a`'s series.
    async fn distributed(
        a: &Arc<Storage>,
        workers: &Workers,
        n: usize,
        q: &str,
        (start, end): (i64, i64),
    ) -> Result<(Value, String), String> {
        let opts = QueryOptions {
            partitions: 2,
            ..QueryOptions::default()
        };
        let ea = Engine::new(a.clone(), opts.clone());
        let expr = Engine::parse(q).unwrap();
        let ctx = Ctx {
            steps: Steps::new(start, end, 60_000),
            query_start: start,
            query_end: end,
            lookback: opts.lookback_ms,
            is_range: start != end,
            query_step: if start == end { 0 } else { 60_000 },
        };
        let lowered = ea.lower(&expr, ctx).unwrap().expect("planned");
        let ext = ext_for(&QueryScope::of(&ea), "default", &[]);
        let state = SessionStateBuilder::new()
            .with_config(SessionConfig::new().with_target_partitions(2))
            .with_default_features()
            .with_query_planner(Arc::new(PromQueryPlanner))
            .with_distributed_planner()
            .with_distributed_worker_resolver(Urls(n))
            .with_distributed_channel_resolver(workers.clone())
            .with_distributed_user_codec(PlanCodec::new(&ea))
            .with_distributed_option_extension(ext)
            .with_distributed_desired_task_count_handler(leaf_task_count)
            .with_distributed_scale_up_leaf_node_handler(leaf_scale_up)
            .build();
        let session = SessionContext::new_with_state(state);
        let plan = session
            .state()
            .create_physical_plan(&lowered.plan)
            .await
            .map_err(|e| e.to_string())?;
        let shown = datafusion_distributed::display_plan_ascii(plan.as_ref(), false);
        let batches = datafusion::physical_plan::collect(plan, session.task_ctx())
            .await
            .map_err(|e| super::super::df_error(e).to_string())?;
        let mut out =
            assemble(&lowered.series, ctx.steps.len(), &batches).map_err(|e| e.to_string())?;
        value_order(&expr, &mut out);
        Ok((Value::Vector(out), shown))
    }

    /// Every planned query, run over 3 workers whose storages give the series other ids,
    /// answers as the one process does.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn plans_run_distributed_over_three_workers() {
        let a = storage().await;
        let workers = Workers::start(vec![
            storage_of(4, (0..8).rev().collect()).await,
            storage_of(1, (0..8).collect()).await,
            storage_of(7, vec![3, 1, 4, 0, 5, 2, 7, 6]).await,
        ]);
        let mut shown_tasks = false;
        for q in PLANNED {
            for range in [(3_000_000, 3_000_000), (0, 3_000_000)] {
                let e = Engine::new(a.clone(), QueryOptions::default());
                let want = e
                    .range(&Engine::parse(q).unwrap(), range.0, range.1, 60_000)
                    .await
                    .unwrap();
                let (got, shown) = distributed(&a, &workers, 3, q, range)
                    .await
                    .unwrap_or_else(|e| panic!("{q}: {e}"));
                shown_tasks |= shown.contains("tasks=3");
                // `SHOW_PLAN='<query>'` prints that query's distributed plan.
                if std::env::var("SHOW_PLAN").is_ok_and(|v| v == *q) {
                    eprintln!("{shown}");
                }
                crate::promqltest::compare_values(want.clone(), got.clone())
                    .unwrap_or_else(|e| panic!("{q} {range:?}: {e}\n{shown}\n{want:?}\n{got:?}"));
            }
        }
        assert!(shown_tasks, "no stage ran as 3 tasks");
    }
}
