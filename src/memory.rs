//! Where the process's memory goes: the allocator's figures, the bytes the
//! queries in flight have reserved, and the owners `/metrics` breaks resident memory into
//! (`quiver_memory_owner_bytes`, `quiver_allocator_bytes`).
//!
//! The allocator is glibc's malloc, with its defaults. Measured on this machine
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
