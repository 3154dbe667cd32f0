use thiserror::Error;

/// Storage failures. `OutOfBounds` and `Invalid` are the client's fault, the rest ours or
/// the disk's: their kinds are mapped once, in `crate::error_kind`.
#[derive(Debug, Error)]
pub enum StorageError {
    #[error(
        "sample for series {labels} at {timestamp_ms} is outside the accepted window [{min_ms}, {max_ms}]"
    )]
    OutOfBounds {
        labels: String,
        timestamp_ms: i64,
        min_ms: i64,
        max_ms: i64,
    },
    #[error("object store: {0}")]
    ObjectStore(#[from] object_store::Error),
    #[error("parquet: {0}")]
    Parquet(#[from] datafusion::parquet::errors::ParquetError),
    #[error("arrow: {0}")]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
    #[error("datafusion: {0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("corrupt data: {0}")]
    Corrupt(String),
    #[error("unsupported format: {0}")]
    Format(String),
    #[error("storage is shutting down")]
    Closed,
    #[error("configuration: {0}")]
    Config(String),
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("invalid request: {0}")]
    Invalid(String),
    /// Too much unflushed data in memory: the writer should retry later (503).
    #[error("overloaded: {0}")]
    Overloaded(String),
    /// This process no longer owns the shard (its lease expired or another took it): the
    /// write is refused and the sender retries against the new owner (503).
    #[error("shard not owned here: {0}")]
    Fenced(String),
}
