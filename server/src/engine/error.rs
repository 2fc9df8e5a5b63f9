//! Engine failures, one variant per way a caller must answer; library errors are mapped by their
//! kind (never by their text), and a panic in the model's work becomes an internal error.

use std::panic::{catch_unwind, AssertUnwindSafe};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EngineError {
    /// The queue is full: 429 with Retry-After.
    #[error("the server is busy ({queued} requests waiting); retry in {retry_after_s} s")]
    QueueFull { queued: usize, retry_after_s: u64 },
    /// 503 while the model loads.
    #[error("the model is still loading")]
    Loading,
    /// 503: the model could not be loaded.
    #[error("the model failed to load: {0}")]
    LoadFailed(String),
    /// 400: a field outside its limits.
    #[error(transparent)]
    Invalid(#[from] janus::Invalid),
    /// 400: the prompt leaves no room for what is to be generated.
    #[error("{}", janus::Error::PromptTooLong { tokens: *.tokens, max: *.max })]
    PromptTooLong { tokens: usize, max: usize },
    /// 503: the device ran out of memory for this batch; the server keeps serving.
    #[error("out of memory: {0}")]
    OutOfMemory(String),
    /// 500: a fault inside the engine; the server keeps serving.
    #[error("internal error: {0}")]
    Internal(String),
    /// 503: the server is draining for shutdown.
    #[error("the server is shutting down")]
    ShuttingDown,
}

impl From<janus::Error> for EngineError {
    fn from(e: janus::Error) -> Self {
        match e {
            janus::Error::Invalid(i) => EngineError::Invalid(i),
            janus::Error::PromptTooLong { tokens, max } => EngineError::PromptTooLong { tokens, max },
            janus::Error::OutOfMemory(inner) => EngineError::OutOfMemory(inner.to_string()),
            other => EngineError::Internal(other.to_string()),
        }
    }
}

/// Runs the model's work `f`, turning its error into an [`EngineError`] and a panic into an
/// internal error (the engine thread goes on).
pub fn guarded<T>(f: impl FnOnce() -> janus::Result<T>) -> Result<T, EngineError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r.map_err(EngineError::from),
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".into());
            tracing::error!(%msg, "a step panicked");
            Err(EngineError::Internal(format!("the request's work panicked: {msg}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_errors_map_by_kind() {
        let oom = janus::Error::OutOfMemory(candle_core::Error::Msg("cuMemAlloc".into()));
        assert!(matches!(EngineError::from(oom), EngineError::OutOfMemory(_)));
        let text_says_oom = janus::Error::Candle(candle_core::Error::Msg("CUDA_ERROR_OUT_OF_MEMORY".into()));
        assert!(matches!(EngineError::from(text_says_oom), EngineError::Internal(_)), "text decides nothing");
        let long = janus::Error::PromptTooLong { tokens: 900, max: 512 };
        assert_eq!(EngineError::from(long), EngineError::PromptTooLong { tokens: 900, max: 512 });
        let tok = janus::Error::Tokenizer("decode failed".into());
        assert!(
            matches!(EngineError::from(tok), EngineError::Internal(_)),
            "a tokenizer fault is ours, not the client's"
        );
        let invalid = janus::Invalid::new(janus::Field::TopP, "must be in (0, 1]; got 2");
        assert_eq!(EngineError::from(janus::Error::Invalid(invalid.clone())), EngineError::Invalid(invalid));
        assert!(matches!(guarded::<()>(|| panic!("boom")), Err(EngineError::Internal(m)) if m.contains("boom")));
    }
}
