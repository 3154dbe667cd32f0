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
    let mut opts = cfg.storage.options();
    // One decoded-samples cache for every tenant (keys are block ids, unique across tenants).
    opts.samples_cache =
        (cfg.samples_cache_bytes > 0).then(|| samples_cache(cfg.samples_cache_bytes));
    let tenants = Arc::new(Tenants::new(opts, store));
    let mut state = AppState::new(tenants.clone());
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
    state.limits.max_samples = cfg.query_max_samples;
    state.limits.query_timeout_ms = cfg.query_timeout_ms as u64;
    state.retention = cfg.retention_text.clone();
    state.cors_origin = cfg.cors_origin.clone();
    state.results_cache = Arc::new(crate::api::ResultsCache::new(cfg.results_cache));
    let app = router(state.clone(), cfg.max_body_bytes);

    let compaction_every = Duration::from_millis(cfg.compaction_interval_ms as u64);
    let (fatal_tx, mut fatal_rx) = tokio::sync::mpsc::channel::<anyhow::Error>(1);
    tokio::spawn(async move {
        if let Err(e) = tenants.open_all().await {
            let _ = fatal_tx.send(anyhow::anyhow!("opening storage: {e}")).await;
            return;
        }
        tracing::info!("storage ready");
        maintenance(tenants, compaction_every).await;
    });

    let server = async move {
        match &cfg.tls {
            None => {
                axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = tokio::signal::ctrl_c().await;
                    })
                    .await
            }
            Some(tls) => serve_tls(listener, app, tls).await,
        }
    };
    tokio::select! {
        r = server => r?,
        Some(e) = fatal_rx.recv() => return Err(e),
    }
    Ok(())
}

/// HTTPS via rustls (ring provider), with the same graceful shutdown on Ctrl-C.
async fn serve_tls(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    tls: &crate::config::TlsFiles,
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
        let _ = tokio::signal::ctrl_c().await;
        stop.graceful_shutdown(Some(Duration::from_secs(10)));
    });
    axum_server::tls_rustls::from_tcp_rustls(listener.into_std()?, config)?
        .handle(handle)
        .serve(app.into_make_service())
        .await
}

/// Flushes heads and compacts blocks of every open tenant.
async fn maintenance(tenants: Arc<Tenants>, compaction_every: Duration) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last_compaction = tokio::time::Instant::now();
    loop {
        tick.tick().await;
        let compact_now = last_compaction.elapsed() >= compaction_every;
        if compact_now {
            last_compaction = tokio::time::Instant::now();
        }
        for (tenant, storage) in tenants.all() {
            maintain(&storage, compact_now)
                .instrument(tracing::info_span!("maintenance", tenant = tenant.as_str()))
                .await;
        }
    }
}

async fn maintain(storage: &Storage, compact_now: bool) {
    if storage.should_flush()
        && let Err(e) = storage.flush().await
    {
        crate::api::metrics::METRICS.flush_failures.inc();
        tracing::error!(error = %e, "head flush failed; will retry");
    }
    if compact_now {
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
}
