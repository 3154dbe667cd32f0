//! The threads that write and fsync every tenant's WAL.
//!
//! A fixed, small pool of its own: not one thread per tenant (1,000 tenants must not mean
//! 1,000 threads), and not tokio's blocking pool, which request handlers also use (an
//! import parses on it) — were that pool full of handlers waiting for their WAL commit, the
//! commits themselves could never run.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, LazyLock, Mutex};

use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send>;

/// Threads of the pool: fsyncs of different tenants overlap this much.
pub const WAL_THREADS: usize = 4;

struct Pool {
    tx: Mutex<Sender<Job>>,
}

static POOL: LazyLock<Pool> = LazyLock::new(|| {
    let (tx, rx) = std::sync::mpsc::channel::<Job>();
    let rx = Arc::new(Mutex::new(rx));
    for i in 0..WAL_THREADS {
        let rx: Arc<Mutex<Receiver<Job>>> = rx.clone();
        std::thread::Builder::new()
            .name(format!("quiver-wal-{i}"))
            .spawn(move || {
                loop {
                    let job = match rx.lock() {
                        Ok(r) => r.recv(),
                        Err(_) => return,
                    };
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                }
            })
            .expect("spawn WAL thread");
    }
    Pool { tx: Mutex::new(tx) }
});

/// Runs `f` on a WAL thread. `Err` if it panicked (its result is lost).
pub async fn run<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, oneshot::error::RecvError> {
    let (tx, rx) = oneshot::channel();
    let job: Job = Box::new(move || {
        if let Ok(v) = std::panic::catch_unwind(AssertUnwindSafe(f)) {
            let _ = tx.send(v);
        }
    });
    if let Ok(sender) = POOL.tx.lock() {
        let _ = sender.send(job);
    }
    rx.await
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn runs_jobs_and_survives_panics() {
        assert_eq!(super::run(|| 2 + 2).await.unwrap(), 4);
        assert!(
            super::run(|| {
                if std::hint::black_box(true) {
                    panic!("boom");
                }
            })
            .await
            .is_err()
        );
        assert_eq!(super::run(|| 5).await.unwrap(), 5);
    }
}
