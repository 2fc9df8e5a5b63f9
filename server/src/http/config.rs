//! [`HttpConfig`]: what the HTTP layer needs beyond the engine, with its defaults defined once
//! (the `janus serve` flags take theirs from here).

use std::time::Duration;

use janus::limits::{
    DEFAULT_MAX_IMAGE_PIXELS, MAX_CHAT_IMAGES, MAX_IMAGES_PER_REQUEST, MAX_MESSAGES, MAX_MESSAGE_CHARS,
    MAX_REQUEST_CHARS,
};

/// `--host`: loopback only until told otherwise.
pub const DEFAULT_HOST: &str = "127.0.0.1";
/// `--port`.
pub const DEFAULT_PORT: u16 = 8000;
/// `--queue-capacity`: requests waiting to start.
pub const DEFAULT_QUEUE_CAPACITY: usize = 64;
/// `--batch-wait-ms`: when idle, the wait for image requests to batch with the first.
pub const DEFAULT_BATCH_WAIT_MS: u64 = 20;
/// `--shutdown-grace-secs`.
pub const DEFAULT_SHUTDOWN_GRACE_SECS: u64 = 30;
/// `--max-body-bytes`: fits a base64 image of ~12 MB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// `--file-ttl-secs`.
pub const DEFAULT_FILE_TTL_SECS: u64 = 3600;
/// `--max-files`.
pub const DEFAULT_MAX_FILES: usize = 256;
/// `--response-store-size`: responses kept for `previous_response_id`.
pub const DEFAULT_RESPONSE_STORE_SIZE: usize = 1024;
/// `--response-store-bytes`: what the kept responses may hold in all (their messages and image
/// data URLs), 256 MiB.
pub const DEFAULT_RESPONSE_STORE_BYTES: usize = 256 << 20;
/// The square sides `size` may ask for besides the model's own (OpenAI's square sizes); the
/// images are resized to them, not generated at them.
pub const OUTPUT_SIDES: [u32; 3] = [256, 512, 1024];
/// `--max-streams`.
pub const DEFAULT_MAX_STREAMS: usize = 64;
/// `--max-concurrent-requests` (TGI's default).
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 128;
/// `--image-memory-bytes`: room for the largest image a request may hold (64 megapixels of
/// 16-bit RGBA and its RGB copy, 0.7 GiB) beside the model-size pixels of waiting requests.
pub const DEFAULT_IMAGE_MEMORY_BYTES: u64 = 1 << 30;

/// What one request may hold, checked before its work starts (each a 400 naming the field and
/// the limit); the `serve` flags of the same names set them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RequestLimits {
    /// `--max-messages`.
    pub max_messages: usize,
    /// `--max-message-chars`: characters of one message's text.
    pub max_message_chars: usize,
    /// `--max-request-chars`: characters of a request's text (system prompt and messages).
    pub max_request_chars: usize,
    /// `--max-images-per-request`: images in one conversation.
    pub max_images: usize,
    /// `--max-image-pixels`: pixels of one image, read from its header.
    pub max_image_pixels: u64,
}

impl Default for RequestLimits {
    fn default() -> Self {
        Self {
            max_messages: MAX_MESSAGES,
            max_message_chars: MAX_MESSAGE_CHARS,
            max_request_chars: MAX_REQUEST_CHARS,
            max_images: MAX_CHAT_IMAGES,
            max_image_pixels: DEFAULT_MAX_IMAGE_PIXELS,
        }
    }
}

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
    /// What one request may hold.
    pub limits: RequestLimits,
    /// Most model requests in flight (from arrival to the last byte); beyond that, 429.
    pub max_concurrent_requests: usize,
    /// Threads that prepare requests (tokenize, decode and preprocess images).
    pub prepare_workers: usize,
    /// Bytes of images decoded or waiting as the model's input, at most; beyond that, 429.
    pub image_memory_bytes: u64,
    /// Most responses kept for `previous_response_id` (the least recently used go first; 0 keeps
    /// none).
    pub response_store_size: usize,
    /// Bytes the kept responses may hold in all (each counted with the conversation it continues).
    pub response_store_bytes: usize,
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
            limits: RequestLimits::default(),
            max_concurrent_requests: DEFAULT_MAX_CONCURRENT_REQUESTS,
            prepare_workers: crate::admission::default_prepare_workers(),
            image_memory_bytes: DEFAULT_IMAGE_MEMORY_BYTES,
            response_store_size: DEFAULT_RESPONSE_STORE_SIZE,
            response_store_bytes: DEFAULT_RESPONSE_STORE_BYTES,
        }
    }
}
