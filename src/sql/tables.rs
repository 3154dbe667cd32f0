use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::datasource::TableType;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use roaring::RoaringBitmap;

use crate::storage::{Snapshot, Storage};

pub(super) fn series_schema() -> SchemaRef {
    let map = DataType::Map(
        Arc::new(Field::new(
            "entries",
            DataType::Struct(
                vec![
                    Field::new("keys", DataType::Utf8, false),
                    Field::new("values", DataType::Utf8, true),
                ]
                .into(),
            ),
            false,
        )),
        false,
    );
    Arc::new(Schema::new(vec![
        Field::new("series_id", DataType::UInt32, false),
        Field::new("metric", DataType::Utf8, true),
        Field::new("labels", map, false),
    ]))
}

pub(super) fn samples_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("series_id", DataType::UInt32, false),
        Field::new("timestamp", DataType::Int64, false),
        Field::new("value", DataType::Float64, false),
    ]))
}

/// `series`: every series the catalog knows (head and loaded blocks), streamed.
pub struct SeriesTable {
    storage: Arc<Storage>,
    allowed: Option<Arc<RoaringBitmap>>,
}

impl SeriesTable {
    pub fn new(storage: Arc<Storage>) -> Self {
        SeriesTable {
            storage,
            allowed: None,
        }
    }

    /// Only these series are in the table.
    pub fn restrict(mut self, allowed: Option<Arc<RoaringBitmap>>) -> Self {
        self.allowed = allowed;
        self
    }
}

#[async_trait]
impl TableProvider for SeriesTable {
    fn schema(&self) -> SchemaRef {
        series_schema()
    }
    fn table_type(&self) -> TableType {
        TableType::Base
    }
    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        Ok(filters.iter().map(|f| pushdown_kind(f)).collect())
    }
    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let (p, _) = pushed(filters);
        let catalog = self.storage.catalog();
        let live = catalog.live();
        let mut ids = match p.ids {
            Some(ids) => ids & &live,
            None => live,
        };
        if let Some(a) = &self.allowed {
            ids &= a.as_ref();
        }
        let projection = projection
            .cloned()
            .unwrap_or_else(|| (0..series_schema().fields().len()).collect());
        Ok(Arc::new(super::series_scan::SeriesScanExec::new(
            catalog.clone(),
            ids.iter().collect(),
            series_schema(),
            projection,
            state.config().target_partitions(),
        )?))
    }
}

/// `samples`: head and block samples, deduplicated, with pushdown of time and series filters.
pub struct SamplesTable {
    storage: Arc<Storage>,
    allowed: Option<Arc<RoaringBitmap>>,
    /// Samples all scans of this table together may load (`None`: unlimited), and how many
    /// they have loaded: a scan still materialises its selection, so this bounds memory.
    budget: Option<(usize, Arc<std::sync::atomic::AtomicUsize>)>,
    /// The storage as the session's first scan found it: every scan of the table (a
    /// self-join, a subquery) reads this one snapshot. Quiver makes a session per statement.
    snapshot: std::sync::OnceLock<Snapshot>,
}

impl SamplesTable {
    pub fn new(storage: Arc<Storage>) -> Self {
        SamplesTable {
            storage,
            allowed: None,
            budget: None,
            snapshot: Default::default(),
        }
    }

    /// At most `max` samples over all scans (self-joins scan the table more than once).
    pub fn limit_samples(mut self, max: Option<usize>) -> Self {
        self.budget = max.map(|m| (m, Arc::default()));
        self
    }

    /// Only samples of these series are in the table.
    pub fn restrict(mut self, allowed: Option<Arc<RoaringBitmap>>) -> Self {
        self.allowed = allowed;
        self
    }
}

/// What the filters let us skip.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Pushdown {
    pub(super) min_t: i64,
    pub(super) max_t: i64,
    pub(super) ids: Option<RoaringBitmap>,
}

fn lit_i64(e: &Expr) -> Option<i64> {
    match e {
        Expr::Literal(v, _) => match v.cast_to(&DataType::Int64).ok()? {
            ScalarValue::Int64(Some(x)) => Some(x),
            _ => None,
        },
        Expr::Cast(c) => lit_i64(&c.expr),
        Expr::TryCast(c) => lit_i64(&c.expr),
        _ => None,
    }
}

fn col_name(e: &Expr) -> Option<&str> {
    match e {
        Expr::Column(c) => Some(c.name.as_str()),
        Expr::Cast(c) => col_name(&c.expr),
        Expr::TryCast(c) => col_name(&c.expr),
        _ => None,
    }
}

fn apply(p: &mut Pushdown, e: &Expr) -> bool {
    match e {
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::And,
            right,
        }) => {
            let a = apply(p, left);
            let b = apply(p, right);
            a && b
        }
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let (col, v, op) = match (
                col_name(left),
                lit_i64(right),
                col_name(right),
                lit_i64(left),
            ) {
                (Some(c), Some(v), _, _) => (c, v, *op),
                (_, _, Some(c), Some(v)) => match op.swap() {
                    Some(o) => (c, v, o),
                    None => return false,
                },
                _ => return false,
            };
            match (col, op) {
                ("timestamp", Operator::Gt) => p.min_t = p.min_t.max(v.saturating_add(1)),
                ("timestamp", Operator::GtEq) => p.min_t = p.min_t.max(v),
                ("timestamp", Operator::Lt) => p.max_t = p.max_t.min(v.saturating_sub(1)),
                ("timestamp", Operator::LtEq) => p.max_t = p.max_t.min(v),
                ("timestamp", Operator::Eq) => {
                    p.min_t = p.min_t.max(v);
                    p.max_t = p.max_t.min(v);
                }
                ("series_id", Operator::Eq) => {
                    let one: RoaringBitmap = u32::try_from(v).ok().into_iter().collect();
                    p.ids = Some(p.ids.take().map_or(one.clone(), |ids| ids & one));
                }
                _ => return false,
            }
            true
        }
        Expr::Between(b) if !b.negated => {
            let (Some("timestamp"), Some(lo), Some(hi)) =
                (col_name(&b.expr), lit_i64(&b.low), lit_i64(&b.high))
            else {
                return false;
            };
            p.min_t = p.min_t.max(lo);
            p.max_t = p.max_t.min(hi);
            true
        }
        Expr::InList(l) if !l.negated && col_name(&l.expr) == Some("series_id") => {
            let mut set = RoaringBitmap::new();
            for e in &l.list {
                match lit_i64(e) {
                    Some(v) => {
                        if let Ok(v) = u32::try_from(v) {
                            set.insert(v);
                        }
                    }
                    None => return false,
                }
            }
            p.ids = Some(p.ids.take().map_or(set.clone(), |ids| ids & set));
            true
        }
        _ => false,
    }
}

/// Whether a filter narrows a scan (inexact: DataFusion applies it again on top).
pub(super) fn pushdown_kind(f: &Expr) -> TableProviderFilterPushDown {
    let mut p = Pushdown {
        min_t: i64::MIN,
        max_t: i64::MAX,
        ids: None,
    };
    if apply(&mut p, f) {
        TableProviderFilterPushDown::Inexact
    } else {
        TableProviderFilterPushDown::Unsupported
    }
}

/// What all pushable filters together narrow the scan to, and their text (for EXPLAIN).
pub(super) fn pushed(filters: &[Expr]) -> (Pushdown, Vec<String>) {
    let mut p = Pushdown {
        min_t: i64::MIN,
        max_t: i64::MAX,
        ids: None,
    };
    let mut text = Vec::new();
    for f in filters {
        let mut one = p.clone();
        if apply(&mut one, f) {
            p = one;
            text.push(f.to_string());
        }
    }
    (p, text)
}

#[async_trait]
impl TableProvider for SamplesTable {
    fn schema(&self) -> SchemaRef {
        samples_schema()
    }
    fn table_type(&self) -> TableType {
        TableType::Base
    }
    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        Ok(filters.iter().map(|f| pushdown_kind(f)).collect())
    }
    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let (p, pushed) = pushed(filters);
        let mut ids = match p.ids {
            Some(ids) => ids,
            None => self.storage.series_ids(&[], p.min_t, p.max_t),
        };
        if let Some(a) = &self.allowed {
            ids &= a.as_ref();
        }
        // A streaming, partitioned scan: no selection is collected before DataFusion sees it.
        let projection = projection
            .cloned()
            .unwrap_or_else(|| (0..samples_schema().fields().len()).collect());
        let spec = super::scan::ScanSpec {
            scan: self
                .snapshot
                .get_or_init(|| self.storage.snapshot())
                .scan(&ids, p.min_t, p.max_t)
                .without_caching(),
            pushed,
            budget: self.budget.clone(),
            projection,
            limit,
        };
        let partitions = state.config().target_partitions();
        Ok(Arc::new(super::scan::SamplesScanExec::new(
            spec,
            samples_schema(),
            partitions,
        )?))
    }
}

impl std::fmt::Debug for SeriesTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SeriesTable")
    }
}

impl std::fmt::Debug for SamplesTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SamplesTable")
    }
}
