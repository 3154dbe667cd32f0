//! Query CPU work (PromQL, SQL, remote read) runs on its own tokio runtime, never on the
//! one that serves HTTP: a heavy query cannot delay remote-write acknowledgements, health
//! checks or other tenants' requests (what InfluxDB 3 and DataFusion's own guidance do).
//!
//! Its threads have large stacks: evaluation recurses once per AST level, and
//! `promql::guard` bounds the depth to what these stacks hold. A query is stopped when its
//! timeout passes or its request goes away: the task is aborted at its next await, and its
//! [`Cancel`] is set so loops that never await stop at their next check. A panic inside
//! becomes a 500 in the error envelope; the process stays up.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tracing::Instrument;

use super::ApiError;
use crate::promql::Cancel;

/// Stack of each query thread. Only the pages a query touches are committed. Evaluation
/// recurses once per nesting level, up to `--query-max-depth` (10,000); a debug build
/// needs ~45 KB a level (a release build far less), so 1 GiB keeps the limit safe in both.
pub const QUERY_STACK_BYTES: usize = 1 << 30;

#[derive(Clone)]
pub struct QueryRuntime {
    inner: Arc<Inner>,
}

struct Inner {
    rt: Option<tokio::runtime::Runtime>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Dropping a runtime blocks; from inside another runtime that panics.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl QueryRuntime {
    /// A runtime with `threads` workers (at least one).
    pub fn new(threads: usize) -> std::io::Result<Self> {
        let threads = threads.max(1);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .max_blocking_threads(threads * 8)
            .thread_name("quiver-query")
            .thread_stack_size(QUERY_STACK_BYTES)
            .enable_all()
            .build()?;
        Ok(QueryRuntime {
            inner: Arc::new(Inner { rt: Some(rt) }),
        })
    }

    /// Runs `fut` on the query runtime in the background (a service whose requests are
    /// query work, as a querier's worker service).
    pub fn spawn(&self, fut: impl Future<Output = ()> + Send + 'static) {
        let rt = self.inner.rt.as_ref().expect("runtime lives until drop");
        rt.spawn(fut.instrument(tracing::Span::current()));
    }

    /// Runs the future `work(token)` makes on the query runtime, with a fresh [`Cancel`]
    /// token that times out after `timeout`; answers `timeout` (503) once it has passed.
    /// The token is also set when this future ends for any other reason than `work`
    /// finishing (the client went away and axum dropped us), so `work` must check it.
    pub async fn run<T, Fut>(
        &self,
        timeout: Duration,
        work: impl FnOnce(Cancel) -> Fut,
    ) -> Result<T, ApiError>
    where
        T: Send + 'static,
        Fut: Future<Output = Result<T, ApiError>> + Send + 'static,
    {
        let rt = self.inner.rt.as_ref().expect("runtime lives until drop");
        let cancel = Cancel::after(timeout);
        let handle = rt.spawn(work(cancel.clone()).instrument(tracing::Span::current()));
        let _stop = StopOnDrop {
            abort: handle.abort_handle(),
            cancel,
        };
        match tokio::time::timeout(timeout, handle).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) if e.is_panic() => {
                let p = e.into_panic();
                let why = crate::panic_message(p.as_ref()).unwrap_or("unknown panic");
                tracing::error!(panic = why, "query panicked");
                Err(ApiError::internal(format!("query failed: {why}")))
            }
            Ok(Err(_)) => Err(ApiError::of(&crate::promql::PromqlError::Canceled, None)),
            Err(_) => Err(ApiError::of(&crate::promql::PromqlError::Timeout, None)),
        }
    }

    /// Runs `work` on the calling thread, with the same timeout and cancellation as
    /// [`QueryRuntime::run`]: for work so small that the hand-off to a query thread and
    /// back would cost more than it (`inline_query`). A panic unwinds to the router's
    /// `catch_panics`, which answers 500.
    pub async fn run_here<T, Fut>(
        &self,
        timeout: Duration,
        work: impl FnOnce(Cancel) -> Fut,
    ) -> Result<T, ApiError>
    where
        Fut: Future<Output = Result<T, ApiError>>,
    {
        let cancel = Cancel::after(timeout);
        let _cancel = CancelOnDrop(cancel.clone());
        match tokio::time::timeout(timeout, work(cancel)).await {
            Ok(r) => r,
            Err(_) => Err(ApiError::of(&crate::promql::PromqlError::Timeout, None)),
        }
    }
}

/// Sets the cancel token when dropped.
struct CancelOnDrop(Cancel);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// Sets the cancel token and aborts the task when dropped (a no-op once it has finished).
struct StopOnDrop {
    abort: tokio::task::AbortHandle,
    cancel: Cancel,
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.cancel.cancel();
        self.abort.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn panics_become_errors_and_timeouts_stop_work() {
        let rt = QueryRuntime::new(1).unwrap();
        let e = rt
            .run(Duration::from_secs(5), |_| async {
                if std::hint::black_box(true) {
                    panic!("boom");
                }
                Ok(())
            })
            .await
            .unwrap_err();
        assert_eq!(e.kind, crate::error_kind::ErrorKind::Internal);
        assert!(e.message.contains("boom"));

        // A loop that never awaits stops through its token.
        let (tx, rx) = std::sync::mpsc::channel();
        let e = rt
            .run(Duration::from_millis(100), |token| async move {
                // As the evaluator does: spin until the token says stop, then fail with it.
                let stop = loop {
                    match token.check() {
                        Ok(()) => std::hint::spin_loop(),
                        Err(e) => break e,
                    }
                };
                let _ = tx.send(());
                Err::<(), _>(ApiError::from_promql(stop))
            })
            .await
            .unwrap_err();
        assert_eq!(e.kind, crate::error_kind::ErrorKind::Timeout);
        rx.recv_timeout(Duration::from_secs(5))
            .expect("the spinning query saw its token");
        // The runtime is free again.
        let ok = rt
            .run(Duration::from_secs(5), |_| async { Ok(7) })
            .await
            .unwrap();
        assert_eq!(ok, 7);
    }
}
