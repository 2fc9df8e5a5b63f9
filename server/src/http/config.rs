//! [`HttpConfig`]: what the HTTP layer needs beyond the engine, with its defaults defined once
//! (the `janus serve` flags take theirs from here).

use std::time::Duration;

use janus::limits::MAX_IMAGES_PER_REQUEST;

/// `--max-body-bytes`: fits a base64 image of ~12 MB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// `--file-ttl-secs`.
pub const DEFAULT_FILE_TTL_SECS: u64 = 3600;
/// `--max-files`.
pub const DEFAULT_MAX_FILES: usize = 256;
/// `--max-streams`.
pub const DEFAULT_MAX_STREAMS: usize = 64;

#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// When set, `/v1/*` requests need `Authorization: Bearer <key>`.
    pub api_key: Option<String>,
    pub max_body_bytes: usize,
    /// The engine's batch limit; `n` may not exceed it.
    pub max_batch_images: usize,
    /// Whether http(s) image URLs in chat messages are fetched (public addresses only, checked at
    /// the one DNS lookup; see `remote.rs`); off by default.
    pub allow_remote_images: bool,
    /// How long `response_format=url` images stay downloadable.
    pub file_ttl: Duration,
    /// Most images kept for `response_format=url`; the oldest go first.
    pub max_files: usize,
    /// Base of the URLs handed out (e.g. behind a proxy); default `http://{Host header}`.
    pub public_url: Option<String>,
    /// Origins allowed by CORS (`*` for any); empty: CORS off.
    pub cors_origins: Vec<String>,
    /// Most streamed (`stream: true`) responses open at once; beyond that, 429.
    pub max_streams: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            api_key: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_batch_images: MAX_IMAGES_PER_REQUEST,
            allow_remote_images: false,
            file_ttl: Duration::from_secs(DEFAULT_FILE_TTL_SECS),
            max_files: DEFAULT_MAX_FILES,
            public_url: None,
            cors_origins: Vec::new(),
            max_streams: DEFAULT_MAX_STREAMS,
        }
    }
}
