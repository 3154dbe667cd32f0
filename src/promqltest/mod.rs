//! `quiver promqltest`: runs Prometheus's PromQL test scripts through the same storage and
//! engine that serve queries (a fresh in-memory store per file and after every `clear`).

mod compare;
pub mod histogram_notation;
mod nhcb;
pub mod script;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use compare::check;
pub use compare::same_value as compare_values;
use script::{Command, Eval, EvalKind, Point};

use crate::ingest::{SeriesHistograms, SeriesSamples, WriteBatch};
use crate::promql::{Engine, QueryOptions};
use crate::storage::{Storage, WriteWindow};

/// Per-eval outcome.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Pass,
    Fail(String),
    Skip(String),
}

/// Counts for one file (and totals).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counts {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
    /// Of the evals `eval-index.tsv` tags as neither native-histogram nor experimental.
    pub clean_passed: usize,
    pub clean_total: usize,
    /// Why evals were skipped, and how many each.
    pub skips: std::collections::BTreeMap<String, usize>,
}

impl Counts {
    pub fn add(&mut self, o: &Counts) {
        for (why, n) in &o.skips {
            *self.skips.entry(why.clone()).or_default() += n;
        }
        self.passed += o.passed;
        self.failed += o.failed;
        self.skipped += o.skipped;
        self.clean_passed += o.clean_passed;
        self.clean_total += o.clean_total;
    }
}

/// `(file name relative to the corpus root, line) → clean?` from `eval-index.tsv`.
pub type Index = HashMap<(String, usize), bool>;

/// Loads `eval-index.tsv` from the directory above `upstream/`, if present.
pub fn load_index(any_test_file: &Path) -> Option<(Index, std::path::PathBuf)> {
    let mut dir = any_test_file.parent()?;
    for _ in 0..3 {
        let p = dir.join("eval-index.tsv");
        if let Ok(text) = std::fs::read_to_string(&p) {
            let mut idx = Index::new();
            for l in text.lines().skip(1) {
                let f: Vec<&str> = l.split('\t').collect();
                if f.len() >= 11 {
                    let clean = f[9] == "no" && f[10] == "-";
                    idx.insert((f[0].to_string(), f[2].parse().unwrap_or(0)), clean);
                }
            }
            return Some((idx, dir.join("upstream")));
        }
        dir = dir.parent()?;
    }
    None
}

async fn fresh_storage() -> Result<Arc<Storage>, String> {
    Storage::in_memory()
        .await
        .map(Arc::new)
        .map_err(|e| e.to_string())
}

/// What each eval of a file is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The expected result the file states.
    Conformance,
    /// The step-vector evaluator's result: the eval passes when the DataFusion planner
    /// ran some of it and both agree, and is skipped when nothing in it was planned.
    Differential,
    /// As [`Mode::Differential`], with every physical plan serialised and the decoded
    /// copy run (the plan codec's test).
    Codec,
    /// Whether the whole expression becomes one DataFusion plan: passes when it does,
    /// skipped with the reason when it does not.
    Coverage,
    /// The planner in one process against the planner with every plan's tasks on three
    /// workers reached over TCP (`cluster::workers::LocalWorkers`): the same series,
    /// values, errors and annotations; skipped when nothing in the eval was planned.
    Distributed,
}

/// Runs one script; `report` receives each failing eval's description.
pub async fn run_file(
    path: &Path,
    index: Option<&(Index, std::path::PathBuf)>,
    report: &mut dyn FnMut(String),
) -> Result<Counts, String> {
    run_file_as(path, index, report, Mode::Conformance).await
}

/// [`run_file`] checking each eval as `mode` says.
pub async fn run_file_as(
    path: &Path,
    index: Option<&(Index, std::path::PathBuf)>,
    report: &mut dyn FnMut(String),
    mode: Mode,
) -> Result<Counts, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let cmds = script::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let rel = index
        .and_then(|(_, root)| path.strip_prefix(root).ok())
        .map(|p| p.to_string_lossy().to_string());
    let mut storage = fresh_storage().await?;
    let workers = match mode {
        Mode::Distributed => Some(
            crate::cluster::workers::LocalWorkers::start(3)
                .await
                .map_err(|e| e.to_string())?,
        ),
        _ => None,
    };
    let mut tenant = workers.as_ref().map(|w| w.register(storage.clone()));
    let mut counts = Counts::default();
    for cmd in cmds {
        match cmd {
            Command::Clear => {
                storage = fresh_storage().await?;
                tenant = workers.as_ref().map(|w| w.register(storage.clone()));
            }
            Command::Load {
                interval,
                mut series,
                nhcb,
                ..
            } => {
                if nhcb {
                    let native = nhcb::convert(&series);
                    series.extend(native);
                }
                let mut batch = WriteBatch::default();
                for (labels, points) in series {
                    let mut samples: Vec<(i64, f64)> = Vec::new();
                    let mut hists = Vec::new();
                    for (i, p) in points.iter().enumerate() {
                        let t = i as i64 * interval;
                        match p {
                            Some(Point::Float(v)) => samples.push((t, *v)),
                            Some(Point::Hist(h, _)) => hists.push((t, (**h).clone())),
                            None => {}
                        }
                    }
                    if !hists.is_empty() {
                        batch.histograms.push(SeriesHistograms {
                            labels: labels.clone(),
                            samples: hists,
                        });
                    }
                    if !samples.is_empty() {
                        batch.series.push(SeriesSamples { labels, samples });
                    }
                }
                storage
                    .append(batch, WriteWindow::Any)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Command::Eval(ev) => {
                let clean = rel
                    .as_ref()
                    .and_then(|r| index.and_then(|(i, _)| i.get(&(r.clone(), ev.line))))
                    .copied();
                let outcome = match mode {
                    Mode::Conformance => run_eval(&storage, &ev).await,
                    Mode::Differential => differ(&storage, &ev, false).await,
                    Mode::Codec => differ(&storage, &ev, true).await,
                    Mode::Coverage => coverage(&storage, &ev).await,
                    Mode::Distributed => match (&workers, &tenant) {
                        (Some(w), Some(t)) => distributed(&storage, &ev, w, t).await,
                        _ => unreachable!("workers start in this mode"),
                    },
                };
                if clean == Some(true) {
                    counts.clean_total += 1;
                }
                match outcome {
                    Outcome::Pass => {
                        counts.passed += 1;
                        if clean == Some(true) {
                            counts.clean_passed += 1;
                        }
                    }
                    Outcome::Fail(why) => {
                        counts.failed += 1;
                        report(format!(
                            "{}:{}: {}\n    {}",
                            path.display(),
                            ev.line,
                            ev.expr,
                            why.replace('\n', "\n    ")
                        ));
                    }
                    Outcome::Skip(why) => {
                        counts.skipped += 1;
                        *counts.skips.entry(why).or_default() += 1;
                    }
                }
            }
        }
    }
    Ok(counts)
}

async fn run_eval(storage: &Arc<Storage>, ev: &Eval) -> Outcome {
    let engine = Engine::new(storage.clone(), QueryOptions::default());
    let result = match Engine::parse(&ev.expr) {
        Err(e) => Err(e),
        Ok(expr) => match ev.kind {
            EvalKind::Instant { at } => engine.instant(&expr, at).await,
            EvalKind::Range { start, end, step } => engine.range(&expr, start, end, step).await,
        },
    };
    let annotations = engine.take_annotations();
    check(ev, result, &annotations)
}

/// Whether `ev` is one DataFusion plan; see [`Mode::Coverage`].
async fn coverage(storage: &Arc<Storage>, ev: &Eval) -> Outcome {
    let Ok(expr) = Engine::parse(&ev.expr) else {
        return Outcome::Skip("does not parse".into());
    };
    let engine = Engine::new(storage.clone(), QueryOptions::default());
    let (start, end, step) = match ev.kind {
        EvalKind::Instant { at } => (at, at, 1),
        EvalKind::Range { start, end, step } => (start, end, step),
    };
    match engine.fallback(&expr, start, end, step).await {
        Ok(None) => Outcome::Pass,
        Ok(Some(why)) => Outcome::Skip(why),
        Err(e) => Outcome::Skip(format!("planning error: {e}")),
    }
}

/// Runs `ev` on the evaluator alone and with the planner (serialising its plans when
/// `roundtrip_plans`); see [`Mode::Differential`].
async fn differ(storage: &Arc<Storage>, ev: &Eval, roundtrip_plans: bool) -> Outcome {
    let Ok(expr) = Engine::parse(&ev.expr) else {
        return Outcome::Skip("does not parse".into());
    };
    // `serial`: as a server plans (these small data sets run their plans in one
    // partition); otherwise in three partitions whatever the size, so the repartitions,
    // split aggregations and partitioned joins are checked too.
    let run = |planner: bool, serial: bool| {
        let parallel = QueryOptions {
            partitions: 3,
            serial_below: 0,
            ..QueryOptions::default()
        };
        let engine = Engine::new(
            storage.clone(),
            QueryOptions {
                planner,
                roundtrip_plans,
                ..if serial {
                    QueryOptions::default()
                } else {
                    parallel
                }
            },
        );
        let expr = &expr;
        async move {
            let r = match ev.kind {
                EvalKind::Instant { at } => engine.instant(expr, at).await,
                EvalKind::Range { start, end, step } => engine.range(expr, start, end, step).await,
            };
            (r, engine.planned_nodes(), engine.take_annotations())
        }
    };
    let (want, _, want_ann) = run(false, true).await;
    let mut outcome = Outcome::Pass;
    for serial in [true, false] {
        let (got, planned, got_ann) = run(true, serial).await;
        if planned == 0 {
            return Outcome::Skip("nothing planned".into());
        }
        let how = if serial { "serial" } else { "in 3 partitions" };
        if want_ann != got_ann {
            return Outcome::Fail(format!(
                "annotations differ: evaluator {want_ann:?}, planner ({how}) {got_ann:?}"
            ));
        }
        outcome = match (&want, got) {
            (Err(a), Err(b)) if a.to_string() == b.to_string() => Outcome::Pass,
            (Ok(a), Ok(b)) => match compare::same_value(a.clone(), b) {
                Ok(()) => Outcome::Pass,
                Err(why) => Outcome::Fail(format!("planner ({how}): {why}")),
            },
            (a, b) => Outcome::Fail(format!("evaluator {a:?}\nplanner ({how}) {b:?}")),
        };
        if !matches!(outcome, Outcome::Pass) {
            break;
        }
    }
    outcome
}

/// Runs `ev` with the planner here and with its plans' tasks on `workers`; see
/// [`Mode::Distributed`].
async fn distributed(
    storage: &Arc<Storage>,
    ev: &Eval,
    workers: &crate::cluster::workers::LocalWorkers,
    tenant: &str,
) -> Outcome {
    let Ok(expr) = Engine::parse(&ev.expr) else {
        return Outcome::Skip("does not parse".into());
    };
    let d = &workers.distribution;
    let run = |distribution: Option<Arc<crate::promql::Distribution>>| {
        let engine = Engine::new(
            storage.clone(),
            QueryOptions {
                distribution,
                ..QueryOptions::default()
            },
        )
        .caller(&crate::auth::Access::unrestricted(tenant));
        let expr = &expr;
        async move {
            let r = match ev.kind {
                EvalKind::Instant { at } => engine.instant(expr, at).await,
                EvalKind::Range { start, end, step } => engine.range(expr, start, end, step).await,
            };
            (r, engine.planned_nodes(), engine.take_annotations())
        }
    };
    let (want, planned, want_ann) = run(None).await;
    if planned == 0 {
        return Outcome::Skip("nothing planned".into());
    }
    let before = d.runs();
    let (got, _, got_ann) = run(Some(d.clone())).await;
    if d.runs() == before {
        return Outcome::Fail("planned, but not run on the workers".into());
    }
    if want_ann != got_ann {
        return Outcome::Fail(format!(
            "annotations differ: one process {want_ann:?}, distributed {got_ann:?}"
        ));
    }
    match (want, got) {
        (Err(a), Err(b)) if a.to_string() == b.to_string() => Outcome::Pass,
        (Ok(a), Ok(b)) => match compare::same_value(a, b) {
            Ok(()) => Outcome::Pass,
            Err(why) => Outcome::Fail(why),
        },
        (a, b) => Outcome::Fail(format!("one process {a:?}\ndistributed {b:?}")),
    }
}
