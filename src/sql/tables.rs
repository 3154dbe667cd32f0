use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{MapBuilder, RecordBatch, StringBuilder, UInt32Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::datasource::{MemTable, TableType};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use roaring::RoaringBitmap;

use crate::storage::Storage;

fn series_schema() -> SchemaRef {
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

fn samples_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("series_id", DataType::UInt32, false),
        Field::new("timestamp", DataType::Int64, false),
        Field::new("value", DataType::Float64, false),
    ]))
}

/// `series`: every series the catalog knows (head and loaded blocks).
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
    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let catalog = self.storage.catalog();
        let n = catalog.len() as u32;
        let ids: Vec<u32> = match &self.allowed {
            Some(a) => a.iter().filter(|&i| i < n).collect(),
            None => (0..n).collect(),
        };
        let labels = catalog.labels_many(ids.iter().copied());
        let mut metric = StringBuilder::new();
        let mut map = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
        for l in &labels {
            metric.append_option(l.metric_name());
            for (k, v) in l.iter() {
                map.keys().append_value(k);
                map.values().append_value(v);
            }
            map.append(true)?;
        }
        let schema = series_schema();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(UInt32Array::from(ids)),
                Arc::new(metric.finish()),
                Arc::new(map.finish()),
            ],
        )?;
        MemTable::try_new(schema, vec![vec![batch]])?
            .scan(state, projection, filters, limit)
            .await
    }
}

/// `samples`: head and block samples, deduplicated, with pushdown of time and series filters.
pub struct SamplesTable {
    storage: Arc<Storage>,
    allowed: Option<Arc<RoaringBitmap>>,
    /// Samples all scans of this table together may load (`None`: unlimited), and how many
    /// they have loaded: a scan still materialises its selection, so this bounds memory.
    budget: Option<(usize, Arc<std::sync::atomic::AtomicUsize>)>,
}

impl SamplesTable {
    pub fn new(storage: Arc<Storage>) -> Self {
        SamplesTable {
            storage,
            allowed: None,
            budget: None,
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
struct Pushdown {
    min_t: i64,
    max_t: i64,
    ids: Option<RoaringBitmap>,
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
        // Inexact: we narrow the scan; DataFusion re-applies the predicate on top.
        Ok(filters
            .iter()
            .map(|f| {
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
            })
            .collect())
    }
    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let mut p = Pushdown {
            min_t: i64::MIN,
            max_t: i64::MAX,
            ids: None,
        };
        let mut pushed = Vec::new();
        for f in filters {
            let mut one = p.clone();
            if apply(&mut one, f) {
                p = one;
                pushed.push(f.to_string());
            }
        }
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
            scan: self.storage.scan(&ids, p.min_t, p.max_t),
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
