//! What a task of another process's plan hands back besides rows: the annotations its
//! operators found and the samples its leaves read. A task's scope (annotator, counter)
//! ends with the task, so each reporting operator writes them into its own metrics when a
//! partition ends, as labelled counters; datafusion-distributed sends every task's metrics
//! to the coordinator, which [`absorb`]s them into the query's annotator and sample count.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::metrics::{
    ExecutionPlanMetricsSet, Label, MetricBuilder, MetricValue,
};
use datafusion_distributed::NetworkBoundaryExt;

use crate::promql::kernels::annotations::Annotator;

/// The counter of one annotation (its text in a label).
const ANNOTATION: &str = "quiver_annotation";
const WARNING_LABEL: &str = "quiver_warning";
const INFO_LABEL: &str = "quiver_info";
/// The counter of samples read.
const SAMPLES: &str = "quiver_samples";

/// Writes what `annotator` collected so far, and `samples` read, into `metrics` as
/// partition `partition`'s counters.
pub(super) fn report(
    metrics: &ExecutionPlanMetricsSet,
    partition: usize,
    annotator: &Annotator,
    samples: usize,
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
    if samples > 0 {
        MetricBuilder::new(metrics)
            .counter(SAMPLES, partition)
            .add(samples);
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
/// query's annotator and counter.
pub(crate) fn absorb(plan: &Arc<dyn ExecutionPlan>, annotator: &Annotator, loaded: &AtomicUsize) {
    let (mut warnings, mut infos, mut samples) = (Vec::new(), Vec::new(), 0usize);
    let mut stack = vec![plan.clone()];
    while let Some(p) = stack.pop() {
        if let Some(ms) = p.metrics() {
            for m in ms.iter() {
                let MetricValue::Count { name, count } = m.value() else {
                    continue;
                };
                if name == SAMPLES {
                    samples += count.value();
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
}
