//! Stopping a query: a deadline (the query timeout) and a flag set when the request goes
//! away. The evaluator checks both at every AST node and in its per-series loops, so CPU
//! work that never awaits still stops soon after the request's time is up.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::error::PromqlError;

#[derive(Debug, Clone, Default)]
pub struct Cancel {
    flag: Arc<AtomicBool>,
    deadline: Option<Instant>,
}

impl Cancel {
    /// Times out `timeout` from now.
    pub fn after(timeout: Duration) -> Self {
        Cancel {
            flag: Arc::default(),
            deadline: Instant::now().checked_add(timeout),
        }
    }

    /// A token stopped with this one (the same flag) that times out `timeout` from now:
    /// a task of a distributed query on another process, stopped when its query is.
    pub fn sharing(&self, timeout: Duration) -> Self {
        Cancel {
            flag: self.flag.clone(),
            deadline: Instant::now().checked_add(timeout),
        }
    }

    /// Time left until the deadline (`None`: no deadline; zero once passed).
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// Stops the query at its next check (the client went away, or it was aborted).
    pub fn cancel(&self) {
        self.flag.store(true, Ordering::Relaxed);
    }

    /// `Err` once the query must stop.
    pub fn check(&self) -> Result<(), PromqlError> {
        if self.flag.load(Ordering::Relaxed) {
            return Err(PromqlError::Canceled);
        }
        match self.deadline {
            Some(d) if Instant::now() >= d => Err(PromqlError::Timeout),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_and_flag_stop_the_query() {
        assert!(Cancel::default().check().is_ok());
        let c = Cancel::after(Duration::from_secs(3600));
        assert!(c.check().is_ok());
        c.clone().cancel();
        assert!(matches!(c.check(), Err(PromqlError::Canceled)));
        let t = Cancel::after(Duration::ZERO);
        assert!(matches!(t.check(), Err(PromqlError::Timeout)));
    }
}
