//! Configuration: defaults < TOML file (`--config`) < `QUIVER_*` environment < flags.
//! clap handles the last two (every flag has `env =`); the file fills what they leave unset.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Args;
use serde::{Deserialize, Serialize};

use crate::duration::parse_duration_ms;
use crate::storage::StorageOptions;
use crate::storage::objstore::S3Options;

/// Storage settings, shared by `serve` (also the config file's `[storage]`), `import`,
/// `sql` and the operator commands.
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageArgs {
    /// Local data directory (WAL, and blocks when no storage URL is set)
    #[arg(long, env = "QUIVER_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Where blocks live: `file://` (under the data dir) or `s3://bucket/prefix`
    #[arg(long = "storage-url", env = "QUIVER_STORAGE_URL")]
    pub url: Option<String>,
    #[command(flatten)]
    pub s3: S3Args,
    /// Delete blocks wholly older than this
    #[arg(long, env = "QUIVER_RETENTION", default_value = "15d")]
    pub retention: String,
    /// Time window of a block cut from the head
    #[arg(long, env = "QUIVER_BLOCK_DURATION", default_value = "2h")]
    pub block_duration: String,
    /// Largest window compaction merges blocks into
    #[arg(long, env = "QUIVER_MAX_BLOCK_DURATION", default_value = "1d")]
    pub max_block_duration: String,
    /// How far in the past a remote-write sample may be
    #[arg(long, env = "QUIVER_OOO_WINDOW", default_value = "3h")]
    pub ooo_window: String,
    /// Flush the head to blocks once its oldest append is this old
    #[arg(long, env = "QUIVER_HEAD_FLUSH_INTERVAL", default_value = "2h")]
    pub head_flush_interval: String,
    /// Flush the head to blocks once it holds this many samples
    #[arg(long, env = "QUIVER_HEAD_MAX_SAMPLES", default_value_t = 20_000_000)]
    pub head_max_samples: usize,
    /// Decoded samples one compaction holds at a time, in bytes: inputs are merged a chunk
    /// of series at a time under it, whatever the blocks' size
    #[arg(long, env = "QUIVER_COMPACTION_MEMORY_LIMIT", default_value_t = 256 << 20)]
    pub compaction_memory_limit: usize,
}

/// S3 settings (the config file's `[storage.s3]`); unset ones fall back to the usual
/// `AWS_*` environment variables.
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Args {
    /// S3 endpoint, e.g. http://127.0.0.1:5000 for a local S3 API [env AWS_ENDPOINT_URL also works]
    #[arg(long = "s3-endpoint", env = "QUIVER_S3_ENDPOINT")]
    pub endpoint: Option<String>,
    /// S3 region [env AWS_REGION also works]
    #[arg(long = "s3-region", env = "QUIVER_S3_REGION")]
    pub region: Option<String>,
    /// S3 access key id [env AWS_ACCESS_KEY_ID also works]
    #[arg(long = "s3-access-key-id", env = "QUIVER_S3_ACCESS_KEY_ID")]
    pub access_key_id: Option<String>,
    /// S3 secret access key [env AWS_SECRET_ACCESS_KEY also works]
    #[arg(
        long = "s3-secret-access-key",
        env = "QUIVER_S3_SECRET_ACCESS_KEY",
        hide_env_values = true
    )]
    pub secret_access_key: Option<String>,
    /// Plain HTTP to the endpoint (the config file only; an `http://` endpoint allows it too)
    #[arg(skip)]
    pub allow_http: Option<bool>,
    /// Timeout of one object-store request (a duration; in the file, milliseconds)
    #[arg(
        long = "s3-request-timeout",
        env = "QUIVER_S3_REQUEST_TIMEOUT",
        default_value = "30s",
        value_parser = duration_as_ms
    )]
    pub request_timeout_ms: u64,
    /// Retries of a failed object-store request
    #[arg(
        long = "s3-max-retries",
        env = "QUIVER_S3_MAX_RETRIES",
        default_value_t = 3
    )]
    pub max_retries: usize,
}

/// A duration flag read into milliseconds.
fn duration_as_ms(s: &str) -> Result<u64, String> {
    parse_duration_ms(s).and_then(|ms| u64::try_from(ms).map_err(|e| e.to_string()))
}

impl S3Args {
    pub fn options(&self) -> S3Options {
        S3Options {
            endpoint: self.endpoint.clone(),
            region: self.region.clone(),
            access_key_id: self.access_key_id.clone(),
            secret_access_key: self.secret_access_key.clone(),
            allow_http: self.allow_http,
            request_timeout_ms: Some(self.request_timeout_ms),
            max_retries: Some(self.max_retries),
        }
    }
}

/// Log format of `serve`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    // Variants without doc comments: clap lists them inline as possible values and keeps
    // the compact help that docs/operations.md carries.
    #[default]
    Text,
    Json,
}

/// Which PromQL engine answers queries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum QueryEngine {
    // DataFusion plans where an expression lowers, the evaluator elsewhere.
    #[default]
    Planner,
    // The step-vector evaluator only.
    Evaluator,
}

/// `quiver serve`'s settings. Each is declared once, here: its flag, its `QUIVER_*`
/// variable, its key in the TOML file (the field's name, in the section its struct is
/// flattened from), its default and its help. [`ServeArgs::layered`] reads them as
/// defaults < file < environment < flags.
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeArgs {
    /// TOML config file (see deploy/quiver.example.toml)
    #[arg(long, env = "QUIVER_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Address to listen on
    #[arg(long, env = "QUIVER_LISTEN", default_value = "127.0.0.1:9201")]
    pub listen: String,
    /// Path prefix every route is served under, e.g. `/quiver` behind a reverse proxy that
    /// passes the prefix on (Prometheus's `--web.route-prefix`) [default: none]
    #[arg(
        long,
        env = "QUIVER_ROUTE_PREFIX",
        default_value = "",
        hide_default_value = true
    )]
    pub route_prefix: String,
    /// Largest accepted request body in bytes
    #[arg(long, env = "QUIVER_MAX_BODY_BYTES", default_value_t = 64 << 20)]
    pub max_body_bytes: usize,
    /// How often compaction and retention run
    #[arg(long, env = "QUIVER_COMPACTION_INTERVAL", default_value = "5m")]
    pub compaction_interval: String,
    /// Log format
    #[arg(long, env = "QUIVER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Most samples one query may load
    #[arg(long, env = "QUIVER_QUERY_MAX_SAMPLES", default_value_t = 50_000_000)]
    pub query_max_samples: usize,
    /// Longest a query may run; also caps the `timeout` parameter
    #[arg(long, env = "QUIVER_QUERY_TIMEOUT", default_value = "2m")]
    pub query_timeout: String,
    /// PromQL engine: `planner` (DataFusion plans where lowered, the evaluator elsewhere)
    /// or `evaluator` (the step-vector evaluator only)
    #[arg(long, env = "QUIVER_QUERY_ENGINE", value_enum, default_value_t = QueryEngine::Planner)]
    pub query_engine: QueryEngine,
    /// PromQL expressions whose selections come to less work than this (samples read and
    /// visited, as the blocks' metadata estimates them) run in the step-vector evaluator,
    /// which starts faster than a DataFusion plan; 0 runs every expression that lowers as
    /// a plan
    #[arg(long, env = "QUIVER_QUERY_EVALUATE_BELOW", default_value_t = crate::promql::EVALUATE_BELOW)]
    pub query_evaluate_below: usize,
    /// CORS: origins allowed, as a fully anchored regex [default: any origin]
    #[arg(long, env = "QUIVER_CORS_ORIGIN")]
    pub cors_origin: Option<String>,
    /// Most queries (PromQL, SQL, remote read) one tenant may run at once; more get 429
    #[arg(long, env = "QUIVER_MAX_CONCURRENT_QUERIES", default_value_t = 20)]
    pub max_concurrent_queries: usize,
    /// Samples per second one tenant may write; 0 is unlimited
    #[arg(long, env = "QUIVER_WRITE_SAMPLES_PER_SECOND", default_value_t = 0.0)]
    pub write_samples_per_second: f64,
    /// Largest burst of samples above the rate (the config file only) [default: 10 × the
    /// per-second rate]
    #[arg(skip)]
    pub write_burst_samples: Option<f64>,
    /// Samples cache bound in bytes (whole series of immutable blocks, packed to 1–3 bytes a
    /// sample, shared by all tenants); 0 turns it off
    #[arg(long, env = "QUIVER_SAMPLES_CACHE_BYTES", default_value_t = 512 << 20)]
    pub samples_cache_bytes: u64,
    /// Free memory the allocator keeps for the next query instead of giving it back to the
    /// system (glibc's trim threshold), in bytes; 0 keeps glibc's own
    #[arg(long, env = "QUIVER_ALLOCATOR_TRIM_BYTES", default_value_t = crate::memory::DEFAULT_TRIM_THRESHOLD)]
    pub allocator_trim_bytes: usize,
    /// Free memory the allocator may keep resident, in bytes: above it, checked every 10 s, it
    /// gives all its free memory back to the system (memory freed between live blocks,
    /// which the trim threshold does not return); 0 never does
    #[arg(long, env = "QUIVER_ALLOCATOR_FREE_BUDGET", default_value_t = crate::memory::DEFAULT_FREE_BUDGET)]
    pub allocator_free_budget: usize,
    /// Keep the executable's code and constant pages resident once touched; by default,
    /// every 10 s, they are dropped from the process and mapped again from the page cache
    /// when next used (most were run once, at startup, or only lie near code that runs)
    #[arg(long, env = "QUIVER_KEEP_UNUSED_CODE")]
    pub keep_unused_code: bool,
    /// Deepest PromQL expression accepted (AST levels, bounded from the text before parsing)
    #[arg(long, env = "QUIVER_QUERY_MAX_DEPTH", default_value_t = crate::promql::guard::DEFAULT_MAX_DEPTH)]
    pub query_max_depth: usize,
    /// Longest PromQL query text accepted, in bytes
    #[arg(long, env = "QUIVER_QUERY_MAX_LENGTH", default_value_t = crate::promql::guard::DEFAULT_MAX_LENGTH)]
    pub query_max_length: usize,
    /// Memory pool of one SQL query (joins, sorts, aggregations), in bytes
    #[arg(long, env = "QUIVER_SQL_MEMORY_LIMIT", default_value_t = 1 << 30)]
    pub sql_memory_limit: usize,
    /// Most rows one HTTP SQL answer may carry
    #[arg(long, env = "QUIVER_SQL_MAX_ROWS", default_value_t = 1_000_000)]
    pub sql_max_rows: usize,
    /// Largest decompressed remote-read request, in bytes
    #[arg(long, env = "QUIVER_REMOTE_READ_MAX_BYTES", default_value_t = 32 << 20)]
    pub remote_read_max_bytes: usize,
    /// Bytes that decoding the ingest and remote-read requests in flight may build together;
    /// one request estimated above it gets 413 before it is decoded [default: twice
    /// --max-body-bytes, 134217728]
    #[arg(long, env = "QUIVER_INGEST_DECODE_BUDGET")]
    pub ingest_decode_budget: Option<usize>,
    /// On SIGTERM/SIGINT, how long in-flight requests may take to finish
    #[arg(long, env = "QUIVER_SHUTDOWN_GRACE_PERIOD", default_value = "30s")]
    pub shutdown_grace_period: String,
    /// On SIGTERM/SIGINT, leave the heads in the WAL instead of writing them to blocks (a
    /// start then replays them: seconds at a million series, where loading a block of them
    /// takes under one)
    #[arg(long, env = "QUIVER_NO_FLUSH_ON_SHUTDOWN")]
    pub no_flush_on_shutdown: bool,
    /// With authentication off, honour the tenant header (`X-Scope-OrgID`); off: one tenant
    #[arg(long, env = "QUIVER_MULTI_TENANCY")]
    pub multi_tenancy: bool,
    /// Remote write 2.0: store a zero sample at a counter's created (start) timestamp, as
    /// Prometheus's `created-timestamp-zero-ingestion` feature does; off: created timestamps
    /// are read and not stored
    #[arg(long, env = "QUIVER_CREATED_TIMESTAMP_ZERO_INGESTION")]
    pub created_timestamp_zero_ingestion: bool,
    /// Most tenants (besides the default one) that may exist
    #[arg(long, env = "QUIVER_MAX_TENANTS", default_value_t = 1000)]
    pub max_tenants: usize,
    /// Memory the heads (live and waiting to be flushed) of all tenants together may hold, in
    /// bytes (~28 per sample); beyond it writes get 503 with Retry-After
    #[arg(long, env = "QUIVER_HEAD_MEMORY_LIMIT", default_value_t = 2 << 30)]
    pub head_memory_limit: usize,
    #[command(flatten)]
    pub results_cache: ResultsCacheArgs,
    #[command(flatten)]
    pub tls: TlsArgs,
    #[command(flatten)]
    pub otlp: OtlpArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// `[auth]`: users, JWT and enforced matchers (the config file only; see
    /// docs/security.md).
    #[arg(skip)]
    #[serde(default, skip_serializing)]
    pub auth: crate::auth::AuthConfig,
    #[command(flatten)]
    pub storage: StorageArgs,
}

/// The results cache (the config file's `[results_cache]`).
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResultsCacheArgs {
    /// Results cache bound in bytes; 0 turns it off
    #[arg(long = "results-cache-bytes", env = "QUIVER_RESULTS_CACHE_BYTES", default_value_t = 512 << 20)]
    pub max_bytes: u64,
    /// Results cache extent: range-query answers are cached in pieces this long
    #[arg(
        long = "results-cache-extent",
        env = "QUIVER_RESULTS_CACHE_EXTENT",
        default_value = "30m"
    )]
    pub extent: String,
    /// Steps newer than now minus this are never cached
    #[arg(
        long = "results-cache-freshness",
        env = "QUIVER_RESULTS_CACHE_FRESHNESS",
        default_value = "10m"
    )]
    pub freshness: String,
}

/// HTTPS (the config file's `[tls]`).
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsArgs {
    /// TLS: certificate chain (PEM); serve HTTPS when given with --tls-key-file
    #[arg(long = "tls-cert-file", env = "QUIVER_TLS_CERT_FILE")]
    pub cert_file: Option<PathBuf>,
    /// TLS: private key (PEM)
    #[arg(long = "tls-key-file", env = "QUIVER_TLS_KEY_FILE")]
    pub key_file: Option<PathBuf>,
}

/// OTLP translation (the config file's `[otlp]`).
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpArgs {
    /// OTLP: resource attributes (comma-separated raw keys) copied onto every series of
    /// their resource, besides `target_info` [default: none]
    #[arg(
        long = "otlp-promote-resource-attributes",
        env = "QUIVER_OTLP_PROMOTE_RESOURCE_ATTRIBUTES",
        value_delimiter = ','
    )]
    pub promote_resource_attributes: Vec<String>,
    /// OTLP: explicit-bucket histograms become native histograms with custom buckets
    /// instead of classic `_bucket`/`_sum`/`_count` series
    #[arg(
        long = "otlp-convert-histograms-to-nhcb",
        env = "QUIVER_OTLP_CONVERT_HISTOGRAMS_TO_NHCB"
    )]
    pub convert_histograms_to_nhcb: bool,
}

/// Which part of a cluster a process plays (`single`: the whole of Quiver in one process).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    #[default]
    Single,
    Writer,
    Distributor,
    Querier,
    Compactor,
}

/// Cluster roles over one bucket (the config file's `[cluster]`; docs/operations.md,
/// "Running a cluster").
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterArgs {
    /// Role in a cluster over one bucket: single (everything in this process), writer,
    /// distributor, querier or compactor
    #[arg(long = "role", env = "QUIVER_ROLE", value_enum, default_value_t = Role::Single)]
    pub role: Role,
    /// Cluster: shards series are hashed to (the same on every node; fixed for a bucket)
    #[arg(
        long = "cluster-shards",
        env = "QUIVER_CLUSTER_SHARDS",
        default_value_t = 8
    )]
    pub shards: u32,
    /// Cluster: how long a shard or compactor lease lasts unless renewed; a dead writer's
    /// shards move after it
    #[arg(
        long = "cluster-lease",
        env = "QUIVER_CLUSTER_LEASE",
        default_value = "15s"
    )]
    pub lease: String,
    /// Cluster: least time between two WAL objects of one shard (each is a PUT)
    #[arg(
        long = "cluster-commit-interval",
        env = "QUIVER_CLUSTER_COMMIT_INTERVAL",
        default_value = "100ms"
    )]
    pub commit_interval: String,
    /// Cluster: how often queriers read the manifest and the writers' WAL positions
    #[arg(
        long = "cluster-poll-interval",
        env = "QUIVER_CLUSTER_POLL_INTERVAL",
        default_value = "500ms"
    )]
    pub poll_interval: String,
    /// Cluster: how long blocks removed by compaction stay readable
    #[arg(
        long = "cluster-deletion-delay",
        env = "QUIVER_CLUSTER_DELETION_DELAY",
        default_value = "15m"
    )]
    pub deletion_delay: String,
    /// Cluster: the URL other nodes reach this one at [default: http:// and the listen
    /// address]
    #[arg(long = "cluster-advertise-url", env = "QUIVER_CLUSTER_ADVERTISE_URL")]
    pub advertise_url: Option<String>,
    /// Cluster: this node's id in leases [default: a new ULID per start]
    #[arg(long = "cluster-node-id", env = "QUIVER_CLUSTER_NODE_ID")]
    pub node_id: Option<String>,
    /// Cluster: shared secret nodes send on internal calls (`X-Quiver-Cluster-Secret`)
    #[arg(
        long = "cluster-secret",
        env = "QUIVER_CLUSTER_SECRET",
        hide_env_values = true
    )]
    pub secret: Option<String>,
    /// Cluster (queriers): address of the worker service that runs parts of other
    /// queriers' plans (gRPC) [default: the --listen host, a free port]
    #[arg(long = "cluster-worker-listen", env = "QUIVER_CLUSTER_WORKER_LISTEN")]
    pub worker_listen: Option<String>,
    /// Cluster (queriers): the URL other queriers reach the worker service at [default:
    /// http:// and its listen address]
    #[arg(
        long = "cluster-worker-advertise-url",
        env = "QUIVER_CLUSTER_WORKER_ADVERTISE_URL"
    )]
    pub worker_advertise_url: Option<String>,
    /// Cluster (queriers): run each query in the querier it reached only, not across the
    /// queriers
    #[arg(long = "cluster-local-queries", env = "QUIVER_CLUSTER_LOCAL_QUERIES")]
    pub local_queries: bool,
    /// Cluster (queriers): a PromQL plan runs across the queriers only when its leaves
    /// would read at least this many samples (estimated); smaller ones run where they
    /// arrived, since a distributed plan has a fixed cost (0: every plan)
    #[arg(
        long = "cluster-distribute-min-samples",
        env = "QUIVER_CLUSTER_DISTRIBUTE_MIN_SAMPLES",
        default_value_t = 4_000_000
    )]
    pub distribute_min_samples: usize,
    /// Cluster (queriers): every distributed PromQL plan sends its tasks' partial
    /// aggregates straight to the querier that coordinates it, which folds them, instead
    /// of shuffling them between the queriers first (one network stage less; the final
    /// fold then runs on one querier). Without it, only aggregations of at most 65,536
    /// cells (groups × steps) fold there
    #[arg(
        long = "cluster-fold-on-coordinator",
        env = "QUIVER_CLUSTER_FOLD_ON_COORDINATOR"
    )]
    pub fold_on_coordinator: bool,
    /// HA pairs: the label naming a sender's cluster; empty turns deduplication off
    #[arg(
        long = "ha-cluster-label",
        env = "QUIVER_HA_CLUSTER_LABEL",
        default_value = "cluster"
    )]
    pub ha_cluster_label: String,
    /// HA pairs: the label naming the replica within its cluster (dropped from stored series)
    #[arg(
        long = "ha-replica-label",
        env = "QUIVER_HA_REPLICA_LABEL",
        default_value = "__replica__"
    )]
    pub ha_replica_label: String,
    /// HA pairs: silence of the elected replica after which the other is elected
    #[arg(
        long = "ha-failover-timeout",
        env = "QUIVER_HA_FAILOVER_TIMEOUT",
        default_value = "30s"
    )]
    pub ha_failover_timeout: String,
}

/// Certificate chain and key of the HTTPS listener.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// Validated settings for `serve`.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    /// `""` or `/prefix` (no trailing slash).
    pub route_prefix: String,
    /// Every setting in force by flag name, secrets redacted (`/api/v1/status/flags`).
    pub flags: BTreeMap<String, String>,
    pub max_body_bytes: usize,
    pub compaction_interval_ms: i64,
    pub json_logs: bool,
    pub query_max_samples: usize,
    /// Run lowered PromQL as DataFusion plans (`--query-engine planner`).
    pub query_planner: bool,
    /// `--query-evaluate-below`.
    pub query_evaluate_below: usize,
    pub query_timeout_ms: i64,
    pub query_max_depth: usize,
    pub query_max_length: usize,
    pub sql_memory_limit: usize,
    pub sql_max_rows: usize,
    pub remote_read_max_bytes: usize,
    pub ingest_decode_budget: crate::ingest::budget::DecodeBudget,
    pub shutdown_grace_ms: i64,
    /// Write the heads to blocks after the last request on a graceful stop.
    pub flush_on_shutdown: bool,
    pub multi_tenancy: bool,
    pub created_timestamp_zero_ingestion: bool,
    pub otlp: crate::ingest::otlp::OtlpConfig,
    pub max_tenants: usize,
    pub head_memory_limit: usize,
    pub cors_origin: Option<regex::Regex>,
    pub results_cache: crate::api::CacheConfig,
    /// Bytes of packed block samples kept in memory (0: off).
    pub samples_cache_bytes: u64,
    /// glibc's trim threshold (0: glibc's own), set when serving starts.
    pub allocator_trim_bytes: usize,
    /// Resident free memory given back (checked every 10 s) when over it (0: never).
    pub allocator_free_budget: usize,
    /// Drop the executable's resident code pages every 10 s (`code_pages`).
    pub release_unused_code: bool,
    pub auth: crate::auth::AuthConfig,
    pub tls: Option<TlsFiles>,
    pub max_concurrent_queries: usize,
    pub write_samples_per_second: f64,
    pub write_burst_samples: f64,
    /// Retention as the user wrote it, for status endpoints.
    pub retention_text: String,
    pub storage: ResolvedStorage,
    /// `None`: the single process.
    pub cluster: Option<crate::cluster::ClusterConfig>,
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

/// `--route-prefix` as a path: `""`, or `/` and segments without a trailing slash.
fn route_prefix(text: &str) -> anyhow::Result<String> {
    let p = text.trim_end_matches('/');
    if p.is_empty() {
        return Ok(String::new());
    }
    anyhow::ensure!(
        p.starts_with('/')
            && p[1..].split('/').all(|seg| {
                !seg.is_empty()
                    && seg != "."
                    && seg != ".."
                    && seg
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
            }),
        "--route-prefix {text:?}: a path like /quiver (letters, digits, - . _ ~ between slashes)"
    );
    Ok(p.to_string())
}

impl ServeArgs {
    /// Every setting with a flag, by flag name, as the flags, file and environment set it
    /// (what `/api/v1/status/flags` answers, as Prometheus lists its flags). Secrets are
    /// shown as `<secret>` when set.
    pub fn flags(&self) -> BTreeMap<String, String> {
        fn leaves(v: &serde_json::Value, out: &mut serde_json::Map<String, serde_json::Value>) {
            if let serde_json::Value::Object(m) = v {
                for (k, v) in m {
                    if v.is_object() {
                        leaves(v, out);
                    } else {
                        out.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        let mut values = serde_json::Map::new();
        leaves(&serde_json::to_value(self).unwrap_or_default(), &mut values);
        let cmd = <Self as clap::Args>::augment_args(clap::Command::new("serve"));
        let mut out = BTreeMap::new();
        for a in cmd.get_arguments() {
            let (Some(long), Some(v)) = (a.get_long(), values.get(a.get_id().as_str())) else {
                continue;
            };
            let text = match v {
                serde_json::Value::Null => String::new(),
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Array(items) => items
                    .iter()
                    .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_string))
                    .collect::<Vec<_>>()
                    .join(","),
                other => other.to_string(),
            };
            let secret = long.contains("secret") || long.contains("password");
            let text = if secret && !text.is_empty() {
                "<secret>".to_string()
            } else {
                text
            };
            out.insert(long.to_string(), text);
        }
        out
    }
}

/// A positive duration setting in ms; `name` is its flag, for the error.
fn dur(name: &str, text: &str) -> anyhow::Result<i64> {
    let ms = parse_duration_ms(text).map_err(|e| anyhow::anyhow!("--{name}: {e}"))?;
    anyhow::ensure!(ms > 0, "--{name} must be positive");
    Ok(ms)
}

/// The TOML file at `path` as a table (empty without one).
pub fn load_file(path: Option<&Path>) -> anyhow::Result<toml::Table> {
    match path {
        None => Ok(toml::Table::new()),
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| anyhow::anyhow!("reading config {}: {e}", p.display()))?;
            text.parse::<toml::Table>()
                .map_err(|e| anyhow::anyhow!("config {}: {e}", p.display()))
        }
    }
}

/// Settings of type `T` from the command line and environment (`matches`) over the file
/// (`file`) over the defaults: each key of the file replaces the parsed value unless the
/// user gave that setting as a flag or a variable (clap tells which: `value_source`).
/// Keys no setting has are refused (`deny_unknown_fields`), as a typo in a file should be.
pub fn layered<T>(matches: &clap::ArgMatches, file: toml::Table) -> anyhow::Result<T>
where
    T: clap::FromArgMatches + Serialize + serde::de::DeserializeOwned,
{
    use clap::parser::ValueSource;
    let parsed = T::from_arg_matches(matches)?;
    let toml::Value::Table(mut merged) = toml::Value::try_from(&parsed)? else {
        anyhow::bail!("settings are not a table");
    };
    let from_user = |id: &str| {
        matches.ids().any(|i| i.as_str() == id)
            && matches!(
                matches.value_source(id),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            )
    };
    fn overlay(into: &mut toml::Table, file: toml::Table, from_user: &dyn Fn(&str) -> bool) {
        for (key, value) in file {
            match (into.get_mut(&key), value) {
                (Some(toml::Value::Table(section)), toml::Value::Table(inner)) => {
                    overlay(section, inner, from_user)
                }
                (_, value) => {
                    if !from_user(&key) {
                        into.insert(key, value);
                    }
                }
            }
        }
    }
    overlay(&mut merged, file, &from_user);
    Ok(toml::Value::Table(merged).try_into()?)
}

pub fn resolve_storage(a: &StorageArgs) -> anyhow::Result<ResolvedStorage> {
    let r = ResolvedStorage {
        data_dir: a.data_dir.clone(),
        url: a.url.clone(),
        s3: a.s3.options(),
        retention_ms: dur("retention", &a.retention)?,
        block_duration_ms: dur("block-duration", &a.block_duration)?,
        max_block_duration_ms: dur("max-block-duration", &a.max_block_duration)?,
        ooo_window_ms: dur("ooo-window", &a.ooo_window)?,
        head_flush_interval_ms: dur("head-flush-interval", &a.head_flush_interval)?,
        head_max_samples: a.head_max_samples,
        compaction_memory_limit: a.compaction_memory_limit,
    };
    anyhow::ensure!(
        r.max_block_duration_ms % r.block_duration_ms == 0,
        "--max-block-duration must be a multiple of --block-duration"
    );
    Ok(r)
}

impl ServeArgs {
    /// `serve`'s settings from its parsed arguments and the file they name.
    pub fn layered(matches: &clap::ArgMatches) -> anyhow::Result<ServeArgs> {
        let config: Option<PathBuf> = matches.get_one::<PathBuf>("config").cloned();
        let mut args: ServeArgs =
            layered(matches, load_file(config.as_deref())?).map_err(|e| match &config {
                Some(p) => anyhow::anyhow!("config {}: {e}", p.display()),
                None => e,
            })?;
        args.config = config;
        Ok(args)
    }

    pub fn resolve(&self) -> anyhow::Result<ServeConfig> {
        let listen = &self.listen;
        Ok(ServeConfig {
            listen: listen
                .parse()
                .map_err(|e| anyhow::anyhow!("--listen {listen:?}: {e}"))?,
            route_prefix: route_prefix(&self.route_prefix)?,
            flags: self.flags(),
            max_body_bytes: self.max_body_bytes,
            compaction_interval_ms: dur("compaction-interval", &self.compaction_interval)?,
            json_logs: self.log_format == LogFormat::Json,
            query_max_samples: self.query_max_samples,
            query_planner: self.query_engine == QueryEngine::Planner,
            query_evaluate_below: self.query_evaluate_below,
            query_timeout_ms: dur("query-timeout", &self.query_timeout)?,
            query_max_depth: self.query_max_depth,
            query_max_length: self.query_max_length,
            sql_memory_limit: self.sql_memory_limit,
            sql_max_rows: self.sql_max_rows,
            remote_read_max_bytes: self.remote_read_max_bytes,
            ingest_decode_budget: match self.ingest_decode_budget {
                Some(b) => crate::ingest::budget::DecodeBudget(b),
                None => crate::ingest::budget::DecodeBudget::from_body_limit(self.max_body_bytes),
            },
            shutdown_grace_ms: dur("shutdown-grace-period", &self.shutdown_grace_period)?,
            flush_on_shutdown: !self.no_flush_on_shutdown,
            multi_tenancy: self.multi_tenancy,
            created_timestamp_zero_ingestion: self.created_timestamp_zero_ingestion,
            otlp: crate::ingest::otlp::OtlpConfig {
                promote_resource_attributes: self.otlp.promote_resource_attributes.clone(),
                convert_histograms_to_nhcb: self.otlp.convert_histograms_to_nhcb,
            },
            max_tenants: self.max_tenants,
            head_memory_limit: self.head_memory_limit,
            cors_origin: match &self.cors_origin {
                None => None,
                Some(o) => Some(
                    regex::Regex::new(&format!("^(?:{o})$"))
                        .map_err(|e| anyhow::anyhow!("--cors-origin {o:?}: {e}"))?,
                ),
            },
            auth: self.auth.clone(),
            tls: match (self.tls.cert_file.clone(), self.tls.key_file.clone()) {
                (None, None) => None,
                (Some(cert_file), Some(key_file)) => Some(TlsFiles {
                    cert_file,
                    key_file,
                }),
                _ => anyhow::bail!("TLS needs both --tls-cert-file and --tls-key-file"),
            },
            max_concurrent_queries: self.max_concurrent_queries,
            write_samples_per_second: self.write_samples_per_second,
            write_burst_samples: self
                .write_burst_samples
                .unwrap_or(10.0 * self.write_samples_per_second),
            samples_cache_bytes: self.samples_cache_bytes,
            allocator_trim_bytes: self.allocator_trim_bytes,
            allocator_free_budget: self.allocator_free_budget,
            release_unused_code: !self.keep_unused_code,
            results_cache: crate::api::CacheConfig {
                max_bytes: self.results_cache.max_bytes,
                extent_ms: dur("results-cache-extent", &self.results_cache.extent)?,
                freshness_ms: dur("results-cache-freshness", &self.results_cache.freshness)?,
            },
            retention_text: self.storage.retention.clone(),
            storage: resolve_storage(&self.storage)?,
            cluster: self.resolve_cluster()?,
        })
    }

    fn resolve_cluster(&self) -> anyhow::Result<Option<crate::cluster::ClusterConfig>> {
        let c = &self.cluster;
        if c.role == Role::Single {
            return Ok(None);
        }
        anyhow::ensure!(
            (1..=4096).contains(&c.shards),
            "--cluster-shards must be within 1..=4096"
        );
        let lease_ms = dur("cluster-lease", &c.lease)?;
        anyhow::ensure!(lease_ms >= 1000, "--cluster-lease must be at least 1s");
        Ok(Some(crate::cluster::ClusterConfig {
            role: c.role,
            shards: c.shards,
            lease_ms,
            commit_interval_ms: parse_duration_ms(&c.commit_interval)
                .map_err(|e| anyhow::anyhow!("--cluster-commit-interval: {e}"))?
                .max(0),
            poll_interval_ms: dur("cluster-poll-interval", &c.poll_interval)?,
            deletion_delay_ms: parse_duration_ms(&c.deletion_delay)
                .map_err(|e| anyhow::anyhow!("--cluster-deletion-delay: {e}"))?
                .max(0),
            advertise_url: c.advertise_url.clone(),
            node_id: c
                .node_id
                .clone()
                .unwrap_or_else(|| ulid::Ulid::new().to_string()),
            secret: c.secret.clone(),
            worker_listen: c.worker_listen.clone(),
            worker_advertise_url: c.worker_advertise_url.clone(),
            local_queries: c.local_queries,
            distribute_min_samples: c.distribute_min_samples,
            fold_on_coordinator: c.fold_on_coordinator,
            ha: crate::cluster::ha::HaConfig {
                cluster_label: c.ha_cluster_label.clone(),
                replica_label: c.ha_replica_label.clone(),
                failover_timeout_ms: dur("ha-failover-timeout", &c.ha_failover_timeout)?,
            },
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    /// `quiver serve ARGS` read as the binary reads it (the file under flags and variables).
    fn serve(args: &[&str]) -> anyhow::Result<ServeArgs> {
        let m = Cli::command()
            .try_get_matches_from(std::iter::once("quiver").chain(args.iter().copied()))?;
        ServeArgs::layered(&m)
    }

    #[test]
    fn example_config_parses_and_flags_win() {
        let text = include_str!("../deploy/quiver.example.toml");
        let file: toml::Table = text.parse().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("q.toml");
        std::fs::write(&p, text).unwrap();
        let path = p.to_str().unwrap();
        let args = serve(&["--config", path, "--listen", "127.0.0.1:0"]).unwrap();
        let c = args.resolve().unwrap();
        assert_eq!(c.listen.port(), 0);
        let retention = file["storage"]["retention"].as_str().unwrap();
        assert_eq!(
            c.storage.retention_ms,
            parse_duration_ms(retention).unwrap()
        );
        // The file beats the default, a flag beats the file.
        let p = dir.path().join("r.toml");
        std::fs::write(&p, "max_tenants = 7\n[storage]\nretention = \"7d\"\n").unwrap();
        let path = p.to_str().unwrap();
        let args = serve(&["--config", path]).unwrap();
        assert_eq!(
            (args.storage.retention.as_str(), args.max_tenants),
            ("7d", 7)
        );
        let args = serve(&["--config", path, "--retention", "1d"]).unwrap();
        assert_eq!(
            (args.storage.retention.as_str(), args.max_tenants),
            ("1d", 7)
        );
    }

    /// Every setting but `config` has one key in the file: a file that sets them all to
    /// what the flags parsed reads back equal (so no flag lacks a file key, and no file key
    /// lacks a flag but the file-only ones).
    #[test]
    fn every_flag_has_a_file_key() {
        // Every optional setting given, so each has a value to write.
        let defaults = serve(&[
            "--cors-origin=.*",
            "--tls-cert-file=c.pem",
            "--tls-key-file=k.pem",
            "--ingest-decode-budget=1000",
            "--storage-url=file://",
            "--s3-endpoint=http://127.0.0.1:1",
            "--s3-region=r",
            "--s3-access-key-id=a",
            "--s3-secret-access-key=s",
            "--otlp-promote-resource-attributes=a,b",
            "--cluster-advertise-url=http://127.0.0.1:1",
            "--cluster-node-id=n",
            "--cluster-secret=s",
            "--cluster-worker-listen=127.0.0.1:0",
            "--cluster-worker-advertise-url=http://127.0.0.1:2",
        ])
        .unwrap();
        let table = toml::Table::try_from(&defaults).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("all.toml");
        std::fs::write(&p, toml::to_string(&table).unwrap()).unwrap();
        let again = serve(&["--config", p.to_str().unwrap()]).unwrap();
        assert_eq!(toml::Table::try_from(&again).unwrap(), table);
        // Each long flag's setting appears in the file's keys (sections included).
        let mut keys = Vec::new();
        fn walk(t: &toml::Table, out: &mut Vec<String>) {
            for (k, v) in t {
                out.push(k.clone());
                if let toml::Value::Table(inner) = v {
                    walk(inner, out);
                }
            }
        }
        walk(&table, &mut keys);
        for a in Cli::command().get_arguments() {
            let id = a.get_id().as_str();
            if id == "config" || a.get_long().is_none() {
                continue;
            }
            assert!(
                keys.iter().any(|k| k == id),
                "--{} has no file key",
                a.get_long().unwrap()
            );
        }
    }

    /// `/api/v1/status/flags` lists every flag by its name with the value in force, and
    /// never a secret.
    #[test]
    fn flags_by_name_with_secrets_redacted() {
        let f = serve(&[
            "--s3-secret-access-key=hunter2",
            "--cluster-secret=hunter3",
            "--query-max-samples=7",
            "--otlp-promote-resource-attributes=a,b",
        ])
        .unwrap()
        .flags();
        assert_eq!(f["query-max-samples"], "7");
        assert_eq!(f["retention"], "15d");
        assert_eq!(f["results-cache-bytes"], (512u64 << 20).to_string());
        assert_eq!(f["otlp-promote-resource-attributes"], "a,b");
        assert_eq!(f["s3-secret-access-key"], "<secret>");
        assert_eq!(f["cluster-secret"], "<secret>");
        assert!(!format!("{f:?}").contains("hunter"));
        assert!(!f.contains_key("config"));
        // Every long flag but --config is listed.
        let n = Cli::command()
            .get_arguments()
            .filter(|a| a.get_long().is_some_and(|l| l != "config"))
            .count();
        assert_eq!(f.len(), n, "{f:?}");
    }

    #[test]
    fn route_prefixes() {
        assert_eq!(route_prefix("").unwrap(), "");
        assert_eq!(route_prefix("/").unwrap(), "");
        assert_eq!(route_prefix("/quiver/").unwrap(), "/quiver");
        assert_eq!(route_prefix("/a/b-c").unwrap(), "/a/b-c");
        for bad in ["quiver", "/a//b", "/a/../b", "/a b", "/a?x"] {
            assert!(route_prefix(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn auth_example_config_turns_authentication_on() {
        let text = include_str!("../deploy/quiver-auth.example.toml");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("auth.toml");
        std::fs::write(&p, text).unwrap();
        let args = serve(&["--config", p.to_str().unwrap()]).unwrap();
        assert!(args.auth.is_enabled());
        let a = crate::auth::Authenticator::new(&args.auth).unwrap();
        assert!(a.enabled());
        assert_eq!(
            a.authenticate(None).unwrap_err(),
            crate::auth::AuthError::Missing
        );
        // Without an [auth] section authentication stays off.
        let plain = serve(&[]).unwrap();
        assert!(!plain.auth.is_enabled());
        assert_eq!(plain.auth.tenant_header, "X-Scope-OrgID");
    }

    #[test]
    fn bad_values_are_rejected_with_the_flag_name() {
        let err = serve(&["--retention", "forever"])
            .unwrap()
            .resolve()
            .unwrap_err()
            .to_string();
        assert!(err.contains("--retention"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.toml");
        std::fs::write(&p, "nope = 1").unwrap();
        let err = serve(&["--config", p.to_str().unwrap()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("nope"), "{err}");
    }

    #[test]
    fn query_engine_is_planner_or_evaluator() {
        let with = |args: &[&str]| serve(args).map(|a| a.resolve().unwrap().query_planner);
        assert!(with(&[]).unwrap());
        assert!(with(&["--query-engine", "planner"]).unwrap());
        assert!(!with(&["--query-engine", "evaluator"]).unwrap());
        let err = with(&["--query-engine", "fast"]).unwrap_err().to_string();
        assert!(err.contains("--query-engine"), "{err}");
        // The file takes the same words, and refuses others.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("e.toml");
        std::fs::write(&p, "query_engine = \"evaluator\"").unwrap();
        assert!(!with(&["--config", p.to_str().unwrap()]).unwrap());
        std::fs::write(&p, "log_format = \"xml\"").unwrap();
        assert!(with(&["--config", p.to_str().unwrap()]).is_err());
    }
}
