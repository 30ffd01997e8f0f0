//! The error type of `logferry-common`.

/// Everything that can go wrong while parsing or validating logferry's shared formats.
///
/// Variants are named by what the caller does next: `Corrupt` data is rejected and reported,
/// `Invalid` input is answered with a message that names the bad value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Stored bytes fail validation: truncated, flipped, oversized, or with a checksum that
    /// does not match.
    #[error("corrupt {what}: {detail}")]
    Corrupt {
        /// What was read: "segment", "binlog payload", "snapshot chunk", ...
        what: &'static str,
        /// The first problem found.
        detail: String,
    },
    /// A value given by a user or a peer (stream name, position text, key) is malformed.
    #[error("invalid {what}: {detail}")]
    Invalid {
        /// What kind of value was rejected, e.g. "stream id".
        what: &'static str,
        /// Why, including the offending value.
        detail: String,
    },
    /// Two positions of different kinds of log were compared (a stream's kind never
    /// changes, so this is a mixed-up stream or a bug).
    #[error("a {left} position cannot be compared with a {right} position")]
    KindMismatch {
        /// Kind of the left-hand position.
        left: crate::SourceKind,
        /// Kind of the right-hand position.
        right: crate::SourceKind,
    },
    /// A key is missing, unreadable or not the right one, or an object is encrypted where
    /// it may not be or plain where it must not be; the message names the key id and the
    /// fix.
    #[error("{detail}")]
    Key {
        /// Id of the key concerned (a master key id, or `MASTER/EPOCH`).
        key_id: String,
        /// What is wrong and what to do.
        detail: String,
    },
    /// zstd failed to compress (it cannot fail on valid input, but the API is fallible).
    #[error("compression failed: {0}")]
    Compress(#[source] std::io::Error),
}

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn corrupt(msg: impl Into<String>) -> Self {
        Error::corrupt_in("segment", msg)
    }

    pub(crate) fn corrupt_in(what: &'static str, detail: impl Into<String>) -> Self {
        Error::Corrupt {
            what,
            detail: detail.into(),
        }
    }

    pub(crate) fn invalid(what: &'static str, detail: impl Into<String>) -> Self {
        Error::Invalid {
            what,
            detail: detail.into(),
        }
    }
}
