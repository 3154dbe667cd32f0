//! This process's cores, read once.
//!
//! `std::thread::available_parallelism` reads the CPU affinity and the cgroup's CPU quota
//! (it opens and reads files under `/proc` and `/sys/fs/cgroup`) on every call: called per
//! query it was 7.5 % of the CPU a `vector(1)` query cost. The affinity `taskset` sets and
//! the cgroup quota are fixed for the life of the process here, so the answer is kept.

use std::sync::OnceLock;

/// Cores this process may run on (its affinity and CPU quota), at least 1.
pub fn cores() -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}
