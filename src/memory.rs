//! Where the process's memory goes: the allocator's figures, the bytes the
//! queries in flight have reserved, and the owners `/metrics` breaks resident memory into
//! (`quiver_memory_owner_bytes`, `quiver_allocator_bytes`).
//!
//! The allocator is glibc's malloc with two settings changed, the trim and mapped-block
//! thresholds ([`tune_allocator`], `--allocator-trim-bytes`), and a thread that gives its
//! free memory back once too much of it is resident ([`spawn_trimmer`],
//! `--allocator-free-budget`). Measured on this machine
//! (docs/benchmarks.md, "Memory"): jemalloc as a drop-in had a higher peak RSS at its
//! default decay and was twice as slow with immediate purging; capping glibc's arenas (8
//! per core by default) cut the peer benchmark's peak by a quarter but halved remote-write
//! throughput at 2 arenas and cost a third at 4. What the allocator keeps is reported
//! instead (`free`), beside what is allocated.

use std::fmt;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use datafusion::common::Result as DfResult;
use datafusion::execution::memory_pool::{
    GreedyMemoryPool, MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation,
    TrackConsumersPool,
};

/// The allocator's own figures, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllocatorStats {
    /// Bytes the process asked for and has not freed (in arenas and mapped on their own).
    pub allocated: u64,
    /// Free bytes the allocator keeps in its arenas for reuse (resident unless trimmed).
    pub free: u64,
    /// Of `allocated`, the large blocks mapped on their own (returned when freed).
    pub mapped: u64,
}

/// The allocator's figures now (glibc's `mallinfo2`, which walks every arena's free lists:
/// call it per scrape, not per request); `None` where there is no such call.
pub fn allocator_stats() -> Option<AllocatorStats> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 takes no arguments and returns a plain struct.
        let m = unsafe { libc::mallinfo2() };
        Some(AllocatorStats {
            allocated: (m.uordblks + m.hblkhd) as u64,
            free: m.fordblks as u64,
            mapped: m.hblkhd as u64,
        })
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    None
}

/// The trim threshold `serve` sets unless told otherwise: 32 MiB.
///
/// glibc gives a free block at the top of an arena back to the kernel once it exceeds
/// the trim threshold, which starts at 128 KiB and rises only as large mapped blocks are
/// freed. A query decodes every series it reads into fresh buffers of tens of KiB and frees
/// them at once, so with the default the arena shrank after each batch and the next one
/// faulted the same pages in again, zeroed by the kernel. Issue 26's 57.6M-sample query
/// (docs/benchmarks.md, issue 26, "Session 19: the allocator's trim threshold"): a querier alone took
/// 738 ms with glibc's defaults and 551 ms at 32 MiB; 4 MiB was no better than the
/// default, 16 and 64 MiB as good as 32.
pub const DEFAULT_TRIM_THRESHOLD: usize = 32 << 20;

/// The mapped-block threshold set with the trim threshold: blocks from 4 MiB up are
/// mapped on their own (and unmapped when freed). Setting the trim threshold turns off
/// glibc's adaptive mapped-block threshold, which otherwise climbs to the largest block
/// freed (up to 32 MiB); left at its initial 128 KiB, every block above that was mapped
/// and faulted in anew, and the peer table's 24 h cells took up to 1.3x as long.
pub const MMAP_THRESHOLD: usize = 4 << 20;

/// Free memory at the top of an arena up to `trim_bytes` stays with the process for the
/// next allocation instead of going back to the kernel (glibc's `M_TRIM_THRESHOLD`), and
/// blocks from [`MMAP_THRESHOLD`] up are mapped on their own. `0` keeps glibc's own,
/// adaptive, thresholds. Returns whether the allocator took the settings (only glibc
/// has them).
pub fn tune_allocator(trim_bytes: usize) -> bool {
    if trim_bytes == 0 {
        return true;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let int = |n: usize| libc::c_int::try_from(n).unwrap_or(libc::c_int::MAX);
        // SAFETY: mallopt takes two integers and only changes the allocator's parameters.
        unsafe {
            libc::mallopt(libc::M_TRIM_THRESHOLD, int(trim_bytes)) == 1
                && libc::mallopt(libc::M_MMAP_THRESHOLD, int(MMAP_THRESHOLD)) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    false
}

/// Gives the free memory of every allocator arena back to the kernel (glibc's
/// `malloc_trim`), whatever the trim threshold. For the end of a start: loading blocks
/// decodes their series files on blocking threads, each with an arena of its own, and
/// frees the decoded columns among the label sets the catalog keeps, so without this a
/// million-series start kept ~170 MB of free memory resident (RSS at ready 372 MB for
/// 204 MB allocated). Returns whether the allocator has the call (only glibc does).
pub fn release_free_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim takes a size and only returns free pages to the kernel.
        unsafe { libc::malloc_trim(0) };
        true
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    false
}

/// Resident free memory the allocator may keep before [`spawn_trimmer`] gives it back,
/// unless told otherwise (`--allocator-free-budget`): 48 MiB.
pub const DEFAULT_FREE_BUDGET: usize = 48 << 20;

/// How often the trimmer looks.
///
/// Each trim makes the next queries fault in again what they reuse: checked every second,
/// the peer cells took 1.02–1.03× as long (median cell, `ab.py` both orders) and the peak
/// did not fall, since a second of queries faults the memory back in. Every 10 s keeps
/// that cost a tenth as often and still brings an idle server down within 10 s.
const TRIM_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Times the trimmer gave free memory back (`quiver_allocator_trims_total`).
static TRIMS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Times free memory was given back because it was over the budget.
pub fn trims() -> u64 {
    TRIMS.load(Ordering::Relaxed)
}

/// Anonymous resident memory not allocated: what the allocator keeps free, resident
/// (and the threads' stacks, a few MiB). From `/proc/self/statm` (resident minus
/// file-backed pages) and the allocator's `allocated`; `None` where either is missing.
pub fn resident_free() -> Option<u64> {
    resident_free_beside(allocator_stats()?.allocated)
}

/// [`resident_free`] with the allocator's `allocated` already read (`mallinfo2` walks
/// every arena under its lock: once per scrape is enough).
pub fn resident_free_beside(allocated: u64) -> Option<u64> {
    let (resident, shared) = resident_pages()?;
    Some(resident.saturating_sub(shared).saturating_sub(allocated))
}

/// Resident file-backed (and shared) memory, in bytes: mostly the executable's code and
/// constant pages ([`crate::code_pages`]).
pub fn resident_file() -> Option<u64> {
    Some(resident_pages()?.1)
}

/// Resident memory and the file-backed or shared part of it, in bytes
/// (`/proc/self/statm`).
fn resident_pages() -> Option<(u64, u64)> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let mut f = statm.split_whitespace().map(|x| x.parse::<u64>().ok());
    let (resident, shared) = (f.nth(1)??, f.next()??);
    // SAFETY: sysconf takes a name and returns a number.
    let page = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).ok()?;
    Some((resident * page, shared * page))
}

/// Gives the allocator's free memory back to the kernel when more than `budget` bytes of
/// it are resident; returns whether it did.
///
/// Why: the trim threshold keeps free memory at the top of each arena for the next query,
/// but most of what a query frees lies between the samples cache's runs, which other
/// queries allocated in the same arenas; glibc keeps such holes resident until
/// `malloc_trim`. On the peer benchmark that was ~100–115 MiB of the ~285 MiB peak
/// (docs/benchmarks.md, "Memory"). Given back, it costs nothing until a query needs it.
pub fn trim_if_over(budget: usize) -> bool {
    match resident_free() {
        Some(free) if free > budget as u64 && release_free_memory() => {
            TRIMS.fetch_add(1, Ordering::Relaxed);
            true
        }
        _ => false,
    }
}

/// Starts a thread that, every [`TRIM_EVERY`], calls [`trim_if_over`] (`budget` 0: never,
/// nor where the allocator cannot trim) and, with `release_code`, drops the executable's
/// resident code pages ([`crate::code_pages::release`]).
pub fn spawn_trimmer(budget: usize, release_code: bool) {
    let trim = budget > 0 && resident_free().is_some();
    if !trim && !release_code {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("quiver-trim".into())
        .spawn(move || {
            loop {
                std::thread::sleep(TRIM_EVERY);
                if trim {
                    trim_if_over(budget);
                }
                if release_code {
                    crate::code_pages::release();
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "could not start the allocator trimmer");
    }
}

/// Bytes reserved by every query's memory pool in this process now (sorts, aggregations,
/// folds, SQL scans: the operators that account for their buffers).
static QUERY_RESERVED: AtomicUsize = AtomicUsize::new(0);

/// What the queries in flight have reserved, in bytes.
pub fn query_reserved() -> usize {
    QUERY_RESERVED.load(Ordering::Relaxed)
}

/// One query's memory pool: DataFusion's greedy pool limited to `limit` bytes, naming its
/// largest consumers when a reservation fails (what `with_memory_limit` builds), whose
/// reservations also count in [`query_reserved`].
pub fn query_pool(limit: usize) -> Arc<dyn MemoryPool> {
    Arc::new(Counted(TrackConsumersPool::new(
        GreedyMemoryPool::new(limit),
        NonZeroUsize::new(5).expect("non-zero"),
    )))
}

#[derive(Debug)]
struct Counted(TrackConsumersPool<GreedyMemoryPool>);

impl fmt::Display for Counted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl MemoryPool for Counted {
    fn name(&self) -> &str {
        self.0.name()
    }

    fn register(&self, consumer: &MemoryConsumer) {
        self.0.register(consumer)
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        self.0.unregister(consumer)
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.0.grow(reservation, additional);
        QUERY_RESERVED.fetch_add(additional, Ordering::Relaxed);
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.0.shrink(reservation, shrink);
        QUERY_RESERVED.fetch_sub(shrink, Ordering::Relaxed);
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> DfResult<()> {
        self.0.try_grow(reservation, additional)?;
        QUERY_RESERVED.fetch_add(additional, Ordering::Relaxed);
        Ok(())
    }

    fn reserved(&self) -> usize {
        self.0.reserved()
    }

    fn memory_limit(&self) -> MemoryLimit {
        self.0.memory_limit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Free memory pinned between live allocations (as a query's buffers between the
    /// samples cache's runs) stays resident until the trimmer gives it back.
    #[test]
    fn free_memory_over_the_budget_goes_back() {
        let Some(start) = resident_free() else {
            eprintln!("SKIPPED: no mallinfo2 or /proc/self/statm on this target");
            return;
        };
        // 600 holes of 96 KiB (below glibc's initial 128 KiB mapped-block threshold, so
        // in the arena), each followed by a small block that stays.
        let mut pins = Vec::new();
        let mut holes = Vec::new();
        for i in 0..600u32 {
            holes.push(std::hint::black_box(vec![i as u8 | 1; 96 << 10]));
            pins.push(std::hint::black_box(vec![i; 16]));
        }
        drop(holes);
        let before = resident_free().expect("figures");
        assert!(before >= start + (40 << 20), "{start} → {before}");
        assert!(!trim_if_over(usize::MAX), "under the budget: nothing to do");
        let count = trims();
        assert!(trim_if_over(16 << 20), "{before} resident free");
        assert_eq!(trims(), count + 1);
        let after = resident_free().expect("figures");
        assert!(after < before - (40 << 20), "{before} → {after}");
        drop(pins);
    }

    #[test]
    fn the_allocator_reports_what_it_holds() {
        let Some(before) = allocator_stats() else {
            eprintln!("SKIPPED: no mallinfo2 on this target");
            return;
        };
        let block = std::hint::black_box(vec![1u8; 64 << 20]);
        let during = allocator_stats().expect("stats");
        assert!(
            during.allocated >= before.allocated + (60 << 20),
            "{before:?} → {during:?}"
        );
        assert!(during.mapped >= 60 << 20, "{during:?}");
        drop(block);
        let after = allocator_stats().expect("stats");
        assert!(
            after.allocated + (60 << 20) <= during.allocated,
            "{after:?}"
        );
    }

    /// What a query's read does: many buffers of tens of KiB, touched, then all freed.
    /// Returns how much more the allocator holds free afterwards than before.
    fn churn() -> i64 {
        let before = allocator_stats().expect("stats").free as i64;
        let bufs: Vec<Vec<u8>> = (0..256)
            .map(|i| std::hint::black_box(vec![i as u8; 96 << 10]))
            .collect();
        drop(std::hint::black_box(bufs));
        allocator_stats().expect("stats").free as i64 - before
    }

    #[test]
    fn freed_query_buffers_stay_with_the_process_below_the_trim_threshold() {
        if allocator_stats().is_none() {
            eprintln!("SKIPPED: no mallinfo2 on this target");
            return;
        }
        // Each on a thread of its own, so in an arena of its own. At glibc's initial
        // 128 KiB the 24 MiB freed go back to the kernel (the arena's top is trimmed);
        // under the threshold `serve` sets they stay, free for the next query.
        let kept = |threshold: usize| {
            std::thread::spawn(move || {
                assert!(tune_allocator(threshold));
                churn()
            })
            .join()
            .expect("churn")
        };
        let trimmed = kept(128 << 10);
        assert!(trimmed < 8 << 20, "trimmed too little: {trimmed}");
        let held = kept(DEFAULT_TRIM_THRESHOLD);
        assert!(held >= 20 << 20, "kept too little: {held}");
    }

    #[test]
    fn query_reservations_are_counted_until_released() {
        // A size no other test reserves (nothing is allocated: a reservation is a count).
        const BIG: usize = 3 << 30;
        let pool = query_pool(4 << 30);
        let r = MemoryConsumer::new("test").register(&pool);
        r.try_grow(BIG).expect("within the limit");
        assert!(query_reserved() >= BIG);
        assert!(r.try_grow(2 << 30).is_err(), "over the limit");
        r.shrink(BIG / 3);
        assert!(query_reserved() >= BIG - BIG / 3);
        drop(r);
        assert!(query_reserved() < BIG / 3, "{}", query_reserved());
    }
}
