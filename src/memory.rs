//! Where the process's memory goes: the allocator's figures, the bytes the
//! queries in flight have reserved, and the owners `/metrics` breaks resident memory into
//! (`quiver_memory_owner_bytes`, `quiver_allocator_bytes`).
//!
//! The allocator is glibc's malloc with two settings changed, the trim and mapped-block
//! thresholds ([`tune_allocator`], `--allocator-trim-bytes`). Measured on this machine
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
