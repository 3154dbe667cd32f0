//! Explaining a lowered query: its logical plan, its physical plan as a tree of operators
//! (what the CLI prints and what `/api/v1/explain` answers as JSON for the query page),
//! and with `analyze` each operator's rows and compute time after running it.

use std::sync::Arc;
use std::time::Instant;

use datafusion::physical_plan::display::DisplayableExecutionPlan;
use datafusion::physical_plan::{ExecutionPlan, displayable};
use promql_parser::parser::Expr;
use serde::Serialize;

use super::{Ctx, assemble, df_error};
use crate::promql::{Engine, PromqlError};

/// A query explained.
#[derive(Debug, Clone, Serialize)]
pub struct Explained {
    /// Whether the whole query is one DataFusion plan.
    pub planned: bool,
    /// Why not, when it is not (the evaluator runs that node).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
    /// The optimized logical plan, indented.
    pub logical: String,
    /// The physical plan, root first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub physical: Option<PlanNode>,
    /// With `analyze`: what running the plan took and gave.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run: Option<RunStats>,
    /// Everything above as text (what `quiver explain` prints).
    pub text: String,
    /// With `analyze`: the answer, for the caller to time its encoding (not sent).
    #[serde(skip)]
    pub result: Option<Vec<crate::promql::Series>>,
}

impl Explained {
    /// Adds a phase the caller timed (the JSON encoding of the answer) to the run and its
    /// line in the text.
    pub fn add_phase(&mut self, name: &'static str, ms: f64) {
        let Some(run) = self.run.as_mut() else {
            return;
        };
        let old = phases_line(&run.phases);
        run.phases.push(Phase { name, ms });
        self.text = self.text.replace(&old, &phases_line(&run.phases));
    }
}

/// `phases: parse 0.010ms, lower 0.050ms, …`.
pub(crate) fn phases_line(phases: &[Phase]) -> String {
    let each: Vec<String> = phases
        .iter()
        .map(|p| format!("{} {:.3}ms", p.name, p.ms))
        .collect();
    format!("phases: {}\n", each.join(", "))
}

/// One physical operator.
#[derive(Debug, Clone, Serialize)]
pub struct PlanNode {
    /// The operator, e.g. `AggregateExec`.
    pub name: String,
    /// Its one-line description (the operator's own display).
    pub detail: String,
    /// With `analyze`: rows it produced, summed over its partitions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_rows: Option<usize>,
    /// With `analyze`: CPU time spent in it, summed over partitions, in nanoseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub elapsed_compute_ns: Option<usize>,
    pub children: Vec<PlanNode>,
}

/// A plan's run under `analyze`.
#[derive(Debug, Clone, Serialize)]
pub struct RunStats {
    pub elapsed_ms: f64,
    pub rows: usize,
    pub series: usize,
    pub samples_read: usize,
    /// Where a query's time goes, in order: parsing its text, lowering it to a logical
    /// plan, optimizing that, physical planning, running the plan, assembling the rows
    /// into series, and (added by the API or the CLI) encoding the answer as JSON.
    pub phases: Vec<Phase>,
}

/// One phase of a query and its wall time.
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    pub name: &'static str,
    pub ms: f64,
}

impl PlanNode {
    pub(crate) fn of(plan: &Arc<dyn ExecutionPlan>, analyzed: bool) -> PlanNode {
        let metrics = analyzed
            .then(|| plan.metrics())
            .flatten()
            .map(|m| m.aggregate_by_name());
        let detail = displayable(plan.as_ref()).one_line().to_string();
        // The displayed name: one Rust type can show as several operators (Quiver's
        // leaves are one `LeafExec` showing as `VectorSelectExec`, `RangeFnExec`, ...).
        let shown = detail.split(':').next().unwrap_or_default().trim();
        let name = if !shown.is_empty() && shown.bytes().all(|b| b.is_ascii_alphanumeric()) {
            shown.to_string()
        } else {
            plan.name().to_string()
        };
        PlanNode {
            name,
            detail: detail.trim().into(),
            output_rows: metrics.as_ref().and_then(|m| m.output_rows()),
            elapsed_compute_ns: metrics.as_ref().and_then(|m| m.elapsed_compute()),
            children: plan
                .children()
                .into_iter()
                .map(|c| PlanNode::of(c, analyzed))
                .collect(),
        }
    }
}

/// A physical plan as text: cut into stages and tasks when datafusion-distributed
/// planned it, each operator with its metrics once `analyzed` (run).
pub(crate) async fn plan_text(
    physical: &Arc<dyn ExecutionPlan>,
    analyzed: bool,
) -> datafusion::error::Result<String> {
    let distributed = physical
        .downcast_ref::<datafusion_distributed::DistributedExec>()
        .is_some();
    Ok(match (distributed, analyzed) {
        (true, true) => {
            datafusion_distributed::explain_analyze(
                physical.clone(),
                datafusion_distributed::DistributedMetricsFormat::PerTask,
            )
            .await?
        }
        (true, false) => datafusion_distributed::display_plan_ascii(physical.as_ref(), false),
        (false, true) => DisplayableExecutionPlan::with_metrics(physical.as_ref())
            .indent(true)
            .to_string(),
        (false, false) => displayable(physical.as_ref()).indent(true).to_string(),
    })
}

impl Engine {
    /// The logical and physical plans of `expr`, when it lowers; `analyze` runs the plan
    /// and records each operator's metrics.
    pub(in crate::promql) async fn explain_planned(
        &self,
        expr: &Expr,
        ctx: Ctx,
        analyze: bool,
    ) -> Result<Option<Explained>, PromqlError> {
        let ms = |t: Instant| t.elapsed().as_secs_f64() * 1e3;
        // The caller parsed the query already; parsing its canonical text again times
        // that phase.
        let t = Instant::now();
        let _ = promql_parser::parser::parse(&expr.to_string());
        let mut phases = vec![Phase {
            name: "parse",
            ms: ms(t),
        }];
        let t = Instant::now();
        let Some(lowered) = self.lower(expr, ctx)? else {
            return Ok(None);
        };
        phases.push(Phase {
            name: "lower",
            ms: ms(t),
        });
        // A querier with live peers explains the plan it would run: stages, their tasks
        // and, once analyzed, where each ran.
        let distributed = self.distributes_plan(&lowered.plan).await?;
        let t = Instant::now();
        let session = match &distributed {
            Some((d, urls)) => self.distributed_session(d, urls.clone(), &lowered.plan),
            None => self.session_for(&lowered.plan),
        }
        .map_err(df_error)?;
        phases.push(Phase {
            name: "session",
            ms: ms(t),
        });
        let state = session.state();
        let t = Instant::now();
        let optimized = state.optimize(&lowered.plan).map_err(df_error)?;
        phases.push(Phase {
            name: "optimize",
            ms: ms(t),
        });
        // Optimizes again, as running a query does (planning includes it).
        let t = Instant::now();
        let physical = state
            .create_physical_plan(&lowered.plan)
            .await
            .map_err(df_error)?;
        phases.push(Phase {
            name: "physical planning",
            ms: ms(t),
        });
        let logical = optimized.display_indent().to_string();
        let mut text = String::new();
        if self.too_small_to_plan(&lowered.plan) {
            let below = self.opts.evaluate_below;
            text.push_str(&format!(
                "a query runs this in the step-vector evaluator: its leaves' estimated work ({}) is below --query-evaluate-below ({below}); below is the plan it would run\n\n",
                super::leaf_work(&lowered.plan, below),
            ));
        }
        text.push_str(&format!("logical plan:\n{logical}\n\nphysical plan:\n"));
        let mut run = None;
        let mut result = None;
        if analyze {
            let started = Instant::now();
            let batches = datafusion::physical_plan::collect(physical.clone(), session.task_ctx())
                .await
                .map_err(df_error)?;
            self.absorb_tasks(&physical).await;
            let elapsed_ms = ms(started);
            phases.push(Phase {
                name: "execute",
                ms: elapsed_ms,
            });
            let t = Instant::now();
            let series = assemble(&lowered.series, ctx.steps.len(), &batches)?;
            phases.push(Phase {
                name: "assemble",
                ms: ms(t),
            });
            let stats = RunStats {
                elapsed_ms,
                rows: batches.iter().map(|b| b.num_rows()).sum(),
                series: series.len(),
                samples_read: self.loaded().load(std::sync::atomic::Ordering::Relaxed),
                phases,
            };
            text.push_str(&format!(
                "{}\nran in {:.3}ms: {} rows, {} series, {} samples read\n{}",
                plan_text(&physical, true).await.map_err(df_error)?,
                stats.elapsed_ms,
                stats.rows,
                stats.series,
                stats.samples_read,
                phases_line(&stats.phases),
            ));
            run = Some(stats);
            result = Some(series);
        } else {
            text.push_str(&plan_text(&physical, false).await.map_err(df_error)?);
        }
        Ok(Some(Explained {
            planned: true,
            fallback: None,
            logical,
            physical: Some(PlanNode::of(&physical, analyze)),
            run,
            text,
            result,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tree names the operators the text shows, and `analyze` fills in rows at every
    /// operator: the root's rows are the answer's.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tree_and_metrics() {
        let e = Engine::new(super::super::tests::storage().await, Default::default());
        let expr = Engine::parse("sum by (job) (rate(http_requests[10m]))").unwrap();
        let (start, end, step) = (600_000, 1_200_000, 300_000);
        let plain = e
            .explain_report(&expr, start, end, step, false)
            .await
            .unwrap();
        assert!(plain.planned && plain.run.is_none());
        let root = plain.physical.as_ref().unwrap();
        assert!(root.output_rows.is_none());
        fn walk(n: &PlanNode, out: &mut Vec<String>) {
            out.push(n.name.clone());
            n.children.iter().for_each(|c| walk(c, out));
        }
        let mut names = vec![];
        walk(root, &mut names);
        assert!(names.iter().any(|n| n == "StepAggExec"), "{names:?}");
        for n in &names {
            assert!(plain.text.contains(n.as_str()), "{n} not in {}", plain.text);
        }
        let mut analyzed = e
            .explain_report(&expr, start, end, step, true)
            .await
            .unwrap();
        // Every phase is timed and named on one line of the text; a phase the caller
        // times (the JSON) joins that line.
        assert_eq!(analyzed.result.as_ref().map(Vec::len), Some(2));
        analyzed.add_phase("json", 0.25);
        let run = analyzed.run.as_ref().unwrap();
        let names: Vec<&str> = run.phases.iter().map(|p| p.name).collect();
        assert_eq!(
            names,
            [
                "parse",
                "lower",
                "session",
                "optimize",
                "physical planning",
                "execute",
                "assemble",
                "json"
            ]
        );
        assert_eq!(run.phases[5].ms, run.elapsed_ms);
        let line = analyzed
            .text
            .lines()
            .find(|l| l.starts_with("phases: parse "))
            .unwrap();
        assert!(line.ends_with(", json 0.250ms"), "{line}");
        // Two jobs × three steps.
        assert_eq!((run.series, run.rows), (2, 6));
        assert_eq!(analyzed.physical.unwrap().output_rows, Some(run.rows));
        assert!(run.samples_read > 0);
    }
}
