//! Results cache for range queries.
//!
//! A range query's steps are cut into time *extents* (`extent` long, rounded up to a multiple
//! of the step, aligned to the step grid). Each extent's part of the answer is cached under
//! (tenant, normalised query, step, grid phase, lookback, extent). A dashboard refresh then
//! finds every extent but the newest and evaluates only the missing ones: consecutive missing
//! extents are evaluated together in one engine call, so a cold query costs one evaluation.
//!
//! Why this is exact: without `@`, negative offsets and `start()`/`end()`/`range()`, the value
//! at a step depends only on samples at or before that step and on the step itself — not on
//! where the query range starts or ends. Queries using those bypass the cache.
//!
//! Freshness: an extent whose last step is within `freshness` of now is never stored (its
//! samples may still arrive). Late writes: a write whose oldest sample is older than
//! now − freshness may change stored extents; it removes every extent of that tenant ending
//! at or after that sample, and a generation counter stops an evaluation that overlapped the
//! write from storing what it read before the write.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use promql_parser::parser::{AtModifier, Expr, Offset};

use crate::model::Labels;
use crate::promql::{Annotations, Series, Steps, Value};

/// Sizing and timing of the cache.
#[derive(Debug, Clone, Copy)]
pub struct CacheConfig {
    /// Bound on the approximate bytes of cached extents; 0 disables the cache.
    pub max_bytes: u64,
    /// Length of an extent in ms (rounded up to a multiple of the query step).
    pub extent_ms: i64,
    /// Extents with steps newer than now − freshness are never stored.
    pub freshness_ms: i64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            max_bytes: 512 << 20,
            extent_ms: 30 * 60_000,
            freshness_ms: 10 * 60_000,
        }
    }
}

/// What identifies a query's answers apart from the time range.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct QueryKey {
    pub tenant: String,
    /// Tenant and enforced matchers: callers that see different series share nothing.
    pub scope: String,
    /// The query as the parser prints it, so spacing differences share entries.
    pub query: String,
    pub step: i64,
    pub lookback: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ExtentKey {
    query: Arc<QueryKey>,
    /// Grid phase: `start mod step` (queries on different grids share nothing).
    phase: i64,
    /// First and last step (ms) of the extent.
    first: i64,
    last: i64,
}

/// One extent's part of an answer.
#[derive(Debug)]
struct Extent {
    steps: Steps,
    value: Value,
    annotations: Annotations,
}

/// How a lookup went, in extents.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub hits: u64,
    pub misses: u64,
}

pub struct ResultsCache {
    cfg: CacheConfig,
    entries: moka::sync::Cache<ExtentKey, Arc<Extent>>,
    /// Bumped by every late write.
    generation: AtomicU64,
    /// Latest `last` of any stored extent: writes newer than it cannot touch the cache.
    newest_stored: AtomicI64,
}

impl ResultsCache {
    pub fn new(cfg: CacheConfig) -> Self {
        let entries = moka::sync::Cache::builder()
            .max_capacity(cfg.max_bytes)
            .weigher(|_k: &ExtentKey, v: &Arc<Extent>| weight(v))
            .support_invalidation_closures()
            .build();
        ResultsCache {
            cfg,
            entries,
            generation: AtomicU64::new(0),
            newest_stored: AtomicI64::new(i64::MIN),
        }
    }

    pub fn enabled(&self) -> bool {
        self.cfg.max_bytes > 0
    }

    /// Approximate bytes held.
    pub fn weighted_size(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.weighted_size()
    }

    /// A write of `tenant` whose oldest sample is at `min_ts` has become visible.
    pub fn note_write(&self, tenant: &str, min_ts: i64, now: i64) {
        if min_ts >= now - self.cfg.freshness_ms {
            return; // only fresh steps, which are never stored
        }
        self.generation.fetch_add(1, Ordering::SeqCst);
        if min_ts > self.newest_stored.load(Ordering::SeqCst) {
            return;
        }
        let tenant = tenant.to_string();
        // Steps at or after the sample may see it (lookback and range windows look back).
        if let Err(e) = self
            .entries
            .invalidate_entries_if(move |k, _| k.query.tenant == tenant && k.last >= min_ts)
        {
            // Only fails when invalidation closures are not enabled, which `new` does.
            tracing::error!(error = %e, "results cache invalidation failed; clearing it");
            self.entries.invalidate_all();
        }
    }

    /// Answers a range query over `steps`, reusing cached extents and calling `eval` for
    /// each run of missing ones. `eval` gets step-aligned sub-ranges of (possibly widened to
    /// whole extents) `steps` and must answer as an uncached range query would.
    pub async fn range<F, Fut, E>(
        &self,
        key: QueryKey,
        steps: Steps,
        now: i64,
        mut eval: F,
    ) -> Result<(Value, Annotations, Outcome), E>
    where
        F: FnMut(Steps) -> Fut,
        Fut: Future<Output = Result<(Value, Annotations), E>>,
    {
        let step = steps.step;
        let width = (self.cfg.extent_ms.max(1) + step - 1) / step * step;
        let phase = steps.start.rem_euclid(step);
        let extent_of = |t: i64| (t - phase).div_euclid(width);
        // Steps of extent k: phase + k·width … phase + (k+1)·width − step.
        let first_of = |k: i64| phase + k * width;
        let last_of = |k: i64| first_of(k) + width - step;
        let stable_until = now - self.cfg.freshness_ms;
        let storable = |k: i64| last_of(k) <= stable_until;
        let query = Arc::new(key);
        let key_of = |k: i64| ExtentKey {
            query: query.clone(),
            phase,
            first: first_of(k),
            last: last_of(k),
        };

        let generation = self.generation.load(Ordering::SeqCst);
        let (k0, k1) = (extent_of(steps.start), extent_of(steps.end));
        let mut parts: Vec<Arc<Extent>> = Vec::new();
        let mut outcome = Outcome::default();
        let mut k = k0;
        while k <= k1 {
            if storable(k)
                && let Some(e) = self.entries.get(&key_of(k))
            {
                parts.push(e);
                outcome.hits += 1;
                k += 1;
                continue;
            }
            // A run of missing extents, evaluated in one call. Storable extents are
            // evaluated whole so they can be stored; the rest only as far as asked.
            let mut end_k = k;
            while end_k < k1
                && !(storable(end_k + 1) && self.entries.contains_key(&key_of(end_k + 1)))
            {
                end_k += 1;
            }
            let from = if storable(k) {
                first_of(k)
            } else {
                first_of(k).max(steps.start)
            };
            let to = if storable(end_k) {
                last_of(end_k)
            } else {
                last_of(end_k).min(steps.end)
            };
            let (value, annotations) = eval(Steps::new(from, to, step)).await?;
            let run = Steps::new(from, to, step);
            for kk in k..=end_k {
                let sub = Steps::new(first_of(kk).max(from), last_of(kk).min(to), step);
                let extent = Arc::new(Extent {
                    steps: sub,
                    value: slice(&value, run, sub),
                    annotations: annotations.clone(),
                });
                outcome.misses += 1;
                if storable(kk) {
                    // A late write since we started may have changed what we read.
                    if self.generation.load(Ordering::SeqCst) == generation {
                        self.entries.insert(key_of(kk), extent.clone());
                        self.newest_stored.fetch_max(sub.end, Ordering::SeqCst);
                    }
                }
                parts.push(extent);
            }
            k = end_k + 1;
        }
        let (value, annotations) = assemble(&parts, steps);
        Ok((value, annotations, outcome))
    }
}

/// Whether a query's answer at a step is independent of the query's start and end, so its
/// extents may be cached: no `@`, no negative offset, no `start()`/`end()`/`range()`.
pub fn cacheable(expr: &Expr) -> bool {
    fn at_ok(at: &Option<AtModifier>, off: &Option<Offset>) -> bool {
        at.is_none() && !matches!(off, Some(Offset::Neg(_)))
    }
    match expr {
        Expr::VectorSelector(vs) => at_ok(&vs.at, &vs.offset),
        Expr::MatrixSelector(ms) => at_ok(&ms.vs.at, &ms.vs.offset),
        Expr::Subquery(sq) => at_ok(&sq.at, &sq.offset) && cacheable(&sq.expr),
        Expr::Call(c) => {
            use crate::promql::func::Func;
            !matches!(
                Func::of(c.func.name),
                Some(Func::Start | Func::End | Func::Range)
            ) && c.args.args.iter().all(|a| cacheable(a))
        }
        Expr::Aggregate(a) => cacheable(&a.expr) && a.param.as_deref().is_none_or(cacheable),
        Expr::Binary(b) => cacheable(&b.lhs) && cacheable(&b.rhs),
        Expr::Paren(p) => cacheable(&p.expr),
        Expr::Unary(u) => cacheable(&u.expr),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) => true,
        Expr::Extension(_) => false,
    }
}

/// The part of `value` (evaluated over `run`) at the steps of `sub` (a sub-grid of `run`).
fn slice(value: &Value, run: Steps, sub: Steps) -> Value {
    let lo = ((sub.start - run.start) / run.step) as usize;
    let hi = lo + sub.len();
    match value {
        Value::Scalar(v) => Value::Scalar(v[lo..hi].to_vec()),
        Value::Vector(series) => Value::Vector(
            series
                .iter()
                .filter_map(|s| {
                    let part = Series {
                        hists: s.hists.get(lo..hi).map(<[_]>::to_vec).unwrap_or_default(),
                        labels: s.labels.clone(),
                        vals: s.vals[lo..hi].to_vec(),
                    };
                    (!part.is_empty()).then_some(part)
                })
                .collect(),
        ),
        // Range queries only answer scalars and vectors (the engine rejects the rest).
        other => other.clone(),
    }
}

/// Joins extents into the answer over `steps`.
fn assemble(parts: &[Arc<Extent>], steps: Steps) -> (Value, Annotations) {
    let n = steps.len();
    let mut annotations = Annotations::default();
    for p in parts {
        for w in &p.annotations.warnings {
            if !annotations.warnings.contains(w) {
                annotations.warnings.push(w.clone());
            }
        }
        for i in &p.annotations.infos {
            if !annotations.infos.contains(i) {
                annotations.infos.push(i.clone());
            }
        }
    }
    // (index in the part, index in the answer) of each step of a part inside `steps`.
    let positions = |p: &Extent| -> Vec<(usize, usize)> {
        p.steps
            .iter()
            .enumerate()
            .filter(|&(_, t)| t >= steps.start && t <= steps.end)
            .map(|(i, t)| (i, ((t - steps.start) / steps.step) as usize))
            .collect()
    };
    let value = match parts.first().map(|p| &p.value) {
        Some(Value::Scalar(_)) => {
            let mut out = vec![f64::NAN; n];
            for p in parts {
                if let Value::Scalar(v) = &p.value {
                    for (i, j) in positions(p) {
                        out[j] = v[i];
                    }
                }
            }
            Value::Scalar(out)
        }
        Some(Value::Vector(_)) | None => {
            let mut by_labels: HashMap<Labels, Series> = HashMap::new();
            for p in parts {
                if let Value::Vector(series) = &p.value {
                    for s in series {
                        let out = by_labels
                            .entry(s.labels.clone())
                            .or_insert_with(|| Series::new(s.labels.clone(), n));
                        for (i, j) in positions(p) {
                            if s.vals[i].is_some() {
                                out.vals[j] = s.vals[i];
                            } else if let Some(h) = s.hist(i) {
                                out.set_hist(j, h.clone());
                            }
                        }
                    }
                }
            }
            let mut series: Vec<Series> =
                by_labels.into_values().filter(|s| !s.is_empty()).collect();
            series.sort_by(|a, b| a.labels.cmp(&b.labels));
            Value::Vector(series)
        }
        Some(other) => other.clone(),
    };
    (value, annotations)
}

/// Approximate heap bytes of an extent, for the cache's byte bound.
fn weight(e: &Extent) -> u32 {
    let bytes = match &e.value {
        Value::Scalar(v) => v.len() * 8,
        Value::Vector(series) => series
            .iter()
            .map(|s| {
                48 + s.vals.len() * 16
                    + s.hists.len() * 8
                    + s.hists
                        .iter()
                        .flatten()
                        .map(|h| 128 + 8 * (h.positive_buckets.len() + h.negative_buckets.len()))
                        .sum::<usize>()
                    + s.labels
                        .iter()
                        .map(|(n, v)| 48 + n.len() + v.len())
                        .sum::<usize>()
            })
            .sum(),
        Value::String(s) => s.len(),
        Value::Matrix(m) => m.iter().map(|s| s.ts.len() * 16).sum(),
    };
    u32::try_from(bytes + 128).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> QueryKey {
        QueryKey {
            tenant: String::new(),
            scope: String::new(),
            query: "x".into(),
            step: 10,
            lookback: 300_000,
        }
    }

    /// A fake engine: one series whose value at step t is t, counting the steps it evaluates.
    async fn fake(
        steps: Steps,
        calls: &parking_lot::Mutex<Vec<Steps>>,
    ) -> Result<(Value, Annotations), ()> {
        calls.lock().push(steps);
        let labels = Labels::new(vec![("a".into(), "b".into())]).expect("labels");
        let vals = steps.iter().map(|t| Some(t as f64)).collect();
        Ok((
            Value::Vector(vec![Series {
                labels,
                vals,
                hists: Vec::new(),
            }]),
            Annotations::default(),
        ))
    }

    fn cache() -> ResultsCache {
        ResultsCache::new(CacheConfig {
            max_bytes: 1 << 20,
            extent_ms: 100,
            freshness_ms: 50,
        })
    }

    #[tokio::test]
    async fn second_query_reuses_stored_extents_and_answers_the_same() {
        let c = cache();
        let calls = parking_lot::Mutex::new(Vec::new());
        let steps = Steps::new(35, 1005, 10);
        let now = 1010;
        let (a, _, o1) = c
            .range(key(), steps, now, |s| fake(s, &calls))
            .await
            .unwrap();
        assert_eq!(calls.lock().len(), 1, "a cold query is one evaluation");
        assert_eq!(o1.hits, 0);
        let (b, _, o2) = c
            .range(key(), steps, now, |s| fake(s, &calls))
            .await
            .unwrap();
        assert_eq!(a, b);
        let expect = fake(steps, &parking_lot::Mutex::new(Vec::new()))
            .await
            .unwrap()
            .0;
        assert_eq!(a, expect);
        // Extents ending after now − freshness (960) are evaluated again, only as far as asked.
        assert_eq!((o2.hits, o2.misses), (9, 2), "{o2:?}");
        let last = *calls.lock().last().unwrap();
        assert_eq!((last.start, last.end), (905, 1005));
    }

    #[tokio::test]
    async fn late_write_invalidates_extents_at_and_after_it() {
        let c = cache();
        let calls = parking_lot::Mutex::new(Vec::new());
        let steps = Steps::new(5, 505, 10);
        let now = 10_000;
        c.range(key(), steps, now, |s| fake(s, &calls))
            .await
            .unwrap();
        c.note_write("", 260, now);
        calls.lock().clear();
        let (_, _, o) = c
            .range(key(), steps, now, |s| fake(s, &calls))
            .await
            .unwrap();
        // Extents [5..95], [105..195], [205..295] stay: the last holds steps ≥ 260 → dropped.
        assert_eq!(o.hits, 2, "{o:?}");
        assert_eq!(calls.lock()[0].start, 205);
        // Another tenant's write touches nothing.
        c.note_write("other", 0, now);
        let (_, _, o) = c
            .range(key(), steps, now, |s| fake(s, &calls))
            .await
            .unwrap();
        assert_eq!(o.misses, 0);
    }

    #[test]
    fn at_negative_offset_and_range_functions_bypass() {
        for (q, ok) in [
            ("rate(x[5m])", true),
            ("x offset 5m", true),
            ("x offset -5m", false),
            ("x @ 100", false),
            ("sum(rate(x[5m] @ end()))", false),
            ("max_over_time(rate(x[1m])[10m:1m])", true),
            ("topk(3, x)", true),
            ("vector(start())", false),
            ("x - x + vector(range())", false),
            ("vector(time())", true),
        ] {
            let e = promql_parser::parser::parse(q).unwrap();
            assert_eq!(cacheable(&e), ok, "{q}");
        }
    }
}
