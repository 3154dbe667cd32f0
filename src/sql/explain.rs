//! Explaining a SQL statement as PromQL queries are explained (`quiver explain --sql`,
//! `/api/v1/explain?lang=sql`): its optimized logical plan, its physical plan (cut into
//! stages and tasks when it runs across a cluster's queriers) and, with `analyze`, each
//! operator's rows and time after running it.

use std::time::Instant;

use datafusion::error::Result as DfResult;
use datafusion::execution::context::SQLOptions;
use datafusion::prelude::SessionContext;

use crate::promql::{Explained, Phase, PlanNode, RunStats, phases_line, plan_text};

/// `sql` planned in `ctx` (queries only: no DDL, DML or other statements); `analyze`
/// runs it.
pub async fn explain(ctx: &SessionContext, sql: &str, analyze: bool) -> DfResult<Explained> {
    let options = SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false);
    let ms = |t: Instant| t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    let df = ctx.sql_with_options(sql, options).await?;
    let mut phases = vec![Phase {
        name: "parse and plan",
        ms: ms(t),
    }];
    let state = ctx.state();
    let t = Instant::now();
    let logical = state
        .optimize(df.logical_plan())?
        .display_indent()
        .to_string();
    phases.push(Phase {
        name: "optimize",
        ms: ms(t),
    });
    let t = Instant::now();
    let physical = df.create_physical_plan().await?;
    phases.push(Phase {
        name: "physical planning",
        ms: ms(t),
    });
    let mut text = format!("logical plan:\n{logical}\n\nphysical plan:\n");
    let mut run = None;
    if analyze {
        let started = Instant::now();
        let batches = datafusion::physical_plan::collect(physical.clone(), ctx.task_ctx()).await?;
        let elapsed_ms = ms(started);
        phases.push(Phase {
            name: "execute",
            ms: elapsed_ms,
        });
        let rows = batches.iter().map(|b| b.num_rows()).sum();
        let shown = plan_text(&physical, true).await?;
        text.push_str(&format!(
            "{shown}\nran in {elapsed_ms:.3}ms: {rows} rows\n{}",
            phases_line(&phases)
        ));
        // Series and samples are PromQL's measures; a statement reports its rows.
        run = Some(RunStats {
            elapsed_ms,
            rows,
            series: 0,
            samples_read: 0,
            phases,
        });
    } else {
        text.push_str(&plan_text(&physical, false).await?);
    }
    Ok(Explained {
        planned: true,
        fallback: None,
        logical,
        physical: Some(PlanNode::of(&physical, analyze)),
        run,
        text,
        result: None,
    })
}
