//! The SQL tables of native histograms (`histograms`) and exemplars (`exemplars`): the
//! same columns as their block files, with global series ids (join `series` on
//! `series_id`). `timestamp` bounds and `series_id` equalities are pushed into the read;
//! rows are charged to the statement's samples budget before they are built.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::memory::MemorySourceConfig;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use roaring::RoaringBitmap;

use super::tables::{pushdown_kind, pushed};
use crate::storage::Storage;
use crate::storage::block::{exemplars, histograms};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lane {
    Histograms,
    Exemplars,
}

pub struct LaneTable {
    lane: Lane,
    storage: Arc<Storage>,
    allowed: Option<Arc<RoaringBitmap>>,
    max_rows: Option<usize>,
}

impl LaneTable {
    pub fn new(
        lane: Lane,
        storage: Arc<Storage>,
        allowed: Option<Arc<RoaringBitmap>>,
        max_rows: Option<usize>,
    ) -> Self {
        LaneTable {
            lane,
            storage,
            allowed,
            max_rows,
        }
    }
}

impl std::fmt::Debug for LaneTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LaneTable({:?})", self.lane)
    }
}

#[async_trait]
impl TableProvider for LaneTable {
    fn schema(&self) -> SchemaRef {
        match self.lane {
            Lane::Histograms => histograms::histograms_schema(),
            Lane::Exemplars => exemplars::exemplars_schema(),
        }
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
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let (p, _) = pushed(filters);
        let mut ids = match p.ids {
            Some(ids) => ids,
            None => self.storage.catalog().live(),
        };
        if let Some(a) = &self.allowed {
            ids &= a.as_ref();
        }
        let snap = self.storage.snapshot();
        let err = |e: crate::storage::StorageError| DataFusionError::External(Box::new(e));
        let too_many = |n: usize| {
            self.max_rows.is_some_and(|m| n > m).then(|| {
                DataFusionError::ResourcesExhausted(format!(
                    "the {:?} table's selection weighs {n} samples, more than the {} a statement may read",
                    self.lane,
                    self.max_rows.unwrap_or(0)
                ))
            })
        };
        let batch = match self.lane {
            Lane::Histograms => {
                let runs = snap.histograms(&ids, p.min_t, p.max_t).await.map_err(err)?;
                // Histograms weigh their size in samples, as in PromQL.
                let n = runs
                    .iter()
                    .flat_map(|r| r.hists.iter())
                    .map(|h| h.sample_weight())
                    .sum();
                if let Some(e) = too_many(n) {
                    return Err(e);
                }
                histograms::to_batch(runs.iter().flat_map(|r| {
                    r.ts.iter()
                        .zip(&r.hists)
                        .map(move |(t, h)| (r.id, *t, &**h))
                }))
                .map_err(err)?
            }
            Lane::Exemplars => {
                let found = snap.exemplars(&ids, p.min_t, p.max_t).await.map_err(err)?;
                let n = found.iter().map(|(_, es)| es.len()).sum();
                if let Some(e) = too_many(n) {
                    return Err(e);
                }
                exemplars::to_batch(
                    found
                        .iter()
                        .flat_map(|(id, es)| es.iter().map(move |e| (*id, &**e))),
                )
                .map_err(err)?
            }
        };
        let schema = batch.schema();
        Ok(MemorySourceConfig::try_new_exec(
            &[vec![batch]],
            schema,
            projection.cloned(),
        )?)
    }
}
