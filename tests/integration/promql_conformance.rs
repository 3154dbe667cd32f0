//! Prometheus's own PromQL test scripts (`../shared/promql-tests`) through `promqltest`.
//! Fails when the number of passing evals drops below `tests/promql-threshold.txt`.

use std::path::PathBuf;

use quiver::promqltest::{Counts, load_index, run_file};

fn corpus() -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/promql-tests/upstream");
    p.is_dir().then_some(p)
}

fn test_files(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "test"))
        .collect();
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_promql_tests_meet_threshold() {
    let Some(dir) = corpus() else {
        assert!(
            std::env::var("CI").is_err(),
            "CI must have ../shared/promql-tests"
        );
        eprintln!("SKIPPED upstream_promql_tests_meet_threshold: ../shared/promql-tests not found");
        return;
    };
    let files = test_files(&dir);
    let index = load_index(&files[0]);
    assert!(index.is_some(), "eval-index.tsv not found");
    let mut total = Counts::default();
    for f in &files {
        let c = run_file(f, index.as_ref(), &mut |_| {})
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        eprintln!(
            "{}: {} passed, {} failed, {} skipped",
            f.display(),
            c.passed,
            c.failed,
            c.skipped
        );
        total.add(&c);
    }
    let threshold: usize = include_str!("../promql-threshold.txt")
        .trim()
        .parse()
        .unwrap();
    eprintln!(
        "total {} passed, {} failed, {} skipped; stable subset {}/{}",
        total.passed, total.failed, total.skipped, total.clean_passed, total.clean_total
    );
    assert!(
        total.passed >= threshold,
        "PromQL conformance regressed: {} passed < threshold {threshold}",
        total.passed
    );
    // Native histograms are stored and queried: no eval is skipped for any reason.
    assert_eq!(total.skipped, 0, "skipped: {:?}", total.skips);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn experimental_promql_tests_run_to_the_end() {
    let Some(dir) = corpus() else {
        eprintln!(
            "SKIPPED experimental_promql_tests_run_to_the_end: ../shared/promql-tests not found"
        );
        return;
    };
    for f in test_files(&dir.join("experimental")) {
        let c = run_file(&f, None, &mut |_| {})
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        eprintln!(
            "{}: {} passed, {} failed, {} skipped",
            f.display(),
            c.passed,
            c.failed,
            c.skipped
        );
    }
}

/// The planner against the evaluator (its oracle) on every eval of the upstream files that
/// the planner runs any part of: the same series, values and annotations. Counts how many
/// evals the planner takes part in, so a lowering that stops being used shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planner_agrees_with_the_evaluator_on_upstream_tests() {
    // 386 when written: a lowering that stops being used fails.
    differential(quiver::promqltest::Mode::Differential, 380).await
}

/// The same, with every physical plan serialised through the plan codec and the decoded
/// copy run (the copy must also display exactly as the original).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plans_survive_serialisation_on_upstream_tests() {
    differential(quiver::promqltest::Mode::Codec, 380).await
}

/// Issue 26: every eval the planner runs, with its plans' tasks on three workers reached
/// over TCP, against the one process: the same series, values, errors and annotations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plans_run_distributed_on_upstream_tests() {
    // 562 when written.
    differential(quiver::promqltest::Mode::Distributed, 550).await
}

async fn differential(mode: quiver::promqltest::Mode, at_least: usize) {
    use quiver::promqltest::run_file_as;
    let Some(dir) = corpus() else {
        assert!(
            std::env::var("CI").is_err(),
            "CI must have ../shared/promql-tests"
        );
        eprintln!("SKIPPED {mode:?} differential test: ../shared/promql-tests not found");
        return;
    };
    let mut total = Counts::default();
    let mut failures = Vec::new();
    for f in &test_files(&dir) {
        let c = run_file_as(f, None, &mut |m| failures.push(m), mode)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        total.add(&c);
    }
    eprintln!(
        "planner ({mode:?}) vs evaluator: {} agreed, {} differed, {} not planned",
        total.passed, total.failed, total.skipped
    );
    assert!(
        failures.is_empty(),
        "planner differs:\n{}",
        failures.join("\n")
    );
    assert!(
        total.passed >= at_least,
        "only {} evals planned",
        total.passed
    );
}

/// Every upstream expression planned whole or not, and why not: each reason a node is
/// left to the evaluator must be an instance of a declared reason (`promql::plan::decline`,
/// every one of which docs/conformance.md lists).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fallback_is_documented() {
    use quiver::promqltest::{Mode, run_file_as};
    let Some(dir) = corpus() else {
        assert!(
            std::env::var("CI").is_err(),
            "CI must have ../shared/promql-tests"
        );
        eprintln!("SKIPPED every_fallback_is_documented: ../shared/promql-tests not found");
        return;
    };
    let mut total = Counts::default();
    for f in &test_files(&dir) {
        let c = run_file_as(f, None, &mut |_| {}, Mode::Coverage)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        total.add(&c);
    }
    eprintln!(
        "planned whole: {} evals; not: {}",
        total.passed, total.skipped
    );
    for (why, n) in &total.skips {
        eprintln!("  {n:4}  {why}");
    }
    // Each reason the corpus reaches is an instance of a declared template (the unit
    // tests of `promql::plan::decline` check that every template is documented).
    let undocumented: Vec<&String> = total
        .skips
        .keys()
        .filter(|why| {
            !quiver::promql::DECLINE_TEMPLATES
                .iter()
                .any(|t| quiver::promql::is_decline_of(why, t))
        })
        .collect();
    assert!(
        undocumented.is_empty(),
        "fallbacks that are no declared reason: {undocumented:#?}"
    );
}
