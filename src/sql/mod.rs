//! SQL over the same samples: a DataFusion `SessionContext` with the tables
//!
//! - `series(series_id UInt32, metric Utf8, labels Map<Utf8, Utf8>)` — from the catalog;
//! - `samples(series_id UInt32, timestamp Int64 ms, value Float64)` — head and blocks, with
//!   `timestamp` ranges and `series_id` equalities pushed down to the block scans;
//!
//! plus the views in `sql/views.sql` (e.g. `samples_labeled`).

mod bounded;
mod cancel;
pub mod codec;
mod distributed;
mod explain;
mod lanes;
mod scan;
mod series_scan;
mod tables;

use std::sync::Arc;

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::Result as DfResult;
use datafusion::prelude::{SessionConfig, SessionContext};
use roaring::RoaringBitmap;

use crate::storage::Storage;

pub(crate) use distributed::task_codecs;
pub use explain::explain;
pub use tables::{SamplesTable, SeriesTable};

/// Statistics of a leaf that knows roughly how many rows it emits, split evenly over its
/// partitions: enough for the planner to build joins on the smaller side.
fn estimated_rows(
    schema: &datafusion::arrow::datatypes::Schema,
    rows: usize,
    partitions: usize,
    partition: Option<usize>,
) -> Arc<datafusion::common::Statistics> {
    let rows = match partition {
        Some(_) => rows.div_ceil(partitions.max(1)),
        None => rows,
    };
    Arc::new(
        datafusion::common::Statistics::new_unknown(schema)
            .with_num_rows(datafusion::common::stats::Precision::Inexact(rows)),
    )
}

/// View definitions shipped in `sql/views.sql`.
pub const VIEWS_SQL: &str = include_str!("../../sql/views.sql");

/// Bounds of one SQL session served over HTTP.
#[derive(Debug, Clone)]
pub struct SqlLimits {
    /// DataFusion memory pool (joins, sorts, aggregates), bytes.
    pub memory_bytes: usize,
    /// Samples all scans of `samples` may load.
    pub max_samples: usize,
    /// The query's deadline and cancellation, checked at every batch of every operator.
    pub cancel: crate::promql::Cancel,
    /// The cluster's queriers to run the statement on when others are live (`None`: this
    /// process alone).
    pub spread: Option<Spread>,
}

/// A statement whose plan may run across a cluster's queriers (issue 26): the scans of
/// `samples` split into tasks by series, each task on a querier, its rows under this
/// process's series ids.
#[derive(Clone, Debug)]
pub struct Spread {
    pub distribution: Arc<crate::promql::Distribution>,
    /// Whose statement it is: the tenant and enforced matchers every task carries.
    pub caller: crate::auth::Access,
}

/// A session with Quiver's tables and views registered (no limits: the local CLI).
pub async fn session(storage: Arc<Storage>) -> DfResult<SessionContext> {
    session_scoped(storage, None, None).await
}

/// A session whose tables hold only the `allowed` series (a principal's enforced
/// matchers): the restriction is inside the table providers, so no query can lift it.
pub async fn session_scoped(
    storage: Arc<Storage>,
    allowed: Option<RoaringBitmap>,
    limits: Option<SqlLimits>,
) -> DfResult<SessionContext> {
    let mut config = SessionConfig::new().with_information_schema(true);
    let max_samples = limits.as_ref().map(|l| l.max_samples);
    let ctx = match limits {
        None => SessionContext::new_with_config(config),
        Some(l) => {
            let urls = l.spread.as_ref().and_then(|s| s.distribution.spread());
            if urls.is_some() {
                // Stages are cut at repartitions: one partition would plan none.
                let n = config.target_partitions().max(2);
                config = config.with_target_partitions(n);
            }
            let runtime = datafusion::execution::runtime_env::RuntimeEnvBuilder::new()
                .with_memory_pool(crate::memory::query_pool(l.memory_bytes))
                .build_arc()?;
            let mut builder = datafusion::execution::SessionStateBuilder::new()
                .with_config(config)
                .with_runtime_env(runtime)
                .with_default_features()
                .with_physical_optimizer_rule(Arc::new(cancel::CancelRule {
                    cancel: l.cancel.clone(),
                }));
            if let (Some(spread), Some(urls)) = (&l.spread, urls) {
                let scope = crate::promql::scope::QueryScope::of_statement(
                    storage.clone(),
                    allowed.clone(),
                    l.max_samples,
                    l.cancel.clone(),
                );
                builder = distributed::plan_over(builder, spread, urls, &scope);
            }
            let ctx = SessionContext::new_with_state(builder.build());
            bounded::register(&ctx);
            ctx
        }
    };
    let allowed = allowed.map(Arc::new);
    ctx.register_table(
        "series",
        Arc::new(SeriesTable::new(storage.clone()).restrict(allowed.clone())),
    )?;
    for (name, lane) in [
        ("histograms", lanes::Lane::Histograms),
        ("exemplars", lanes::Lane::Exemplars),
    ] {
        ctx.register_table(
            name,
            Arc::new(lanes::LaneTable::new(
                lane,
                storage.clone(),
                allowed.clone(),
                max_samples,
            )),
        )?;
    }
    ctx.register_table(
        "samples",
        Arc::new(
            SamplesTable::new(storage)
                .restrict(allowed)
                .limit_samples(max_samples),
        ),
    )?;
    for stmt in VIEWS_SQL
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty() && !is_comment_only(s))
    {
        ctx.sql(stmt).await?.collect().await?;
    }
    Ok(ctx)
}

fn is_comment_only(s: &str) -> bool {
    s.lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with("--"))
}

/// Runs one statement and collects its batches.
pub async fn query(ctx: &SessionContext, sql: &str) -> DfResult<Vec<RecordBatch>> {
    ctx.sql(sql).await?.collect().await
}

/// Output formats of `quiver sql`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Table,
    Csv,
    Json,
}

/// Renders batches for the terminal.
pub fn render(batches: &[RecordBatch], format: OutputFormat) -> anyhow::Result<String> {
    use datafusion::arrow::{csv, json};
    Ok(match format {
        OutputFormat::Table => {
            datafusion::arrow::util::pretty::pretty_format_batches(batches)?.to_string()
        }
        OutputFormat::Csv => {
            let mut buf = Vec::new();
            {
                let mut w = csv::WriterBuilder::new().with_header(true).build(&mut buf);
                for b in batches {
                    w.write(b)?;
                }
            }
            String::from_utf8(buf)?
        }
        OutputFormat::Json => {
            let mut buf = Vec::new();
            {
                let mut w = json::LineDelimitedWriter::new(&mut buf);
                for b in batches {
                    w.write(b)?;
                }
                w.finish()?;
            }
            String::from_utf8(buf)?
        }
    })
}
