//! What kind of failure an error is, for every layer: the one vocabulary the HTTP edge
//! turns into a status, a Prometheus `errorType` and a body (`api::error`). Layers below
//! the API (storage, ingest, promql, auth) say the kind of their errors through [`Kinded`];
//! none of them knows about HTTP.

/// A failure's kind. Each has one HTTP status and one Prometheus `errorType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The request is wrong (a parameter, a query, a body).
    BadData,
    /// The query is valid but cannot be run (a limit, a type error at run time).
    Execution,
    /// The client went away or the query was aborted.
    Canceled,
    /// The query ran past its timeout.
    Timeout,
    NotFound,
    NotAcceptable,
    /// Retry later: overloaded, not ready, shutting down.
    Unavailable,
    /// Retry later: a per-tenant admission limit.
    TooManyRequests,
    /// Who are you? (missing or bad credentials)
    Unauthorized,
    /// You may not (permission, tenant, enforced matchers).
    Forbidden,
    /// The body, or what it decodes to, is over a limit.
    PayloadTooLarge,
    /// A content type or encoding Quiver does not read.
    UnsupportedMediaType,
    /// Ours, or the disk's, or the object store's.
    Internal,
}

impl ErrorKind {
    /// Every kind (for tests that enumerate them, and metrics exported at 0).
    pub const ALL: [ErrorKind; 13] = [
        ErrorKind::BadData,
        ErrorKind::Execution,
        ErrorKind::Canceled,
        ErrorKind::Timeout,
        ErrorKind::NotFound,
        ErrorKind::NotAcceptable,
        ErrorKind::Unavailable,
        ErrorKind::TooManyRequests,
        ErrorKind::Unauthorized,
        ErrorKind::Forbidden,
        ErrorKind::PayloadTooLarge,
        ErrorKind::UnsupportedMediaType,
        ErrorKind::Internal,
    ];

    /// The HTTP status (Prometheus's where it has one: 422 execution, 503 timeout, 499
    /// canceled).
    pub fn status(self) -> u16 {
        match self {
            ErrorKind::BadData => 400,
            ErrorKind::Execution => 422,
            ErrorKind::Canceled => 499,
            ErrorKind::Timeout => 503,
            ErrorKind::NotFound => 404,
            ErrorKind::NotAcceptable => 406,
            ErrorKind::Unavailable => 503,
            ErrorKind::TooManyRequests => 429,
            ErrorKind::Unauthorized => 401,
            ErrorKind::Forbidden => 403,
            ErrorKind::PayloadTooLarge => 413,
            ErrorKind::UnsupportedMediaType => 415,
            ErrorKind::Internal => 500,
        }
    }

    /// The Prometheus API `errorType` (Prometheus's own names, and Quiver's for what
    /// Prometheus has no word for).
    pub fn error_type(self) -> &'static str {
        match self {
            ErrorKind::BadData => "bad_data",
            ErrorKind::Execution => "execution",
            ErrorKind::Canceled => "canceled",
            ErrorKind::Timeout => "timeout",
            ErrorKind::NotFound => "not_found",
            ErrorKind::NotAcceptable => "not_acceptable",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::TooManyRequests => "too_many_requests",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::PayloadTooLarge => "payload_too_large",
            ErrorKind::UnsupportedMediaType => "unsupported_media_type",
            ErrorKind::Internal => "internal",
        }
    }

    /// Whether a client should retry later (the answer carries `Retry-After`).
    pub fn retry_later(self) -> bool {
        matches!(self, ErrorKind::Unavailable | ErrorKind::TooManyRequests)
    }
}

/// An error that knows its kind.
pub trait Kinded {
    fn kind(&self) -> ErrorKind;
}

impl Kinded for crate::storage::StorageError {
    fn kind(&self) -> ErrorKind {
        use crate::storage::StorageError as E;
        match self {
            E::OutOfBounds { .. } | E::Invalid(_) => ErrorKind::BadData,
            E::Overloaded(_) | E::Unavailable(_) | E::Closed | E::Fenced(_) => {
                ErrorKind::Unavailable
            }
            E::ObjectStore(_)
            | E::Parquet(_)
            | E::Arrow(_)
            | E::DataFusion(_)
            | E::Io(_)
            | E::Corrupt(_)
            | E::Format(_)
            | E::Config(_) => ErrorKind::Internal,
        }
    }
}

impl Kinded for crate::promql::PromqlError {
    fn kind(&self) -> ErrorKind {
        use crate::promql::PromqlError as E;
        match self {
            E::Parse(_) => ErrorKind::BadData,
            E::Execution(_) | E::TooManySamples => ErrorKind::Execution,
            E::Timeout => ErrorKind::Timeout,
            E::Canceled => ErrorKind::Canceled,
            E::Storage(s) => s.kind(),
        }
    }
}

impl Kinded for crate::ingest::IngestError {
    fn kind(&self) -> ErrorKind {
        use crate::ingest::IngestError as E;
        match self {
            E::TooLarge { .. } | E::Budget { .. } => ErrorKind::PayloadTooLarge,
            E::Unsupported { .. } => ErrorKind::UnsupportedMediaType,
            E::Busy | E::HeadFull { .. } => ErrorKind::Unavailable,
            E::Snappy(_)
            | E::Protobuf(_)
            | E::Labels { .. }
            | E::Parse { .. }
            | E::Unstored { .. }
            | E::Histogram { .. }
            | E::Exemplar { .. }
            | E::Io(_) => ErrorKind::BadData,
        }
    }
}

impl Kinded for crate::auth::AuthError {
    fn kind(&self) -> ErrorKind {
        use crate::auth::AuthError as E;
        match self {
            E::Missing | E::Scheme | E::Token(_) | E::Password => ErrorKind::Unauthorized,
            // Configured claims that do not parse: refuse rather than widen access.
            E::Forbidden(_) | E::TenantNotAllowed(_) | E::Matchers(..) => ErrorKind::Forbidden,
            E::BadTenant(_) => ErrorKind::BadData,
        }
    }
}
