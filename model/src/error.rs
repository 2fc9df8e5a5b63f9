//! Library error type. The server maps these to HTTP status codes in one place.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tensor operation failed (shape mismatch, device error, out of memory...).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),

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

    #[error("tokenizer: {0}")]
    Tokenizer(String),

    /// The caller asked for something invalid (bad parameter, prompt too long, bad token id...).
    #[error("{0}")]
    InvalidInput(String),

    /// An image could not be decoded or encoded.
    #[error("image: {0}")]
    Image(String),

    /// The model was loaded without the part this needs (see `LoadOptions::parts`).
    #[error("this model was loaded without its {0}")]
    PartNotLoaded(&'static str),
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
