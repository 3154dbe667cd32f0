//! `quiver serve`: binds the listener, replays storage in the background (API answers 503
//! meanwhile), then runs flush and compaction loops until shutdown.

use std::sync::Arc;
use std::time::Duration;

use tracing::Instrument;

use crate::api::limits::Admission;
use crate::api::{AppState, router};
use crate::auth::Authenticator;
use crate::config::ServeConfig;
use crate::storage::{Storage, Tenants, objstore, samples_cache};

pub async fn run(cfg: ServeConfig) -> anyhow::Result<()> {
    if !crate::memory::tune_allocator(cfg.allocator_trim_bytes) {
        tracing::warn!(
            bytes = cfg.allocator_trim_bytes,
            "the allocator does not take a trim threshold; --allocator-trim-bytes is ignored"
        );
    }
    crate::memory::spawn_trimmer(cfg.allocator_free_budget, cfg.release_unused_code);
    let listener = tokio::net::TcpListener::bind(cfg.listen).await?;
    let addr = listener.local_addr()?;
    // Tests and scripts read this line to learn the port when listening on :0.
    let scheme = if cfg.tls.is_some() { "https" } else { "http" };
    println!("quiver listening on {scheme}://{addr}");
    tracing::info!(%addr, data_dir = %cfg.storage.data_dir.display(), "listening");
    let store = objstore::build(
        cfg.storage.url.as_deref(),
        &cfg.storage.data_dir,
        &cfg.storage.s3,
    )?;
    if let Some(cluster) = cfg.cluster.clone() {
        return crate::cluster::run(cfg, cluster, listener, store).await;
    }
    let mut opts = cfg.storage.options();
    opts.head_memory_limit = cfg.head_memory_limit;
    opts.retry_blocks = true;
    // One samples cache for every tenant (keys are block ids, unique across tenants).
    opts.samples_cache =
        (cfg.samples_cache_bytes > 0).then(|| samples_cache(cfg.samples_cache_bytes));
    let tenants = Arc::new(Tenants::new(opts, store).with_max_tenants(cfg.max_tenants));
    let state = app_state(&cfg, tenants.clone(), addr)?;
    let app = router(state.clone(), cfg.max_body_bytes);

    let compaction_every = Duration::from_millis(cfg.compaction_interval_ms as u64);
    let (fatal_tx, fatal_rx) = tokio::sync::mpsc::channel::<anyhow::Error>(1);
    let opened = tenants.clone();
    tokio::spawn(async move {
        let tenants = opened;
        if let Err(e) = tenants.open_all().await {
            let _ = fatal_tx.send(anyhow::anyhow!("opening storage: {e}")).await;
            return;
        }
        tracing::info!("storage ready");
        maintenance(tenants, compaction_every).await;
    });
    serve(listener, app, &cfg, fatal_rx).await?;
    if cfg.flush_on_shutdown {
        flush_heads(&tenants).await;
    }
    tenants.close_all().await;
    tracing::info!("stopped");
    Ok(())
}

/// Writes every tenant's head to blocks once the last request is answered, so the next
/// start loads blocks instead of replaying the WAL: a million-series head took 4–5 s to
/// replay (docs/benchmarks.md, "A live server's block layout"). A flush that fails or is
/// cut short (a SIGKILL after the grace period) leaves the WAL to replay, as a crash does.
async fn flush_heads(tenants: &Tenants) {
    for (tenant, s) in tenants.all() {
        if s.options().read_only || s.head_stats().1 == 0 {
            continue;
        }
        let started = std::time::Instant::now();
        match s.flush().await {
            Ok(blocks) => tracing::info!(
                %tenant,
                blocks = blocks.len(),
                ms = started.elapsed().as_millis() as u64,
                "heads written to blocks at shutdown"
            ),
            Err(e) => tracing::warn!(
                %tenant,
                error = %e,
                "heads not written at shutdown; the next start replays the WAL"
            ),
        }
    }
}

/// The handlers' shared state for a server over `tenants`, as `cfg` sets it up.
pub(crate) fn app_state(
    cfg: &ServeConfig,
    tenants: Arc<Tenants>,
    addr: std::net::SocketAddr,
) -> anyhow::Result<AppState> {
    let mut state = AppState::new(tenants);
    state.auth = Arc::new(Authenticator::new(&cfg.auth)?);
    state.tenant_header = axum::http::HeaderName::try_from(cfg.auth.tenant_header.as_str())
        .map_err(|e| anyhow::anyhow!("auth.tenant_header: {e}"))?;
    state.admission = Arc::new(Admission::new(
        cfg.max_concurrent_queries,
        cfg.write_samples_per_second,
        cfg.write_burst_samples,
    ));
    if state.auth.enabled() {
        tracing::info!(auth = ?cfg.auth, "authentication on");
    } else if !addr.ip().is_loopback() {
        tracing::warn!(%addr, "authentication is off on a non-loopback address: anyone who can reach it can read and write");
    }
    state.multi_tenant = cfg.multi_tenancy;
    if !state.auth.enabled()
        && !cfg.multi_tenancy
        && std::fs::read_dir(
            cfg.storage
                .data_dir
                .join(crate::storage::tenants::TENANTS_DIR),
        )
        .is_ok_and(|mut d| d.next().is_some())
    {
        // Earlier versions honoured the header without authentication: their tenants'
        // data is still flushed, but no request reaches it until the flag is on.
        tracing::warn!(
            "tenants exist under {}/tenants but --multi-tenancy is off and authentication is off: the tenant header is ignored and their data is not served",
            cfg.storage.data_dir.display()
        );
    }
    state.limits.max_samples = cfg.query_max_samples;
    state.limits.query_planner = cfg.query_planner;
    state.limits.query_evaluate_below = cfg.query_evaluate_below;
    state.limits.query_timeout_ms = cfg.query_timeout_ms as u64;
    state.limits.sql_memory_bytes = cfg.sql_memory_limit;
    state.limits.sql_max_rows = cfg.sql_max_rows;
    state.limits.remote_read_max_bytes = cfg.remote_read_max_bytes;
    state.decode = Arc::new(crate::ingest::budget::DecodePool::new(
        cfg.ingest_decode_budget,
    ));
    state.limits.created_zero = cfg.created_timestamp_zero_ingestion;
    state.otlp = Arc::new(cfg.otlp.clone());
    crate::promql::guard::set_limits(cfg.query_max_depth, cfg.query_max_length);
    state.retention = cfg.retention_text.clone();
    state.flags = Arc::new(cfg.flags.clone());
    state.cors_origin = cfg.cors_origin.clone();
    state.results_cache = Arc::new(crate::api::ResultsCache::new(cfg.results_cache));
    Ok(state)
}

/// Serves `app` until SIGTERM/SIGINT (then lets in-flight requests finish within the
/// grace period) or until a fatal error arrives on `fatal`.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    cfg: &ServeConfig,
    mut fatal: tokio::sync::mpsc::Receiver<anyhow::Error>,
) -> anyhow::Result<()> {
    // SIGTERM (Docker, systemd, Kubernetes) or SIGINT: stop accepting connections, let
    // in-flight requests finish within the grace period, then sync every WAL and exit 0.
    let grace = Duration::from_millis(cfg.shutdown_grace_ms as u64);
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let why = shutdown_signal().await;
        tracing::info!(
            signal = why,
            grace_ms = grace.as_millis() as u64,
            "shutting down: finishing in-flight requests"
        );
        let _ = stop_tx.send(true);
    });
    let tls = cfg.tls.clone();
    let app = crate::api::ui::under_prefix(app, &cfg.route_prefix);
    let server = {
        let stop = stop.clone();
        async move {
            match &tls {
                None => {
                    axum::serve(without_nagle(listener), app)
                        .with_graceful_shutdown(stopped(stop))
                        .await
                }
                Some(tls) => serve_tls(listener, app, tls, stop, grace).await,
            }
        }
    };
    let overdue = async {
        stopped(stop).await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        r = server => r?,
        _ = overdue => tracing::warn!("grace period over; closing the remaining connections"),
        Some(e) = fatal.recv() => return Err(e),
    }
    Ok(())
}

/// Turns Nagle's algorithm off on an accepted connection, as Go's servers do (Prometheus,
/// VictoriaMetrics). A gzipped answer goes out in several writes; with Nagle on, the last
/// small one waited for the client's delayed acknowledgement, up to 40 ms on Linux
/// (docs/benchmarks.md, "Session 24").
fn no_delay(tcp: &mut tokio::net::TcpStream) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
    }
}

/// The plain HTTP server's listener: every connection it accepts has [`no_delay`].
fn without_nagle(
    listener: tokio::net::TcpListener,
) -> impl axum::serve::Listener<Io = tokio::net::TcpStream, Addr = std::net::SocketAddr> {
    use axum::serve::ListenerExt;
    listener.tap_io(no_delay)
}

/// [`no_delay`] for the TLS server, before the handshake.
#[derive(Clone, Copy)]
struct NoDelay;

impl<S> axum_server::accept::Accept<tokio::net::TcpStream, S> for NoDelay {
    type Stream = tokio::net::TcpStream;
    type Service = S;
    type Future = std::future::Ready<std::io::Result<(Self::Stream, Self::Service)>>;

    fn accept(&self, mut tcp: tokio::net::TcpStream, service: S) -> Self::Future {
        no_delay(&mut tcp);
        std::future::ready(Ok((tcp, service)))
    }
}

/// Resolves once shutdown has begun.
async fn stopped(mut stop: tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Waits for SIGTERM or SIGINT; names the one that came.
async fn shutdown_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = tokio::signal::ctrl_c() => "SIGINT",
            },
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "SIGINT"
    }
}

/// HTTPS via rustls (ring provider), with the same graceful shutdown.
async fn serve_tls(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    tls: &crate::config::TlsFiles,
    stop_signal: tokio::sync::watch::Receiver<bool>,
    grace: Duration,
) -> std::io::Result<()> {
    // Only one provider is compiled in; installing it twice is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config =
        axum_server::tls_rustls::RustlsConfig::from_pem_file(&tls.cert_file, &tls.key_file)
            .await
            .map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!(
                        "TLS certificate {} / key {}: {e}",
                        tls.cert_file.display(),
                        tls.key_file.display()
                    ),
                )
            })?;
    let handle = axum_server::Handle::new();
    let stop = handle.clone();
    tokio::spawn(async move {
        stopped(stop_signal).await;
        stop.graceful_shutdown(Some(grace));
    });
    let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(config).acceptor(NoDelay);
    axum_server::from_tcp(listener.into_std()?)?
        .acceptor(acceptor)
        .handle(handle)
        .serve(app.into_make_service())
        .await
}

/// Flushes heads and compacts blocks of every open tenant. A failed flush (object store
/// down) is retried with backoff — 1 s doubling to 30 s — not at the next flush trigger, so
/// frozen heads leave memory as soon as the store is back.
async fn maintenance(tenants: Arc<Tenants>, compaction_every: Duration) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last_compaction = tokio::time::Instant::now();
    let mut retry: std::collections::HashMap<String, (tokio::time::Instant, Duration)> =
        Default::default();
    loop {
        tick.tick().await;
        let compact_now = last_compaction.elapsed() >= compaction_every;
        if compact_now {
            last_compaction = tokio::time::Instant::now();
        }
        for (tenant, storage) in tenants.all() {
            let now = tokio::time::Instant::now();
            let due = storage.should_flush() || storage.frozen_heads() > 0;
            let backing_off = retry.get(&tenant).is_some_and(|(at, _)| now < *at);
            if due && !backing_off {
                let span = tracing::info_span!("flush", tenant = tenant.as_str());
                match storage.flush().instrument(span).await {
                    Ok(_) => {
                        retry.remove(&tenant);
                    }
                    Err(e) => {
                        crate::api::metrics::METRICS.flush_failures.inc();
                        let wait = retry.get(&tenant).map_or(Duration::from_secs(1), |(_, d)| {
                            (*d * 2).min(Duration::from_secs(30))
                        });
                        tracing::error!(tenant = tenant.as_str(), error = %e, retry_in_ms = wait.as_millis() as u64, "head flush failed; will retry");
                        retry.insert(tenant.clone(), (now + wait, wait));
                    }
                }
            }
            if compact_now {
                compact(&storage)
                    .instrument(tracing::info_span!("compaction", tenant = tenant.as_str()))
                    .await;
            }
        }
    }
}

async fn compact(storage: &Storage) {
    match storage.compact().await {
        Ok(r) if !r.merged.is_empty() || !r.expired.is_empty() => {
            tracing::info!(
                merged = r.merged.len(),
                expired = r.expired.len(),
                deleted = r.deleted,
                "compaction"
            )
        }
        Ok(_) => {}
        Err(e) => {
            crate::api::metrics::METRICS.compaction_failures.inc();
            tracing::error!(error = %e, "compaction failed")
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::serve::Listener;

    /// Connections the plain server accepts send small writes at once (see `no_delay`).
    #[tokio::test]
    async fn accepted_connections_have_nagle_off() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut listener = super::without_nagle(listener);
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (io, _) = listener.accept().await;
        assert!(io.nodelay().unwrap());
    }

    /// The TLS server's acceptor does the same before the handshake.
    #[tokio::test]
    async fn tls_connections_have_nagle_off() {
        use axum_server::accept::Accept;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (tcp, _) = listener.accept().await.unwrap();
        assert!(!tcp.nodelay().unwrap());
        let (tcp, ()) = super::NoDelay.accept(tcp, ()).await.unwrap();
        assert!(tcp.nodelay().unwrap());
    }
}
