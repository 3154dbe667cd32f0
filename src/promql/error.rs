use thiserror::Error;

use crate::storage::StorageError;

/// Query failures, each with the Prometheus `errorType` it maps to.
#[derive(Debug, Error)]
pub enum PromqlError {
    /// The query text does not parse (`bad_data`).
    #[error("{0}")]
    Parse(String),
    /// Evaluation failed in a way Prometheus reports as `execution`.
    #[error("{0}")]
    Execution(String),
    #[error("query processing would load too many samples into memory in query execution")]
    TooManySamples,
    /// The query ran past its timeout (`timeout`, 503 like Prometheus).
    #[error("query timed out in expression evaluation")]
    Timeout,
    /// The request went away or was aborted.
    #[error("query was canceled")]
    Canceled,
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
}

impl PromqlError {
    pub fn exec(msg: impl Into<String>) -> Self {
        PromqlError::Execution(msg.into())
    }
}
