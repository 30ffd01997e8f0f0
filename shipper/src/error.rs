//! The error type of `logferry-shipper`.

/// Everything the shipper can fail at, named by the answer it leads to.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShipperError {
    /// Bytes or text in one of logferry's formats (a segment, a position, a manifest)
    /// fail validation (400 on upload); the message says which and why.
    #[error("{0}")]
    Format(#[from] logferry_common::Error),
    /// An uploaded snapshot chunk or manifest is invalid (400); the message names it.
    #[error("rejected snapshot upload: {0}")]
    BadSnapshot(String),
    /// A request names something invalid, e.g. a stream name outside the grammar (400).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// A request without a valid token (401): none, unknown, or expired.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// A valid token that does not cover the action or the stream (403).
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The shipper itself failed while handling a request (500), e.g. a validation task that
    /// panicked.
    #[error("internal error: {0}")]
    Internal(String),
    /// A different segment is already stored at this start position, or the new one
    /// overlaps stored ones (409).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The object store failed (503 to the agent, which retries); the message names the
    /// store, what it answered and the fix ([`crate::store_error::describe`]).
    #[error("{0}")]
    Store(String),
    /// An object read back from the store fails its checks (500: the stored data, not the
    /// request, is at fault); names the object.
    #[error("stored object {key} is corrupt: {source}; run logferry-shipper verify")]
    Corrupt {
        /// The object's key.
        key: String,
        /// What is wrong with it.
        source: logferry_common::Error,
    },
    /// A key needed to open stored data is missing, unreadable or not the right one; names
    /// the object and the key id.
    #[error("{object}: {source}")]
    Key {
        /// The object (or config section) the key was needed for.
        object: String,
        /// What is wrong with the key.
        source: logferry_common::Error,
    },
    /// A TLS file or setting is unusable (at start), or `gen-certs` cannot write; names the
    /// key or file.
    #[error("TLS: {0}")]
    Tls(String),
    /// The store URL or options are unusable.
    #[error("store configuration: {0}")]
    StoreConfig(String),
    /// A restore or export cannot be done as asked; the message gives the reason and what
    /// is possible (the restorable range, the gap, `--force`).
    #[error("{0}")]
    Restore(String),
    /// The operator stopped the command (SIGINT, SIGTERM, SIGHUP) where it could not stop at
    /// a transaction boundary; the message says what the target holds and what to do.
    #[error("interrupted: {0}")]
    Interrupted(String),
    /// The stored chain breaks between where a restore, export or drill starts and its
    /// target: going on would skip events. The message names the missing range and what to
    /// do instead. Commands exit 1 on it, as on any other finding about the backup.
    #[error("{0}")]
    Gap(String),
}

/// Result with [`ShipperError`].
pub type Result<T, E = ShipperError> = std::result::Result<T, E>;
