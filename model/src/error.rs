//! Library error type. Each kind a caller may act on is its own variant (the server maps them to
//! HTTP statuses in one place, `server/src/http/error.rs`); nothing is decided by reading a
//! message.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tensor operation failed (shape mismatch, device error...). Out-of-memory failures are
    /// [`Error::OutOfMemory`] instead.
    #[error(transparent)]
    Candle(candle_core::Error),

    /// The device could not allocate (recognised from candle's CUDA error value, see
    /// [`is_out_of_memory`]). The work that needed the memory failed; the model is intact.
    #[error("out of memory: {0}")]
    OutOfMemory(candle_core::Error),

    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },

    /// `config.json` is missing a field, has a wrong type or describes an unsupported model.
    #[error("invalid config {}: {msg}", path.display())]
    Config { path: PathBuf, msg: String },

    /// A model directory or hub repository lacks a file we need, or the hub could not be reached.
    #[error("{0}")]
    ModelFiles(String),

    /// A checkpoint tensor is missing, unreadable or has the wrong shape.
    #[error("{0}")]
    Weights(String),

    /// The tokenizer failed (a fault of the model files, not of the request).
    #[error("tokenizer: {0}")]
    Tokenizer(String),

    /// A request field is outside its limits.
    #[error(transparent)]
    Invalid(#[from] Invalid),

    /// An answer's structured-output constraint failed while decoding (not the request's fault:
    /// its spec compiled).
    #[error("{0}")]
    Constraint(String),

    /// The prompt, with its template, leaves no room for what is to be generated.
    #[error(
        "the prompt is {tokens} tokens with its template; at most {max} fit in the context with the tokens to generate"
    )]
    PromptTooLong { tokens: usize, max: usize },

    /// The image is in a format this library does not read (`None`: not recognised at all).
    #[error("{}; send PNG, JPEG, WebP or GIF", match format {
        Some(f) => format!("{f} images are not supported"),
        None => "unrecognised image format".to_string(),
    })]
    UnsupportedImage { format: Option<String> },

    /// The image bytes could not be decoded (corrupt, truncated, empty).
    #[error("{0}")]
    InvalidImage(String),

    /// The image's header says it has more pixels than the limit (refused before decoding).
    #[error(
        "the image is {width}x{height} ({:.1} megapixels); the limit is {:.1} megapixels and {max_side} pixels a side",
        *width as f64 * *height as f64 / 1e6,
        *max_pixels as f64 / 1e6
    )]
    ImageTooLarge { width: u32, height: u32, max_pixels: u64, max_side: u32 },

    /// An image could not be encoded.
    #[error("image encoding: {0}")]
    ImageEncode(String),

    /// The caller used the library wrongly (token ids out of range, a batch index that does not
    /// exist...): a bug in the caller rather than a bad request.
    #[error("{0}")]
    InvalidInput(String),

    /// The model was loaded without the part this needs (see `LoadOptions::parts`).
    #[error("this model was loaded without its {0}")]
    PartNotLoaded(&'static str),
}

/// A request field, as the library names it. Each surface names it its own way (the HTTP layer's
/// JSON field, the CLI's flag), so the field travels as this value, not as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    Prompt,
    N,
    Seed,
    CfgWeight,
    Temperature,
    TopK,
    TopP,
    PartialImages,
    MaxTokens,
    Messages,
    Question,
    Stop,
    TopLogprobs,
    FrequencyPenalty,
    PresencePenalty,
    RepetitionPenalty,
    ResponseFormat,
}

impl Field {
    /// The library's name (also the HTTP name, except `cfg_weight`, which HTTP calls
    /// `guidance_scale`).
    pub fn name(self) -> &'static str {
        match self {
            Field::Prompt => "prompt",
            Field::N => "n",
            Field::Seed => "seed",
            Field::CfgWeight => "cfg_weight",
            Field::Temperature => "temperature",
            Field::TopK => "top_k",
            Field::TopP => "top_p",
            Field::PartialImages => "partial_images",
            Field::MaxTokens => "max_tokens",
            Field::Messages => "messages",
            Field::Question => "question",
            Field::Stop => "stop",
            Field::TopLogprobs => "top_logprobs",
            Field::FrequencyPenalty => "frequency_penalty",
            Field::PresencePenalty => "presence_penalty",
            Field::RepetitionPenalty => "repetition_penalty",
            Field::ResponseFormat => "response_format",
        }
    }
}

/// A field outside its limits; `reason` names the limit ("must be between 0 and 10; got 11").
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("`{}`: {reason}", field.name())]
pub struct Invalid {
    pub field: Field,
    pub reason: String,
}

impl Invalid {
    pub fn new(field: Field, reason: impl Into<String>) -> Self {
        Self { field, reason: reason.into() }
    }
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }

    /// Whether the failure is the request's fault (a 400 for a server), as opposed to the
    /// model's files, the device or this library.
    pub fn is_bad_request(&self) -> bool {
        matches!(
            self,
            Error::Invalid(_)
                | Error::PromptTooLong { .. }
                | Error::UnsupportedImage { .. }
                | Error::InvalidImage(_)
                | Error::ImageTooLarge { .. }
        )
    }
}

impl From<candle_core::Error> for Error {
    fn from(e: candle_core::Error) -> Self {
        if is_out_of_memory(&e) {
            Error::OutOfMemory(e)
        } else {
            Error::Candle(e)
        }
    }
}

/// Whether candle failed because the device could not allocate: CUDA's
/// `CUDA_ERROR_OUT_OF_MEMORY` from the driver, or cuBLAS's `CUBLAS_STATUS_ALLOC_FAILED`, looked
/// up by value through candle's wrappers (backtrace, context, path). A CPU allocation failure
/// aborts the process in Rust, so there is nothing to recognise there.
pub fn is_out_of_memory(e: &candle_core::Error) -> bool {
    use candle_core::Error as E;
    match e {
        E::WithBacktrace { inner, .. } | E::Context { inner, .. } | E::WithPath { inner, .. } => {
            is_out_of_memory(inner)
        }
        E::Cuda(inner) => cuda_out_of_memory(inner.as_ref()),
        _ => false,
    }
}

#[cfg(feature = "cuda")]
fn cuda_out_of_memory(e: &(dyn std::error::Error + Send + Sync + 'static)) -> bool {
    use candle_core::cuda_backend::cudarc::{cublas, driver};
    use candle_core::cuda_backend::CudaError;
    let driver_oom = |d: &driver::DriverError| d.0 == driver::sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY;
    let cublas_oom = |c: &cublas::result::CublasError| c.0 == cublas::sys::cublasStatus_t::CUBLAS_STATUS_ALLOC_FAILED;
    if let Some(c) = e.downcast_ref::<CudaError>() {
        return match c {
            CudaError::Cuda(d) | CudaError::Load { cuda: d, .. } => driver_oom(d),
            CudaError::Cublas(b) => cublas_oom(b),
            _ => false,
        };
    }
    e.downcast_ref::<driver::DriverError>().is_some_and(driver_oom)
        || e.downcast_ref::<cublas::result::CublasError>().is_some_and(cublas_oom)
}

#[cfg(not(feature = "cuda"))]
fn cuda_out_of_memory(_: &(dyn std::error::Error + Send + Sync + 'static)) -> bool {
    false
}

pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_candle_errors_stay_candle_errors() {
        let e: Error = candle_core::Error::Msg("out of memory".into()).into();
        assert!(matches!(e, Error::Candle(_)), "text never decides the kind: {e:?}");
        let e: Error = candle_core::Error::Cuda("CUDA_ERROR_OUT_OF_MEMORY".into()).into();
        assert!(matches!(e, Error::Candle(_)), "a CUDA error is recognised by value, not by text: {e:?}");
    }

    /// The driver's out-of-memory value, wrapped as candle wraps it (with a backtrace and a
    /// context), is recognised; another driver error is not.
    #[cfg(feature = "cuda")]
    #[test]
    fn cuda_out_of_memory_is_recognised_by_value() {
        use candle_core::cuda_backend::cudarc::driver::{sys::CUresult, DriverError};
        use candle_core::cuda_backend::CudaError;
        let oom = candle_core::Error::from(CudaError::Cuda(DriverError(CUresult::CUDA_ERROR_OUT_OF_MEMORY)));
        let wrapped = candle_core::Error::Context { inner: Box::new(oom), context: Box::new("step") };
        assert!(matches!(Error::from(wrapped), Error::OutOfMemory(_)));
        let other = candle_core::Error::from(CudaError::Cuda(DriverError(CUresult::CUDA_ERROR_ILLEGAL_ADDRESS)));
        assert!(matches!(Error::from(other), Error::Candle(_)));
    }
}
