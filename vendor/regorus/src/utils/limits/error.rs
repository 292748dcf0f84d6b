// Copyright (c) Microsoft Corporation.
// Licensed under the MIT License.

#![allow(dead_code)]

use core::fmt;
use core::time::Duration;

/// Errors reported when execution time or memory ceilings are enforced.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum LimitError {
    /// Reported when the execution timer observes elapsed time beyond the configured limit.
    TimeLimitExceeded {
        /// Elapsed work duration when the threshold was exceeded.
        elapsed: Duration,
        /// Configured time limit.
        limit: Duration,
    },
    /// Reported when the memory tracker estimates usage beyond the configured limit.
    MemoryLimitExceeded {
        /// Estimated bytes in use when the limit was detected.
        usage: u64,
        /// Configured memory ceiling in bytes.
        limit: u64,
    },
    /// Reported when a compiled regex NFA exceeds the configured size limit.
    RegexSizeLimitExceeded {
        /// Configured compiled-NFA size ceiling in bytes.
        limit: usize,
    },
    /// Reported when a regex needs a Unicode table this build leaves out (a `\p{..}` class
    /// without the regex crate's unicode-gencat/unicode-script features). An error, never
    /// undefined: OPA would answer, so `not regex.match(...)` must not flip to true. svidgate patch.
    RegexUnicodeUnavailable,
    /// Reported by `glob.match` where OPA's glob library (gobwas/glob) panics, which stops OPA's
    /// evaluation, or for a pattern past the bounds of svidgate's port of it. An error, never
    /// undefined, so `not glob.match(...)` cannot flip to true. svidgate patch.
    GlobMatchRefused {
        /// What happened.
        reason: &'static str,
    },
}

impl fmt::Debug for LimitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TimeLimitExceeded { elapsed, limit } => f
                .debug_struct("TimeLimitExceeded")
                .field("elapsed", elapsed)
                .field("limit", limit)
                .finish(),
            Self::MemoryLimitExceeded { usage, limit } => f
                .debug_struct("MemoryLimitExceeded")
                .field("usage", usage)
                .field("limit", limit)
                .finish(),
            Self::RegexSizeLimitExceeded { limit } => f
                .debug_struct("RegexSizeLimitExceeded")
                .field("limit", limit)
                .finish(),
            Self::RegexUnicodeUnavailable => f.write_str("RegexUnicodeUnavailable"),
            Self::GlobMatchRefused { reason } => f
                .debug_struct("GlobMatchRefused")
                .field("reason", reason)
                .finish(),
        }
    }
}

impl fmt::Display for LimitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TimeLimitExceeded { elapsed, limit } => {
                let elapsed_ns = elapsed.as_nanos();
                let limit_ns = limit.as_nanos();
                write!(
                    f,
                    "execution exceeded time limit (elapsed={}ns, limit={}ns)",
                    elapsed_ns, limit_ns
                )
            }
            Self::MemoryLimitExceeded { usage, limit } => {
                write!(
                    f,
                    "execution exceeded memory limit (usage={} bytes, limit={} bytes)",
                    usage, limit
                )
            }
            Self::RegexSizeLimitExceeded { limit } => {
                write!(f, "compiled regex exceeded size limit ({} bytes)", limit)
            }
            Self::RegexUnicodeUnavailable => {
                write!(f, "regex needs a Unicode table this build does not include")
            }
            Self::GlobMatchRefused { reason } => write!(f, "glob.match refused: {}", reason),
        }
    }
}

impl core::error::Error for LimitError {}
