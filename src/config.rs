//! Configuration: defaults < TOML file (`--config`) < `QUIVER_*` environment < flags.
//! clap handles the last two (every flag has `env =`); the file fills what they leave unset.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Args;
use serde::Deserialize;

use crate::duration::parse_duration_ms;
use crate::storage::StorageOptions;
use crate::storage::objstore::S3Options;

/// How `serve` logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    // Variants without doc comments: clap lists them inline as possible values and keeps
    // the compact help that docs/operations.md carries.
    #[default]
    Text,
    Json,
}

/// Which PromQL engine answers queries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum QueryEngine {
    // DataFusion plans where an expression lowers, the evaluator elsewhere.
    #[default]
    Planner,
    // The step-vector evaluator only.
    Evaluator,
}

/// Storage flags shared by `serve`, `import` and `sql`.
#[derive(Debug, Clone, Default, Args)]
pub struct StorageArgs {
    /// Local data directory (WAL, and blocks when no storage URL is set) [default: ./data]
    #[arg(long, env = "QUIVER_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Where blocks live: `file://` (under the data dir) or `s3://bucket/prefix`
    #[arg(long, env = "QUIVER_STORAGE_URL")]
    pub storage_url: Option<String>,
    /// S3 endpoint, e.g. http://127.0.0.1:5000 for a local S3 API [env AWS_ENDPOINT_URL also works]
    #[arg(long, env = "QUIVER_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// S3 region [env AWS_REGION also works]
    #[arg(long, env = "QUIVER_S3_REGION")]
    pub s3_region: Option<String>,
    /// S3 access key id [env AWS_ACCESS_KEY_ID also works]
    #[arg(long, env = "QUIVER_S3_ACCESS_KEY_ID")]
    pub s3_access_key_id: Option<String>,
    /// S3 secret access key [env AWS_SECRET_ACCESS_KEY also works]
    #[arg(long, env = "QUIVER_S3_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub s3_secret_access_key: Option<String>,
    /// Timeout of one object-store request [default: 30s]
    #[arg(long, env = "QUIVER_S3_REQUEST_TIMEOUT")]
    pub s3_request_timeout: Option<String>,
    /// Retries of a failed object-store request [default: 3]
    #[arg(long, env = "QUIVER_S3_MAX_RETRIES")]
    pub s3_max_retries: Option<usize>,
    /// Delete blocks wholly older than this [default: 15d]
    #[arg(long, env = "QUIVER_RETENTION")]
    pub retention: Option<String>,
    /// Time window of a block cut from the head [default: 2h]
    #[arg(long, env = "QUIVER_BLOCK_DURATION")]
    pub block_duration: Option<String>,
    /// Largest window compaction merges blocks into [default: 1d]
    #[arg(long, env = "QUIVER_MAX_BLOCK_DURATION")]
    pub max_block_duration: Option<String>,
    /// How far in the past a remote-write sample may be [default: 3h]
    #[arg(long, env = "QUIVER_OOO_WINDOW")]
    pub ooo_window: Option<String>,
    /// Flush the head to blocks once its oldest append is this old [default: 2h]
    #[arg(long, env = "QUIVER_HEAD_FLUSH_INTERVAL")]
    pub head_flush_interval: Option<String>,
    /// Flush the head to blocks once it holds this many samples [default: 20000000]
    #[arg(long, env = "QUIVER_HEAD_MAX_SAMPLES")]
    pub head_max_samples: Option<usize>,
    /// Decoded samples one compaction holds at a time, in bytes: inputs are merged a chunk
    /// of series at a time under it, whatever the blocks' size [default: 268435456]
    #[arg(long, env = "QUIVER_COMPACTION_MEMORY_LIMIT")]
    pub compaction_memory_limit: Option<usize>,
}

/// `quiver serve` flags.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// TOML config file (see deploy/quiver.example.toml)
    #[arg(long, env = "QUIVER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:9201]
    #[arg(long, env = "QUIVER_LISTEN")]
    pub listen: Option<String>,
    /// Largest accepted request body in bytes [default: 67108864]
    #[arg(long, env = "QUIVER_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// How often compaction and retention run [default: 5m]
    #[arg(long, env = "QUIVER_COMPACTION_INTERVAL")]
    pub compaction_interval: Option<String>,
    /// Log format [default: text]
    #[arg(long, env = "QUIVER_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Most samples one query may load [default: 50000000]
    #[arg(long, env = "QUIVER_QUERY_MAX_SAMPLES")]
    pub query_max_samples: Option<usize>,
    /// Longest a query may run; also caps the `timeout` parameter [default: 2m]
    #[arg(long, env = "QUIVER_QUERY_TIMEOUT")]
    pub query_timeout: Option<String>,
    /// PromQL engine: `planner` (DataFusion plans where lowered, the evaluator elsewhere)
    /// or `evaluator` (the step-vector evaluator only) [default: planner]
    #[arg(long, env = "QUIVER_QUERY_ENGINE", value_enum)]
    pub query_engine: Option<QueryEngine>,
    /// CORS: origins allowed, as a fully anchored regex [default: any origin]
    #[arg(long, env = "QUIVER_CORS_ORIGIN")]
    pub cors_origin: Option<String>,
    /// TLS: certificate chain (PEM); serve HTTPS when given with --tls-key-file
    #[arg(long, env = "QUIVER_TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// TLS: private key (PEM)
    #[arg(long, env = "QUIVER_TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,
    /// Most queries (PromQL, SQL, remote read) one tenant may run at once; more get 429 [default: 20]
    #[arg(long, env = "QUIVER_MAX_CONCURRENT_QUERIES")]
    pub max_concurrent_queries: Option<usize>,
    /// Samples per second one tenant may write; 0 is unlimited [default: 0]
    #[arg(long, env = "QUIVER_WRITE_SAMPLES_PER_SECOND")]
    pub write_samples_per_second: Option<f64>,
    /// Results cache bound in bytes; 0 turns it off [default: 536870912]
    #[arg(long, env = "QUIVER_RESULTS_CACHE_BYTES")]
    pub results_cache_bytes: Option<u64>,
    /// Decoded-samples cache bound in bytes (whole series of immutable blocks, shared by all
    /// tenants); 0 turns it off [default: 536870912]
    #[arg(long, env = "QUIVER_SAMPLES_CACHE_BYTES")]
    pub samples_cache_bytes: Option<u64>,
    /// Results cache extent: range-query answers are cached in pieces this long [default: 30m]
    #[arg(long, env = "QUIVER_RESULTS_CACHE_EXTENT")]
    pub results_cache_extent: Option<String>,
    /// Steps newer than now minus this are never cached [default: 10m]
    #[arg(long, env = "QUIVER_RESULTS_CACHE_FRESHNESS")]
    pub results_cache_freshness: Option<String>,
    /// Deepest PromQL expression accepted (AST levels, bounded from the text before parsing) [default: 10000]
    #[arg(long, env = "QUIVER_QUERY_MAX_DEPTH")]
    pub query_max_depth: Option<usize>,
    /// Longest PromQL query text accepted, in bytes [default: 262144]
    #[arg(long, env = "QUIVER_QUERY_MAX_LENGTH")]
    pub query_max_length: Option<usize>,
    /// Memory pool of one SQL query (joins, sorts, aggregations), in bytes [default: 1073741824]
    #[arg(long, env = "QUIVER_SQL_MEMORY_LIMIT")]
    pub sql_memory_limit: Option<usize>,
    /// Most rows one HTTP SQL answer may carry [default: 1000000]
    #[arg(long, env = "QUIVER_SQL_MAX_ROWS")]
    pub sql_max_rows: Option<usize>,
    /// Largest decompressed remote-read request, in bytes [default: 33554432]
    #[arg(long, env = "QUIVER_REMOTE_READ_MAX_BYTES")]
    pub remote_read_max_bytes: Option<usize>,
    /// Bytes that decoding the ingest and remote-read requests in flight may build together;
    /// one request estimated above it gets 413 before it is decoded [default: twice
    /// --max-body-bytes, 134217728]
    #[arg(long, env = "QUIVER_INGEST_DECODE_BUDGET")]
    pub ingest_decode_budget: Option<usize>,
    /// On SIGTERM/SIGINT, how long in-flight requests may take to finish [default: 30s]
    #[arg(long, env = "QUIVER_SHUTDOWN_GRACE_PERIOD")]
    pub shutdown_grace_period: Option<String>,
    /// With authentication off, honour the tenant header (`X-Scope-OrgID`); off: one tenant
    #[arg(long, env = "QUIVER_MULTI_TENANCY")]
    pub multi_tenancy: bool,
    /// Remote write 2.0: store a zero sample at a counter's created (start) timestamp, as
    /// Prometheus's `created-timestamp-zero-ingestion` feature does; off: created timestamps
    /// are read and not stored
    #[arg(long, env = "QUIVER_CREATED_TIMESTAMP_ZERO_INGESTION")]
    pub created_timestamp_zero_ingestion: bool,
    /// OTLP: resource attributes (comma-separated raw keys) copied onto every series of
    /// their resource, besides `target_info` [default: none]
    #[arg(
        long,
        env = "QUIVER_OTLP_PROMOTE_RESOURCE_ATTRIBUTES",
        value_delimiter = ','
    )]
    pub otlp_promote_resource_attributes: Vec<String>,
    /// OTLP: explicit-bucket histograms become native histograms with custom buckets
    /// instead of classic `_bucket`/`_sum`/`_count` series
    #[arg(long, env = "QUIVER_OTLP_CONVERT_HISTOGRAMS_TO_NHCB")]
    pub otlp_convert_histograms_to_nhcb: bool,
    /// Most tenants (besides the default one) that may exist [default: 1000]
    #[arg(long, env = "QUIVER_MAX_TENANTS")]
    pub max_tenants: Option<usize>,
    /// Memory the heads (live and waiting to be flushed) of all tenants together may hold, in
    /// bytes (~28 per sample); beyond it writes get 503 with Retry-After [default: 2147483648]
    #[arg(long, env = "QUIVER_HEAD_MEMORY_LIMIT")]
    pub head_memory_limit: Option<usize>,
    #[command(flatten)]
    pub storage: StorageArgs,
}

/// The TOML file; every key optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<String>,
    pub max_body_bytes: Option<usize>,
    pub compaction_interval: Option<String>,
    pub log_format: Option<LogFormat>,
    pub query_max_samples: Option<usize>,
    pub query_timeout: Option<String>,
    pub query_engine: Option<QueryEngine>,
    pub cors_origin: Option<String>,
    pub max_concurrent_queries: Option<usize>,
    pub write_samples_per_second: Option<f64>,
    pub samples_cache_bytes: Option<u64>,
    pub query_max_depth: Option<usize>,
    pub query_max_length: Option<usize>,
    pub sql_memory_limit: Option<usize>,
    pub sql_max_rows: Option<usize>,
    pub remote_read_max_bytes: Option<usize>,
    pub ingest_decode_budget: Option<usize>,
    pub shutdown_grace_period: Option<String>,
    pub multi_tenancy: Option<bool>,
    pub created_timestamp_zero_ingestion: Option<bool>,
    /// `[otlp]`: the OTLP translation (`promote_resource_attributes`,
    /// `convert_histograms_to_nhcb`).
    #[serde(default)]
    pub otlp: crate::ingest::otlp::OtlpConfig,
    pub max_tenants: Option<usize>,
    pub head_memory_limit: Option<usize>,
    #[serde(default)]
    pub tls: FileTls,
    /// Largest burst of samples above the rate [default: 10 × the per-second rate].
    pub write_burst_samples: Option<f64>,
    #[serde(default)]
    pub auth: crate::auth::AuthConfig,
    #[serde(default)]
    pub results_cache: FileResultsCache,
    #[serde(default)]
    pub storage: FileStorage,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTls {
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

/// Certificate chain and key of the HTTPS listener.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileResultsCache {
    pub max_bytes: Option<u64>,
    pub extent: Option<String>,
    pub freshness: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileStorage {
    pub data_dir: Option<PathBuf>,
    pub url: Option<String>,
    pub retention: Option<String>,
    pub block_duration: Option<String>,
    pub max_block_duration: Option<String>,
    pub ooo_window: Option<String>,
    pub head_flush_interval: Option<String>,
    pub head_max_samples: Option<usize>,
    pub compaction_memory_limit: Option<usize>,
    #[serde(default)]
    pub s3: S3Options,
}

/// Validated settings for `serve`.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    pub compaction_interval_ms: i64,
    pub json_logs: bool,
    pub query_max_samples: usize,
    /// Run lowered PromQL as DataFusion plans (`--query-engine planner`).
    pub query_planner: bool,
    pub query_timeout_ms: i64,
    pub query_max_depth: usize,
    pub query_max_length: usize,
    pub sql_memory_limit: usize,
    pub sql_max_rows: usize,
    pub remote_read_max_bytes: usize,
    pub ingest_decode_budget: crate::ingest::budget::DecodeBudget,
    pub shutdown_grace_ms: i64,
    pub multi_tenancy: bool,
    pub created_timestamp_zero_ingestion: bool,
    pub otlp: crate::ingest::otlp::OtlpConfig,
    pub max_tenants: usize,
    pub head_memory_limit: usize,
    pub cors_origin: Option<regex::Regex>,
    pub results_cache: crate::api::CacheConfig,
    /// Bytes of decoded block samples kept in memory (0: off).
    pub samples_cache_bytes: u64,
    pub auth: crate::auth::AuthConfig,
    pub tls: Option<TlsFiles>,
    pub max_concurrent_queries: usize,
    pub write_samples_per_second: f64,
    pub write_burst_samples: f64,
    /// Retention as the user wrote it, for status endpoints.
    pub retention_text: String,
    pub storage: ResolvedStorage,
}

/// Validated storage settings.
#[derive(Debug, Clone)]
pub struct ResolvedStorage {
    pub data_dir: PathBuf,
    pub url: Option<String>,
    pub s3: S3Options,
    pub retention_ms: i64,
    pub block_duration_ms: i64,
    pub max_block_duration_ms: i64,
    pub ooo_window_ms: i64,
    pub head_flush_interval_ms: i64,
    pub head_max_samples: usize,
    pub compaction_memory_limit: usize,
}

impl ResolvedStorage {
    pub fn options(&self) -> StorageOptions {
        let mut o = StorageOptions::new(&self.data_dir);
        o.retention_ms = self.retention_ms;
        o.block_duration_ms = self.block_duration_ms;
        o.max_block_duration_ms = self.max_block_duration_ms;
        o.ooo_window_ms = self.ooo_window_ms;
        o.head_flush_interval_ms = self.head_flush_interval_ms;
        o.head_max_samples = self.head_max_samples;
        o.compaction_memory_bytes = self.compaction_memory_limit;
        o
    }
}

fn dur(
    name: &str,
    flag: Option<&String>,
    file: Option<&String>,
    default: &str,
) -> anyhow::Result<i64> {
    let s = flag.or(file).map(String::as_str).unwrap_or(default);
    let ms = parse_duration_ms(s).map_err(|e| anyhow::anyhow!("--{name}: {e}"))?;
    anyhow::ensure!(ms > 0, "--{name} must be positive");
    Ok(ms)
}

pub fn load_file(path: Option<&Path>) -> anyhow::Result<FileConfig> {
    match path {
        None => Ok(FileConfig::default()),
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| anyhow::anyhow!("reading config {}: {e}", p.display()))?;
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("config {}: {e}", p.display()))
        }
    }
}

pub fn resolve_storage(a: &StorageArgs, f: &FileStorage) -> anyhow::Result<ResolvedStorage> {
    let mut s3 = f.s3.clone();
    s3.endpoint = a.s3_endpoint.clone().or(s3.endpoint);
    s3.region = a.s3_region.clone().or(s3.region);
    s3.access_key_id = a.s3_access_key_id.clone().or(s3.access_key_id);
    s3.secret_access_key = a.s3_secret_access_key.clone().or(s3.secret_access_key);
    if let Some(t) = &a.s3_request_timeout {
        s3.request_timeout_ms = Some(
            parse_duration_ms(t).map_err(|e| anyhow::anyhow!("--s3-request-timeout: {e}"))? as u64,
        );
    }
    s3.max_retries = a.s3_max_retries.or(s3.max_retries);
    let r = ResolvedStorage {
        data_dir: a
            .data_dir
            .clone()
            .or(f.data_dir.clone())
            .unwrap_or_else(|| PathBuf::from("data")),
        url: a.storage_url.clone().or(f.url.clone()),
        s3,
        retention_ms: dur(
            "retention",
            a.retention.as_ref(),
            f.retention.as_ref(),
            "15d",
        )?,
        block_duration_ms: dur(
            "block-duration",
            a.block_duration.as_ref(),
            f.block_duration.as_ref(),
            "2h",
        )?,
        max_block_duration_ms: dur(
            "max-block-duration",
            a.max_block_duration.as_ref(),
            f.max_block_duration.as_ref(),
            "1d",
        )?,
        ooo_window_ms: dur(
            "ooo-window",
            a.ooo_window.as_ref(),
            f.ooo_window.as_ref(),
            "3h",
        )?,
        head_flush_interval_ms: dur(
            "head-flush-interval",
            a.head_flush_interval.as_ref(),
            f.head_flush_interval.as_ref(),
            "2h",
        )?,
        head_max_samples: a
            .head_max_samples
            .or(f.head_max_samples)
            .unwrap_or(20_000_000),
        compaction_memory_limit: a
            .compaction_memory_limit
            .or(f.compaction_memory_limit)
            .unwrap_or(256 << 20),
    };
    anyhow::ensure!(
        r.max_block_duration_ms % r.block_duration_ms == 0,
        "--max-block-duration must be a multiple of --block-duration"
    );
    Ok(r)
}

impl ServeArgs {
    pub fn resolve(&self) -> anyhow::Result<ServeConfig> {
        let f = load_file(self.config.as_deref())?;
        let listen = self
            .listen
            .clone()
            .or(f.listen.clone())
            .unwrap_or_else(|| "127.0.0.1:9201".into());
        let log_format = self.log_format.or(f.log_format).unwrap_or_default();
        let query_engine = self.query_engine.or(f.query_engine).unwrap_or_default();
        Ok(ServeConfig {
            listen: listen
                .parse()
                .map_err(|e| anyhow::anyhow!("--listen {listen:?}: {e}"))?,
            max_body_bytes: self.max_body_bytes.or(f.max_body_bytes).unwrap_or(64 << 20),
            compaction_interval_ms: dur(
                "compaction-interval",
                self.compaction_interval.as_ref(),
                f.compaction_interval.as_ref(),
                "5m",
            )?,
            json_logs: log_format == LogFormat::Json,
            query_max_samples: self
                .query_max_samples
                .or(f.query_max_samples)
                .unwrap_or(50_000_000),
            query_planner: query_engine == QueryEngine::Planner,
            query_timeout_ms: dur(
                "query-timeout",
                self.query_timeout.as_ref(),
                f.query_timeout.as_ref(),
                "2m",
            )?,
            query_max_depth: self
                .query_max_depth
                .or(f.query_max_depth)
                .unwrap_or(crate::promql::guard::DEFAULT_MAX_DEPTH),
            query_max_length: self
                .query_max_length
                .or(f.query_max_length)
                .unwrap_or(crate::promql::guard::DEFAULT_MAX_LENGTH),
            sql_memory_limit: self
                .sql_memory_limit
                .or(f.sql_memory_limit)
                .unwrap_or(1 << 30),
            sql_max_rows: self.sql_max_rows.or(f.sql_max_rows).unwrap_or(1_000_000),
            remote_read_max_bytes: self
                .remote_read_max_bytes
                .or(f.remote_read_max_bytes)
                .unwrap_or(32 << 20),
            ingest_decode_budget: self
                .ingest_decode_budget
                .or(f.ingest_decode_budget)
                .map(crate::ingest::budget::DecodeBudget)
                .unwrap_or_else(|| {
                    crate::ingest::budget::DecodeBudget::from_body_limit(
                        self.max_body_bytes.or(f.max_body_bytes).unwrap_or(64 << 20),
                    )
                }),
            shutdown_grace_ms: dur(
                "shutdown-grace-period",
                self.shutdown_grace_period.as_ref(),
                f.shutdown_grace_period.as_ref(),
                "30s",
            )?,
            multi_tenancy: self.multi_tenancy || f.multi_tenancy.unwrap_or(false),
            created_timestamp_zero_ingestion: self.created_timestamp_zero_ingestion
                || f.created_timestamp_zero_ingestion.unwrap_or(false),
            otlp: crate::ingest::otlp::OtlpConfig {
                promote_resource_attributes: if self.otlp_promote_resource_attributes.is_empty() {
                    f.otlp.promote_resource_attributes.clone()
                } else {
                    self.otlp_promote_resource_attributes.clone()
                },
                convert_histograms_to_nhcb: self.otlp_convert_histograms_to_nhcb
                    || f.otlp.convert_histograms_to_nhcb,
            },
            max_tenants: self.max_tenants.or(f.max_tenants).unwrap_or(1000),
            head_memory_limit: self
                .head_memory_limit
                .or(f.head_memory_limit)
                .unwrap_or(2 << 30),
            cors_origin: match self.cors_origin.clone().or(f.cors_origin.clone()) {
                None => None,
                Some(o) => Some(
                    regex::Regex::new(&format!("^(?:{o})$"))
                        .map_err(|e| anyhow::anyhow!("--cors-origin {o:?}: {e}"))?,
                ),
            },
            auth: f.auth.clone(),
            tls: match (
                self.tls_cert_file.clone().or(f.tls.cert_file.clone()),
                self.tls_key_file.clone().or(f.tls.key_file.clone()),
            ) {
                (None, None) => None,
                (Some(cert_file), Some(key_file)) => Some(TlsFiles {
                    cert_file,
                    key_file,
                }),
                _ => anyhow::bail!("TLS needs both --tls-cert-file and --tls-key-file"),
            },
            max_concurrent_queries: self
                .max_concurrent_queries
                .or(f.max_concurrent_queries)
                .unwrap_or(20),
            write_samples_per_second: self
                .write_samples_per_second
                .or(f.write_samples_per_second)
                .unwrap_or(0.0),
            write_burst_samples: f.write_burst_samples.unwrap_or(
                10.0 * self
                    .write_samples_per_second
                    .or(f.write_samples_per_second)
                    .unwrap_or(0.0),
            ),
            samples_cache_bytes: self
                .samples_cache_bytes
                .or(f.samples_cache_bytes)
                .unwrap_or(512 << 20),
            results_cache: crate::api::CacheConfig {
                max_bytes: self
                    .results_cache_bytes
                    .or(f.results_cache.max_bytes)
                    .unwrap_or(512 << 20),
                extent_ms: dur(
                    "results-cache-extent",
                    self.results_cache_extent.as_ref(),
                    f.results_cache.extent.as_ref(),
                    "30m",
                )?,
                freshness_ms: dur(
                    "results-cache-freshness",
                    self.results_cache_freshness.as_ref(),
                    f.results_cache.freshness.as_ref(),
                    "10m",
                )?,
            },
            retention_text: self
                .storage
                .retention
                .clone()
                .or(f.storage.retention.clone())
                .unwrap_or_else(|| "15d".into()),
            storage: resolve_storage(&self.storage, &f.storage)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses_and_flags_win() {
        let text = include_str!("../deploy/quiver.example.toml");
        let f: FileConfig = toml::from_str(text).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("q.toml");
        std::fs::write(&p, text).unwrap();
        let args = ServeArgs {
            config: Some(p),
            listen: Some("127.0.0.1:0".into()),
            ..Default::default()
        };
        let c = args.resolve().unwrap();
        assert_eq!(c.listen.port(), 0);
        assert_eq!(
            c.storage.retention_ms,
            parse_duration_ms(f.storage.retention.as_deref().unwrap()).unwrap()
        );
    }

    #[test]
    fn auth_example_config_turns_authentication_on() {
        let text = include_str!("../deploy/quiver-auth.example.toml");
        let f: FileConfig = toml::from_str(text).unwrap();
        assert!(f.auth.is_enabled());
        let a = crate::auth::Authenticator::new(&f.auth).unwrap();
        assert!(a.enabled());
        assert_eq!(
            a.authenticate(None).unwrap_err(),
            crate::auth::AuthError::Missing
        );
        // Without an [auth] section authentication stays off.
        let plain: FileConfig = toml::from_str("").unwrap();
        assert!(!plain.auth.is_enabled());
        assert_eq!(plain.auth.tenant_header, "X-Scope-OrgID");
    }

    #[test]
    fn bad_values_are_rejected_with_the_flag_name() {
        let args = ServeArgs {
            storage: StorageArgs {
                retention: Some("forever".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        assert!(
            args.resolve()
                .unwrap_err()
                .to_string()
                .contains("--retention")
        );
        let bad: Result<FileConfig, _> = toml::from_str("nope = 1");
        assert!(bad.is_err());
    }

    #[test]
    fn query_engine_is_planner_or_evaluator() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            serve: ServeArgs,
        }
        let with = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("quiver").chain(args.iter().copied()))
                .map(|c| c.serve.resolve().unwrap().query_planner)
        };
        assert!(with(&[]).unwrap());
        assert!(with(&["--query-engine", "planner"]).unwrap());
        assert!(!with(&["--query-engine", "evaluator"]).unwrap());
        let err = with(&["--query-engine", "fast"]).err().unwrap().to_string();
        assert!(err.contains("--query-engine"), "{err}");
        // The file takes the same words, and refuses others.
        let f: FileConfig = toml::from_str("query_engine = \"evaluator\"").unwrap();
        assert_eq!(f.query_engine, Some(QueryEngine::Evaluator));
        assert!(toml::from_str::<FileConfig>("log_format = \"xml\"").is_err());
    }
}
