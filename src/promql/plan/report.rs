//! What a task of another process's plan hands back besides rows: the annotations its
//! operators found and the samples its leaves read. A task's scope (annotator, counter)
//! ends with the task, so each reporting operator writes them into its own metrics when a
//! partition ends, as labelled counters; datafusion-distributed sends every task's metrics
//! to the coordinator, which [`absorb`]s them into the query's annotator and sample count.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::metrics::{
    ExecutionPlanMetricsSet, Label, MetricBuilder, MetricValue,
};
use datafusion_distributed::{DISTRIBUTED_DATAFUSION_TASK_ID_LABEL, NetworkBoundaryExt};

use super::pace::TaskWork;
use crate::promql::kernels::annotations::Annotator;

/// The counter of one annotation (its text in a label).
const ANNOTATION: &str = "quiver_annotation";
const WARNING_LABEL: &str = "quiver_warning";
const INFO_LABEL: &str = "quiver_info";
/// The counter of samples read.
const SAMPLES: &str = "quiver_samples";
/// A leaf partition's wall time from its stream's first poll to its end, µs.
const WALL: &str = "quiver_leaf_wall_us";

/// Writes what `annotator` collected so far, and the samples read and how long that took
/// (`work`), into `metrics` as partition `partition`'s counters.
pub(super) fn report(
    metrics: &ExecutionPlanMetricsSet,
    partition: usize,
    annotator: &Annotator,
    work: TaskWork,
) {
    let found = annotator.take();
    for (label, texts) in [(WARNING_LABEL, found.warnings), (INFO_LABEL, found.infos)] {
        for text in texts {
            MetricBuilder::new(metrics)
                .with_label(Label::new(label, text))
                .counter(ANNOTATION, partition)
                .add(1);
        }
    }
    if work.samples > 0 {
        MetricBuilder::new(metrics)
            .counter(SAMPLES, partition)
            .add(work.samples as usize);
    }
    if work.wall_us > 0 {
        MetricBuilder::new(metrics)
            .counter(WALL, partition)
            .add(work.wall_us as usize);
    }
}

/// A partition stream of another process's plan running here: counted while it lives
/// (`quiver_worker_streams`), so a query its coordinator abandoned shows whether its
/// work here stopped.
pub(super) struct Running;

impl Running {
    pub(super) fn start() -> Running {
        crate::api::metrics::METRICS.worker_streams.inc();
        Running
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        crate::api::metrics::METRICS.worker_streams.dec();
    }
}

/// `stream`, then `last` run once it has ended (a consumer stops at an error, and the
/// query with it, so nothing is reported then).
pub(super) fn then<S, T, E>(
    stream: S,
    last: Option<impl FnOnce() + Send + 'static>,
) -> impl futures::Stream<Item = Result<T, E>> + Send
where
    S: futures::Stream<Item = Result<T, E>> + Send,
    T: Send,
    E: Send,
{
    use futures::StreamExt;
    let tail = futures::stream::once(async move {
        if let Some(f) = last {
            f();
        }
    })
    .filter_map(|()| async { None });
    stream.chain(tail)
}

/// Takes every reported annotation and sample count from an executed plan's metrics
/// (every stage's, each task's, as datafusion-distributed gathered them) into the
/// query's annotator and counter. Answers what each task of a stage of several did
/// (by task id; a task's leaves' samples, and their wall times, the longest partition of
/// each leaf, summed over leaves), for [`super::pace`].
pub(crate) fn absorb(
    plan: &Arc<dyn ExecutionPlan>,
    annotator: &Annotator,
    loaded: &AtomicUsize,
) -> BTreeMap<usize, TaskWork> {
    let (mut warnings, mut infos, mut samples) = (Vec::new(), Vec::new(), 0usize);
    let mut tasks: BTreeMap<usize, TaskWork> = BTreeMap::new();
    let mut stack = vec![plan.clone()];
    while let Some(p) = stack.pop() {
        if let Some(ms) = p.metrics() {
            let mut here: BTreeMap<usize, TaskWork> = BTreeMap::new();
            for m in ms.iter() {
                let MetricValue::Count { name, count } = m.value() else {
                    continue;
                };
                let task = m
                    .labels()
                    .iter()
                    .find(|l| l.name() == DISTRIBUTED_DATAFUSION_TASK_ID_LABEL)
                    .and_then(|l| l.value().parse::<usize>().ok());
                if name == SAMPLES {
                    samples += count.value();
                    if let Some(t) = task {
                        here.entry(t).or_default().samples += count.value() as u64;
                    }
                } else if name == WALL {
                    if let Some(t) = task {
                        let w = &mut here.entry(t).or_default().wall_us;
                        *w = (*w).max(count.value() as u64);
                    }
                } else if name == ANNOTATION {
                    for l in m.labels() {
                        match l.name() {
                            WARNING_LABEL => warnings.push(l.value().to_string()),
                            INFO_LABEL => infos.push(l.value().to_string()),
                            _ => {}
                        }
                    }
                }
            }
            // A stage of one task is placed by datafusion-distributed, not task i on
            // querier i: only stages of several say which querier was how fast.
            if here.keys().any(|&t| t > 0) {
                for (t, w) in here {
                    let e = tasks.entry(t).or_default();
                    e.samples += w.samples;
                    e.wall_us += w.wall_us;
                }
            }
        }
        if let Some(nb) = p.as_network_boundary() {
            if let Some(stage) = nb.input_stage().local_plan() {
                stack.push(stage.clone());
            }
            continue;
        }
        stack.extend(p.children().into_iter().cloned());
    }
    annotator.absorb(warnings, infos);
    loaded.fetch_add(samples, Ordering::Relaxed);
    tasks
}
