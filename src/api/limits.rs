//! Per-tenant admission: a bound on concurrent queries (429 beyond, so one tenant's
//! flood cannot starve the others or grow memory without bound) and a token bucket on
//! written samples per second.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::ApiError;

/// Imports streaming at once, over all tenants: each holds a parsing thread for as long as
/// its client keeps sending.
pub const MAX_CONCURRENT_IMPORTS: usize = 8;

pub struct Admission {
    max_queries: usize,
    imports: Arc<Semaphore>,
    queries: parking_lot::Mutex<HashMap<String, Arc<Semaphore>>>,
    /// Samples per second per tenant (0: unlimited) and the burst a bucket holds.
    write_rate: f64,
    write_burst: f64,
    buckets: parking_lot::Mutex<HashMap<String, Bucket>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Admission {
    pub fn new(max_queries: usize, write_rate: f64, write_burst: f64) -> Self {
        Admission {
            max_queries: max_queries.max(1),
            imports: Arc::new(Semaphore::new(MAX_CONCURRENT_IMPORTS)),
            queries: Default::default(),
            write_rate,
            write_burst: write_burst.max(write_rate),
            buckets: Default::default(),
        }
    }

    /// Queries one tenant may run at once.
    pub fn max_queries(&self) -> usize {
        self.max_queries
    }

    /// Samples per second one tenant may write (0: unlimited).
    pub fn write_rate(&self) -> f64 {
        self.write_rate
    }

    /// A slot for one query of `tenant`, held until the permit drops.
    pub fn query(&self, tenant: &str) -> Result<OwnedSemaphorePermit, ApiError> {
        let sem = self
            .queries
            .lock()
            .entry(tenant.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(self.max_queries)))
            .clone();
        sem.try_acquire_owned().map_err(|_| ApiError {
            kind: super::error::ErrorKind::TooManyRequests,
            message: format!(
                "too many concurrent queries for this tenant (limit {}); retry later",
                self.max_queries
            ),
        })
    }

    /// A slot for one streaming import; `None` when all are taken (answer 429).
    pub fn import(&self) -> Option<OwnedSemaphorePermit> {
        self.imports.clone().try_acquire_owned().ok()
    }

    /// Takes `samples` tokens from the tenant's bucket; `false` when the rate is exceeded.
    pub fn write(&self, tenant: &str, samples: usize) -> bool {
        if self.write_rate <= 0.0 {
            return true;
        }
        let now = Instant::now();
        let mut buckets = self.buckets.lock();
        let b = buckets.entry(tenant.to_string()).or_insert(Bucket {
            tokens: self.write_burst,
            at: now,
        });
        let refill = now.duration_since(b.at).as_secs_f64() * self.write_rate;
        b.tokens = (b.tokens + refill).min(self.write_burst);
        b.at = now;
        let n = samples as f64;
        if n <= b.tokens {
            b.tokens -= n;
            true
        } else {
            false
        }
    }
}

impl Default for Admission {
    fn default() -> Self {
        Admission::new(20, 0.0, 0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_slots_are_per_tenant() {
        let a = Admission::new(1, 0.0, 0.0);
        let p = a.query("a").unwrap();
        assert_eq!(
            a.query("a").unwrap_err().kind,
            super::super::error::ErrorKind::TooManyRequests
        );
        let _b = a.query("b").unwrap();
        drop(p);
        assert!(a.query("a").is_ok());
    }

    #[test]
    fn write_bucket_refuses_beyond_burst() {
        let a = Admission::new(1, 100.0, 1000.0);
        assert!(a.write("t", 1000));
        assert!(!a.write("t", 500));
        assert!(a.write("other", 1000));
    }
}
