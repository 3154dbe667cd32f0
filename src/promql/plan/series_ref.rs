//! The series a leaf reads, named so that another process can find them (issue 26).
//!
//! Catalog ids are dense per process: two queriers that loaded the same blocks and heads
//! in another order give the same series other ids. A plan therefore never ships ids. A
//! leaf ships its selector's matcher sets and, for every series it reads, the series-table
//! row it becomes and its label fingerprint ([`Labels::fingerprint`]). The decoding
//! process resolves the matchers in its own catalog (narrowed to the caller's series),
//! keeps the candidates whose fingerprint the plan lists, and emits each under the row
//! the plan gave it: every operator above the leaf works on rows fixed at planning, so
//! the rest of the plan is portable as it is.
//!
//! A decoder that holds a series more (it is ahead) ignores it; one that lacks a listed
//! series (it is behind) refuses the plan rather than answer without it.

use crate::model::hashing::{self, KeyedMap};
use std::sync::Arc;

use datafusion::common::{internal_datafusion_err, internal_err};
use datafusion::error::Result as DfResult;
use prost::Message;
use roaring::RoaringBitmap;

use crate::catalog::{Catalog, SeriesId};
use crate::model::Matcher;
use crate::storage::{Scan, Snapshot};

/// A leaf's series: what it scans, and the row each scanned series becomes.
#[derive(Clone)]
pub(crate) struct LeafSeries {
    pub scan: Scan,
    /// Series-table row of each scanned series.
    rows: Rows,
    /// The selector's matcher sets (a series matching any set is selected).
    sets: Arc<Vec<Vec<Matcher>>>,
}

/// How a scanned series finds its row.
#[derive(Clone)]
enum Rows {
    /// Its position in the scan's ascending ids plus an offset (a leaf planned here whose
    /// series table is the scan: no map to build for a million series; the offset is a
    /// slice's start).
    Position(u32),
    Map(Arc<KeyedMap<SeriesId, u32>>),
}

impl LeafSeries {
    pub(super) fn new(scan: Scan, rows: KeyedMap<SeriesId, u32>, sets: Vec<Vec<Matcher>>) -> Self {
        LeafSeries {
            scan,
            rows: Rows::Map(Arc::new(rows)),
            sets: Arc::new(sets),
        }
    }

    /// Series whose rows are their positions in `scan`.
    pub(super) fn positional(scan: Scan, sets: Vec<Vec<Matcher>>) -> Self {
        LeafSeries {
            scan,
            rows: Rows::Position(0),
            sets: Arc::new(sets),
        }
    }

    /// The row series `id` becomes; `None`: not one of the leaf's.
    pub(super) fn row(&self, id: SeriesId) -> Option<u32> {
        match &self.rows {
            Rows::Position(base) => self
                .scan
                .ids()
                .binary_search(&id)
                .ok()
                .map(|i| base + i as u32),
            Rows::Map(m) => m.get(&id).copied(),
        }
    }

    /// Slice `i` of the tasks whose shares are `weights` ([`super::pace::cut`]):
    /// contiguous runs of the scan's series, each series in exactly one slice and read
    /// whole there (so range windows see all of it), keeping the rows the whole leaf gives
    /// them. How a leaf becomes one task per worker.
    pub(super) fn slice(&self, i: usize, weights: &[f64]) -> LeafSeries {
        let range = super::pace::cut(self.scan.num_series(), weights, i);
        let a = range.start;
        let scan = self.scan.range(range);
        let rows = match &self.rows {
            Rows::Position(base) => Rows::Position(base + a as u32),
            Rows::Map(m) => Rows::Map(m.clone()),
        };
        LeafSeries {
            scan,
            rows,
            sets: self.sets.clone(),
        }
    }

    /// The wire form: matcher sets, and the row and fingerprint of each scanned series
    /// (labels from `catalog`, the encoding process's).
    pub(super) fn encode(&self, catalog: &Catalog) -> DfResult<Vec<u8>> {
        let ids = self.scan.ids();
        let mut listed: Vec<(u32, u128)> = Vec::with_capacity(ids.len());
        for (id, fp) in ids.iter().zip(catalog.fingerprints_many(ids)) {
            // A series retention forgot after planning has nothing left to read.
            let (Some(row), Some(fp)) = (self.row(*id), fp) else {
                continue;
            };
            listed.push((row, fp));
        }
        Ok(wire(&self.sets, listed))
    }

    /// The series of each row, ascending by row: `(row, id here)`.
    pub(crate) fn by_row(&self) -> Vec<(u32, SeriesId)> {
        let mut out: Vec<(u32, SeriesId)> = self
            .scan
            .ids()
            .iter()
            .filter_map(|&id| Some((self.row(id)?, id)))
            .collect();
        out.sort_unstable();
        out
    }

    /// The leaf's series in this process: the matcher sets resolved in `catalog`, narrowed
    /// to `allowed` (the caller's series), kept where the plan lists their fingerprint,
    /// and scanned from `snapshot` over `[min_t, max_t]`.
    pub(crate) fn decode(
        buf: &[u8],
        catalog: &Catalog,
        allowed: Option<&RoaringBitmap>,
        snapshot: &Snapshot,
        (min_t, max_t): (i64, i64),
    ) -> DfResult<LeafSeries> {
        let (sets, rows, ids) = resolve(buf, catalog, allowed)?;
        let scan = snapshot.scan(&ids, min_t, max_t);
        Ok(LeafSeries {
            scan,
            rows: Rows::Map(Arc::new(rows)),
            sets: Arc::new(sets),
        })
    }
}

/// Encoded series resolved in `catalog`: each as `(row, id here)`, ascending by row (a
/// reader of the catalog rather than of samples: the `series` table).
pub(crate) fn decode_rows(
    buf: &[u8],
    catalog: &Catalog,
    allowed: Option<&RoaringBitmap>,
) -> DfResult<Vec<(u32, SeriesId)>> {
    let (_, rows, _) = resolve(buf, catalog, allowed)?;
    let mut out: Vec<(u32, SeriesId)> = rows.into_iter().map(|(id, row)| (row, id)).collect();
    out.sort_unstable();
    Ok(out)
}

/// The matcher sets of encoded series, the row of each series here, and their ids: the
/// sets resolved in `catalog`, narrowed to `allowed` (the caller's series), kept where the
/// bytes list their fingerprint. A series listed but not found is a snapshot skew.
#[allow(clippy::type_complexity)]
fn resolve(
    buf: &[u8],
    catalog: &Catalog,
    allowed: Option<&RoaringBitmap>,
) -> DfResult<(Vec<Vec<Matcher>>, KeyedMap<SeriesId, u32>, RoaringBitmap)> {
    let w = SeriesWire::decode(buf).map_err(|e| internal_datafusion_err!("leaf series: {e}"))?;
    if w.fingerprints.len() != 16 * w.rows.len() {
        return internal_err!(
            "leaf series: {} rows and {} fingerprint bytes",
            w.rows.len(),
            w.fingerprints.len()
        );
    }
    let sets = w
        .sets
        .iter()
        .map(|s| s.matchers.iter().map(MatcherWire::matcher).collect())
        .collect::<DfResult<Vec<Vec<Matcher>>>>()?;
    let mut wanted = hashing::map::<u128, u32>(w.rows.len());
    for (row, fp) in w.rows.iter().zip(w.fingerprints.chunks_exact(16)) {
        let fp = u128::from_le_bytes(fp.try_into().expect("16 bytes"));
        if wanted.insert(fp, *row).is_some() {
            return internal_err!("leaf series: a fingerprint listed twice");
        }
    }
    let mut candidates = RoaringBitmap::new();
    for set in &sets {
        candidates |= catalog.select(set);
    }
    if let Some(a) = allowed {
        candidates &= a;
    }
    let mut rows = hashing::map::<SeriesId, u32>(wanted.len());
    let mut ids = RoaringBitmap::new();
    let mut taken = hashing::set(wanted.len());
    let listed: Vec<SeriesId> = candidates.iter().collect();
    for (&id, fp) in listed.iter().zip(catalog.fingerprints_many(&listed)) {
        let Some(fp) = fp else {
            continue;
        };
        match wanted.remove(&fp) {
            Some(row) => {
                rows.insert(id, row);
                ids.insert(id);
                taken.insert(fp);
            }
            // Two series with one fingerprint: which one the plan meant is unknown.
            None if taken.contains(&fp) => {
                return internal_err!("leaf series: two series share a fingerprint");
            }
            // A series the plan does not read (this process is ahead).
            None => {}
        }
    }
    if !wanted.is_empty() {
        // This process lacks series the plan reads (its index is behind the planner's,
        // or the caller may not read them): its answer would differ, so refuse.
        return internal_err!(
            "snapshot skew: the plan reads {} series, this process's index lacks {} of them",
            rows.len() + wanted.len(),
            wanted.len()
        );
    }
    Ok((sets, rows, ids))
}

/// The series `ids` of a SQL scan (ascending), for another process to find: each under
/// its own id here as its row, since SQL shows series ids and every task must answer in
/// the coordinator's; found there by metric name (`__name__=""` for series without one).
pub(crate) fn encode_ids(catalog: &Catalog, ids: &[SeriesId]) -> DfResult<Vec<u8>> {
    let mut names = std::collections::BTreeSet::new();
    let mut listed: Vec<(u32, u128)> = Vec::with_capacity(ids.len());
    let fps = catalog.fingerprints_many(ids);
    for ((&id, labels), fp) in ids
        .iter()
        .zip(catalog.labels_many(ids.iter().copied()))
        .zip(fps)
    {
        let (Some(labels), Some(fp)) = (labels, fp) else {
            continue;
        };
        names.insert(labels.metric_name().unwrap_or_default().to_string());
        listed.push((id, fp));
    }
    let sets: Vec<Vec<Matcher>> = names
        .into_iter()
        .map(|n| vec![Matcher::equal("__name__", &n)])
        .collect();
    Ok(wire(&sets, listed))
}

/// Matcher sets and `(row, fingerprint)` pairs as [`SeriesWire`] bytes.
fn wire(sets: &[Vec<Matcher>], mut listed: Vec<(u32, u128)>) -> Vec<u8> {
    listed.sort_unstable();
    let mut w = SeriesWire {
        sets: sets
            .iter()
            .map(|set| MatcherSet {
                matchers: set
                    .iter()
                    .map(|m| MatcherWire {
                        name: m.name.clone(),
                        op: m.op_str().to_string(),
                        value: m.value.clone(),
                    })
                    .collect(),
            })
            .collect(),
        rows: Vec::with_capacity(listed.len()),
        fingerprints: Vec::with_capacity(16 * listed.len()),
    };
    for (row, fp) in listed {
        w.rows.push(row);
        w.fingerprints.extend_from_slice(&fp.to_le_bytes());
    }
    w.encode_to_vec()
}

/// [`LeafSeries`] on the wire.
#[derive(Clone, PartialEq, Message)]
struct SeriesWire {
    #[prost(message, repeated, tag = "1")]
    sets: Vec<MatcherSet>,
    /// Series-table row of each series, ascending.
    #[prost(uint32, repeated, tag = "2")]
    rows: Vec<u32>,
    /// The label fingerprint of each, 16 bytes little-endian, in the order of `rows`.
    #[prost(bytes = "vec", tag = "3")]
    fingerprints: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
struct MatcherSet {
    #[prost(message, repeated, tag = "1")]
    matchers: Vec<MatcherWire>,
}

#[derive(Clone, PartialEq, Message)]
struct MatcherWire {
    #[prost(string, tag = "1")]
    name: String,
    /// `=`, `!=`, `=~` or `!~`.
    #[prost(string, tag = "2")]
    op: String,
    #[prost(string, tag = "3")]
    value: String,
}

impl MatcherWire {
    fn matcher(&self) -> DfResult<Matcher> {
        match Matcher::from_op(self.name.clone(), &self.op, &self.value) {
            Some(m) => m.map_err(|e| internal_datafusion_err!("leaf series: {e}")),
            None => internal_err!("leaf series: unknown matcher operator {:?}", self.op),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion_proto::bytes::{
        physical_plan_from_bytes_with_extension_codec, physical_plan_to_bytes_with_extension_codec,
    };

    use super::super::codec::PlanCodec;
    use super::super::tests::{PLANNED, storage, storage_of};
    use super::super::{assemble, value_order};
    use crate::ingest::{SeriesSamples, WriteBatch};
    use crate::model::Labels;
    use crate::promql::engine::Ctx;
    use crate::promql::{Engine, QueryOptions, Steps, Value};
    use crate::storage::{Storage, WriteWindow};

    const STEP: i64 = 60_000;

    /// `q` planned on `a`, its plan written with `a`'s codec and read with one over `b`,
    /// run on `b`, and assembled with `a`'s series tables: what a worker process with
    /// `b`'s index would answer for a coordinator with `a`'s.
    async fn across(
        a: &Arc<Storage>,
        b: &Arc<Storage>,
        q: &str,
        (start, end): (i64, i64),
        partitions: usize,
        allowed_on_b: Option<roaring::RoaringBitmap>,
    ) -> Result<Value, String> {
        let opts = QueryOptions {
            partitions,
            serial_below: 0,
            ..QueryOptions::default()
        };
        let (ea, eb) = (
            Engine::new(a.clone(), opts.clone()),
            Engine::new(b.clone(), opts.clone()).restrict(allowed_on_b),
        );
        let expr = Engine::parse(q).unwrap();
        let ctx = Ctx {
            steps: Steps::new(start, end, STEP),
            query_start: start,
            query_end: end,
            lookback: opts.lookback_ms,
            is_range: start != end,
            query_step: if start == end { 0 } else { STEP },
            evaluate: false,
        };
        let lowered = ea.lower(&expr, ctx).unwrap().expect("planned");
        let (sa, sb) = (ea.session().unwrap(), eb.session().unwrap());
        let physical = sa
            .state()
            .create_physical_plan(&lowered.plan)
            .await
            .unwrap();
        let bytes = physical_plan_to_bytes_with_extension_codec(physical, &PlanCodec::new(&ea))
            .map_err(|e| e.to_string())?;
        let copy = physical_plan_from_bytes_with_extension_codec(
            &bytes,
            &sb.task_ctx(),
            &PlanCodec::new(&eb),
        )
        .map_err(|e| e.to_string())?;
        let batches = datafusion::physical_plan::collect(copy, sb.task_ctx())
            .await
            .map_err(|e| e.to_string())?;
        let mut out =
            assemble(&lowered.series, ctx.steps.len(), &batches).map_err(|e| e.to_string())?;
        value_order(&expr, &mut out);
        Ok(Value::Vector(out))
    }

    async fn local(s: &Arc<Storage>, q: &str, (start, end): (i64, i64)) -> Value {
        let e = Engine::new(s.clone(), QueryOptions::default());
        e.range(&Engine::parse(q).unwrap(), start, end, STEP)
            .await
            .unwrap()
    }

    /// The same series under other catalog ids (another order, other series first): every
    /// planned query decoded there answers as where it was planned.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn plans_answer_the_same_on_a_process_with_other_ids() {
        let a = storage().await;
        let b = storage_of(4, (0..8).rev().collect()).await;
        let label = |s: &Storage, id| s.catalog().labels_many([id])[0].clone();
        let moved = (0..8).filter(|&id| label(&a, id) != label(&b, id)).count();
        assert_eq!(moved, 8, "every series has another id on b");
        for q in PLANNED {
            for range in [(3_000_000, 3_000_000), (0, 3_000_000)] {
                for partitions in [1, 3] {
                    let want = local(&a, q, range).await;
                    let got = across(&a, &b, q, range, partitions, None)
                        .await
                        .unwrap_or_else(|e| panic!("{q}: {e}"));
                    crate::promqltest::compare_values(want.clone(), got.clone()).unwrap_or_else(
                        |e| panic!("{q} {range:?} {partitions} partitions: {e}\n{want:?}\n{got:?}"),
                    );
                }
            }
        }
    }

    async fn add(s: &Storage, pairs: &[(&str, &str)]) {
        let labels = Labels::new(
            pairs
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        )
        .unwrap();
        s.append(
            WriteBatch {
                series: vec![SeriesSamples {
                    labels,
                    samples: (0..11).map(|k| (k * 300_000, 1e6)).collect(),
                }],
                ..Default::default()
            },
            WriteWindow::Any,
        )
        .await
        .unwrap();
    }

    /// A process that holds a matching series more (it is ahead) reads only the plan's;
    /// one that lacks a series the plan reads, or may not read it, refuses the plan.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn extra_series_are_ignored_and_missing_ones_refused() {
        let a = storage().await;
        let q = "sum by (job) (rate(http_requests[10m])) + on(job) count by (job) (http_requests)";
        let range = (0, 3_000_000);
        let want = local(&a, q, range).await;
        let ahead = storage_of(2, (0..8).collect()).await;
        add(
            &ahead,
            &[
                ("__name__", "http_requests"),
                ("job", "api"),
                ("instance", "9"),
            ],
        )
        .await;
        let got = across(&a, &ahead, q, range, 2, None).await.unwrap();
        crate::promqltest::compare_values(want, got).unwrap();

        let behind = storage_of(0, (1..8).collect()).await;
        let err = across(&a, &behind, q, range, 2, None).await.unwrap_err();
        assert!(err.contains("snapshot skew"), "{err}");

        // The caller may not read job="app" where the plan is decoded: refused, not read.
        let b = storage_of(0, (0..8).collect()).await;
        let api = b
            .catalog()
            .select(&[crate::model::Matcher::equal("job", "api")]);
        let err = across(&a, &b, q, range, 2, Some(api)).await.unwrap_err();
        assert!(err.contains("snapshot skew"), "{err}");
    }

    /// The `(series, step, value bits)` rows of a plan, sorted.
    async fn rows_of(
        plan: Arc<dyn datafusion::physical_plan::ExecutionPlan>,
        e: &Engine,
    ) -> Vec<(u32, u32, u64)> {
        use datafusion::arrow::array::AsArray;
        use datafusion::arrow::datatypes::{Float64Type, UInt32Type};
        let batches = datafusion::physical_plan::collect(plan, e.session().unwrap().task_ctx())
            .await
            .unwrap();
        let mut out = Vec::new();
        for b in &batches {
            let (s, t, v) = (
                b.column(0).as_primitive::<UInt32Type>(),
                b.column(1).as_primitive::<UInt32Type>(),
                b.column(2).as_primitive::<Float64Type>(),
            );
            for i in 0..b.num_rows() {
                out.push((s.value(i), t.value(i), v.value(i).to_bits()));
            }
        }
        out.sort_unstable();
        out
    }

    /// A leaf cut into n tasks, each decoded on a process with other ids: together they
    /// give exactly the whole leaf's rows (each series from one task, whole), and every
    /// task declares the leaf's partitions.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tasks_of_a_leaf_cover_it_once() {
        use datafusion::physical_plan::ExecutionPlan;

        use super::super::leaf::LeafExec;
        let (a, b) = (storage().await, storage_of(4, (0..8).rev().collect()).await);
        let opts = QueryOptions {
            partitions: 3,
            serial_below: 0,
            ..QueryOptions::default()
        };
        let (ea, eb) = (
            Engine::new(a.clone(), opts.clone()),
            Engine::new(b.clone(), opts.clone()),
        );
        for q in [
            "http_requests",
            "rate(http_requests[10m])",
            "timestamp(http_requests offset 1m)",
        ] {
            let ctx = Ctx {
                steps: Steps::new(0, 3_000_000, STEP),
                query_start: 0,
                query_end: 3_000_000,
                lookback: opts.lookback_ms,
                is_range: true,
                query_step: STEP,
                evaluate: false,
            };
            let expr = Engine::parse(q).unwrap();
            let lowered = ea.lower(&expr, ctx).unwrap().unwrap();
            let mut plan = ea
                .session()
                .unwrap()
                .state()
                .create_physical_plan(&lowered.plan)
                .await
                .unwrap();
            while plan.downcast_ref::<LeafExec>().is_none() {
                plan = plan.children()[0].clone();
            }
            let leaf = plan.downcast_ref::<LeafExec>().unwrap();
            let whole = rows_of(plan.clone(), &ea).await;
            assert!(!whole.is_empty());
            for n in 1..=4 {
                let mut union = Vec::new();
                let mut series_seen = std::collections::HashSet::new();
                for i in 0..n {
                    let task: Arc<dyn ExecutionPlan> = Arc::new(leaf.slice(i, &vec![1.0; n]));
                    assert_eq!(
                        task.properties().partitioning.partition_count(),
                        leaf.properties().partitioning.partition_count()
                    );
                    let bytes =
                        physical_plan_to_bytes_with_extension_codec(task, &PlanCodec::new(&ea))
                            .unwrap();
                    let copy = physical_plan_from_bytes_with_extension_codec(
                        &bytes,
                        &eb.session().unwrap().task_ctx(),
                        &PlanCodec::new(&eb),
                    )
                    .unwrap();
                    let rows = rows_of(copy, &eb).await;
                    let mine: std::collections::HashSet<u32> = rows.iter().map(|r| r.0).collect();
                    for s in mine {
                        assert!(series_seen.insert(s), "{q}: series {s} in two tasks of {n}");
                    }
                    union.extend(rows);
                }
                union.sort_unstable();
                assert_eq!(union, whole, "{q}: {n} tasks");
            }
        }
    }
}
