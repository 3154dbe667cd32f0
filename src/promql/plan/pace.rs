//! How much of a leaf each of its tasks reads (issue 26): shares sized by each querier's
//! measured pace, so that a querier on a slower core, or one busier with other work, gets
//! fewer series and a stage's tasks end together.
//!
//! A leaf's tasks read contiguous runs of its series, and the stage waits for the slowest.
//! Equal runs leave the faster querier idle at the end: session 21 saw the two tasks of
//! one 57.6M-sample query end 20–50 ms apart out of 160–260 ms, as the machine's two
//! cores ran at different speeds. Every distributed run reports each task's samples and
//! its leaves' wall time ([`super::report`]); [`Pace::observe`] keeps each querier's speed
//! relative to the run's mean, smoothed over runs, and [`Pace::weights`] gives the next
//! plan's tasks shares in proportion. The split stays static within a query (a task is
//! one request datafusion-distributed sends), so it corrects a lasting difference, not a
//! momentary one.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::Mutex;

use url::Url;

/// The weight of the newest run in a querier's smoothed speed.
const SMOOTHING: f64 = 0.3;
/// Runs whose tasks read fewer samples, or ran shorter, say more about fixed costs (the
/// plan's decoding, a round trip) than about speed; they are not counted.
const MIN_SAMPLES: u64 = 1 << 20;
const MIN_WALL_US: u64 = 10_000;
/// A querier's weight stays within these factors of the mean: one odd run (a querier
/// paused, a cold read from the bucket) moves the split, it does not empty a task.
const BOUNDS: (f64, f64) = (0.5, 2.0);
/// Cuts move in steps of 1/64 of a leaf's series: a series near a cut keeps its querier
/// (and that querier's samples cache) while the speeds wobble within a step.
const QUANTUM: f64 = 64.0;

/// What one task of a run did: the samples its leaves read and their wall time.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub(crate) struct TaskWork {
    pub samples: u64,
    pub wall_us: u64,
}

/// Each querier's speed relative to its peers', smoothed over runs.
#[derive(Debug)]
pub(crate) struct Pace {
    relative: Mutex<HashMap<Url, f64>>,
    /// The least samples and wall time of a querier's tasks in a run that counts.
    least: TaskWork,
}

impl Default for Pace {
    fn default() -> Self {
        Pace {
            relative: Mutex::default(),
            least: TaskWork {
                samples: MIN_SAMPLES,
                wall_us: MIN_WALL_US,
            },
        }
    }
}

impl Pace {
    /// A pace that counts every run, however small, starting from `weights` (tests of
    /// uneven splits on small data).
    #[cfg(test)]
    pub(crate) fn eager(weights: &[(Url, f64)]) -> Pace {
        Pace {
            relative: Mutex::new(weights.iter().cloned().collect()),
            least: TaskWork {
                samples: 1,
                wall_us: 1,
            },
        }
    }

    /// The weight of each of a stage's `tasks`, routed task i to `routed[i % n]`
    /// (`StableRouting`); 1 for a querier not measured yet.
    pub(crate) fn weights(&self, routed: &[Url], tasks: usize) -> Vec<f64> {
        if routed.is_empty() {
            return vec![1.0; tasks];
        }
        let known = self.relative.lock().unwrap_or_else(|e| e.into_inner());
        (0..tasks)
            .map(|i| known.get(&routed[i % routed.len()]).copied().unwrap_or(1.0))
            .collect()
    }

    /// Takes in one run's tasks (by task id, routed as in [`Pace::weights`]). Each
    /// querier's speed is its samples over its longest task's wall time; the run counts
    /// when at least two queriers did enough work to be timed.
    pub(crate) fn observe(&self, routed: &[Url], tasks: &BTreeMap<usize, TaskWork>) {
        if routed.len() < 2 {
            return;
        }
        let mut per: HashMap<&Url, TaskWork> = HashMap::new();
        for (&t, w) in tasks {
            let e = per.entry(&routed[t % routed.len()]).or_default();
            e.samples += w.samples;
            e.wall_us = e.wall_us.max(w.wall_us);
        }
        let speeds: Vec<(&Url, f64)> = per
            .into_iter()
            .filter(|(_, w)| w.samples >= self.least.samples && w.wall_us >= self.least.wall_us)
            .map(|(u, w)| (u, w.samples as f64 / w.wall_us as f64))
            .collect();
        if speeds.len() < 2 {
            return;
        }
        let mean = speeds.iter().map(|(_, s)| s).sum::<f64>() / speeds.len() as f64;
        let mut known = self.relative.lock().unwrap_or_else(|e| e.into_inner());
        // Queriers that left (a restarted pod comes back under another address) are
        // forgotten, here and in `/metrics`: the map holds the live ones only.
        known.retain(|u, _| {
            let live = routed.contains(u);
            if !live {
                let _ = crate::api::metrics::METRICS
                    .distributed_task_weight
                    .remove_label_values(&[u.as_str()]);
            }
            live
        });
        for (u, s) in speeds {
            let now = (s / mean).clamp(BOUNDS.0, BOUNDS.1);
            let w = known.entry(u.clone()).or_insert(1.0);
            *w = (*w * (1.0 - SMOOTHING) + now * SMOOTHING).clamp(BOUNDS.0, BOUNDS.1);
            crate::api::metrics::METRICS
                .distributed_task_weight
                .with_label_values(&[u.as_str()])
                .set(*w);
        }
    }

    /// The smoothed weights.
    #[cfg(test)]
    pub(crate) fn snapshot(&self) -> Vec<(Url, f64)> {
        let known = self.relative.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<(Url, f64)> = known.iter().map(|(u, w)| (u.clone(), *w)).collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

/// The run of `len` series task `i` reads when the tasks' shares are `weights`: contiguous
/// runs in task order that cover `0..len` once. Equal weights cut exactly as
/// `len * i / n`; others at the nearest 1/64 of the series.
pub(crate) fn cut(len: usize, weights: &[f64], i: usize) -> Range<usize> {
    let n = weights.len().max(1);
    let i = i.min(n);
    let equal = weights.windows(2).all(|w| w[0] == w[1])
        || weights.iter().any(|w| !w.is_finite() || *w <= 0.0);
    let at = |k: usize| -> usize {
        if k >= n {
            return len;
        }
        if equal {
            return len * k / n;
        }
        let total: f64 = weights.iter().sum();
        let before: f64 = weights[..k].iter().sum();
        let steps = (before / total * QUANTUM).round();
        ((steps / QUANTUM) * len as f64)
            .round()
            .clamp(0.0, len as f64) as usize
    };
    let a = at(i);
    a..at(i + 1).max(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(n: usize) -> Vec<Url> {
        (0..n)
            .map(|i| Url::parse(&format!("http://q{i}:1")).unwrap())
            .collect()
    }

    fn work(samples: u64, wall_ms: f64) -> TaskWork {
        TaskWork {
            samples,
            wall_us: (wall_ms * 1000.0) as u64,
        }
    }

    #[test]
    fn cuts_cover_every_series_once_in_order() {
        for len in [0, 1, 2, 7, 64, 100, 9_992] {
            for weights in [
                vec![1.0],
                vec![1.0, 1.0],
                vec![1.0, 1.0, 1.0],
                vec![1.3, 0.7],
                vec![2.0, 0.5, 1.0],
                vec![0.5, 2.0, 2.0, 0.5],
                vec![1.0, f64::NAN],
            ] {
                let mut next = 0;
                for i in 0..weights.len() {
                    let r = cut(len, &weights, i);
                    assert_eq!(r.start, next, "{len} {weights:?} task {i}");
                    next = r.end;
                }
                assert_eq!(next, len, "{len} {weights:?}");
            }
        }
    }

    #[test]
    fn equal_weights_cut_as_before_and_others_in_proportion() {
        for (len, n) in [(10, 3), (9_992, 2), (5, 4)] {
            for i in 0..n {
                assert_eq!(cut(len, &vec![1.0; n], i), len * i / n..len * (i + 1) / n);
            }
        }
        // 1.5 : 1 is 38.4 of 64 steps: the cut lands at 38/64 of the series.
        assert_eq!(cut(6_400, &[1.5, 1.0], 0), 0..3_800);
        assert_eq!(cut(6_400, &[1.5, 1.0], 1), 3_800..6_400);
    }

    #[test]
    fn a_slower_querier_is_given_less_and_the_split_settles() {
        let pace = Pace::default();
        let routed = urls(2);
        assert_eq!(pace.weights(&routed, 2), vec![1.0, 1.0]);
        // q1 reads at 3/4 of q0's speed, whatever its share.
        for _ in 0..30 {
            let w = pace.weights(&routed, 2);
            let share0 = w[0] / (w[0] + w[1]);
            let total = 40_000_000.0;
            let (s0, s1) = (total * share0, total * (1.0 - share0));
            let tasks = BTreeMap::from([
                (0, work(s0 as u64, s0 / 200_000.0)),
                (1, work(s1 as u64, s1 / 150_000.0)),
            ]);
            pace.observe(&routed, &tasks);
        }
        let w = pace.weights(&routed, 2);
        let ratio = w[0] / w[1];
        assert!((ratio - 4.0 / 3.0).abs() < 0.02, "{w:?}");
        // Task i goes to querier i mod n: a third task is q0's again.
        assert_eq!(pace.weights(&routed, 3)[2], w[0]);
        assert_eq!(pace.snapshot().len(), 2);
    }

    #[test]
    fn small_runs_and_lone_queriers_are_not_counted() {
        let pace = Pace::default();
        let routed = urls(2);
        // Too few samples, too short, or one querier timed: nothing learned.
        for tasks in [
            BTreeMap::from([(0, work(1_000, 50.0)), (1, work(1_000, 100.0))]),
            BTreeMap::from([(0, work(4 << 20, 5.0)), (1, work(4 << 20, 9.0))]),
            BTreeMap::from([(0, work(4 << 20, 50.0))]),
        ] {
            pace.observe(&routed, &tasks);
            assert_eq!(pace.weights(&routed, 2), vec![1.0, 1.0]);
        }
        pace.observe(&routed[..1], &BTreeMap::from([(0, work(4 << 20, 50.0))]));
        assert!(pace.snapshot().is_empty());
    }

    #[test]
    fn queriers_that_left_are_forgotten() {
        let pace = Pace::default();
        let all = urls(3);
        let run = BTreeMap::from([(0, work(4 << 20, 40.0)), (1, work(4 << 20, 60.0))]);
        pace.observe(&all[..2], &run);
        assert_eq!(pace.snapshot().len(), 2);
        // q0 left; q1 and q2 ran the next plan.
        pace.observe(&all[1..], &run);
        let kept: Vec<Url> = pace.snapshot().into_iter().map(|(u, _)| u).collect();
        assert_eq!(kept, all[1..].to_vec());
    }

    #[test]
    fn one_odd_run_moves_the_split_within_bounds() {
        let pace = Pace::default();
        let routed = urls(2);
        // q1 paused for a second: its weight drops, by the smoothing, not to nothing.
        pace.observe(
            &routed,
            &BTreeMap::from([(0, work(20 << 20, 100.0)), (1, work(20 << 20, 1_100.0))]),
        );
        let w = pace.weights(&routed, 2);
        assert!(w[1] >= 0.8 && w[1] < 1.0, "{w:?}");
        for _ in 0..50 {
            pace.observe(
                &routed,
                &BTreeMap::from([(0, work(20 << 20, 100.0)), (1, work(20 << 20, 10_000.0))]),
            );
        }
        let w = pace.weights(&routed, 2);
        assert!(w[1] >= BOUNDS.0 && w[0] <= BOUNDS.1, "{w:?}");
    }
}
