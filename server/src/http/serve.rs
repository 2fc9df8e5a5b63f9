//! `janus serve`: a tokio runtime (for this subcommand only), the engine, the listener, and
//! graceful shutdown: on SIGTERM or Ctrl-C stop accepting, tell the engine to drain, let
//! in-flight requests finish within `--shutdown-grace-secs`, and exit 0. A model that fails to
//! load (missing shard, truncated file, wrong shape, missing tensor...) ends the process at once
//! with one error line naming the file and tensor, and a non-zero status: a server that can never
//! answer should not pass for a live one.

use std::future::IntoFuture;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::builder::TypedValueParser as _;
use clap::Args;
use janus::limits::{
    DEFAULT_MAX_IMAGE_PIXELS, DEFAULT_PREFIX_CACHE_POSITIONS, MAX_CHAT_IMAGES, MAX_IMAGES_PER_REQUEST, MAX_MESSAGES,
    MAX_MESSAGE_CHARS, MAX_REQUEST_CHARS,
};
use tokio::sync::watch;

use super::config::{
    DEFAULT_BATCH_WAIT_MS, DEFAULT_FILE_TTL_SECS, DEFAULT_HOST, DEFAULT_IMAGE_MEMORY_BYTES, DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_CONCURRENT_REQUESTS, DEFAULT_MAX_FILES, DEFAULT_MAX_STREAMS, DEFAULT_PORT, DEFAULT_QUEUE_CAPACITY,
    DEFAULT_RESPONSE_STORE_BYTES, DEFAULT_RESPONSE_STORE_SIZE, DEFAULT_SHUTDOWN_GRACE_SECS,
};
use super::{app, HttpConfig, RequestLimits, State};
use crate::engine::{Engine, EngineClient, EngineOptions, EngineStatus, ModelEngine};
use crate::engine_args::EngineArgs;

#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: EngineArgs,

    /// Address to listen on (`0.0.0.0` for all interfaces).
    #[arg(long, env = "JANUS_HOST", default_value = DEFAULT_HOST)]
    pub host: String,

    /// Port to listen on.
    #[arg(long, env = "JANUS_PORT", default_value_t = DEFAULT_PORT)]
    pub port: u16,

    /// When set, `/v1/*` requests need `Authorization: Bearer <key>` (compared in constant time).
    #[arg(long, env = "JANUS_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,

    /// Largest request body in bytes (413 above); the default fits a base64 image of ~12 MB.
    #[arg(long, env = "JANUS_MAX_BODY_BYTES", default_value_t = DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,

    /// Most images generated together in one CFG batch (also caps `n`).
    #[arg(long, env = "JANUS_MAX_BATCH_IMAGES", default_value_t = MAX_IMAGES_PER_REQUEST,
          value_parser = clap::value_parser!(u32).range(1..=256).map(|v| v as usize))]
    pub max_batch_images: usize,

    /// Most requests waiting to start; beyond that, 429 with Retry-After.
    #[arg(long, env = "JANUS_QUEUE_CAPACITY", default_value_t = DEFAULT_QUEUE_CAPACITY,
          value_parser = clap::value_parser!(u32).range(1..).map(|v| v as usize))]
    pub queue_capacity: usize,

    /// Most streamed (`stream: true`) responses open at once; beyond that, 429 with Retry-After.
    #[arg(long, env = "JANUS_MAX_STREAMS", default_value_t = DEFAULT_MAX_STREAMS,
          value_parser = clap::value_parser!(u32).range(1..).map(|v| v as usize))]
    pub max_streams: usize,

    /// Most model requests in flight at once, streamed or not, from their arrival to their last
    /// byte; beyond that, 429 with Retry-After.
    #[arg(long, env = "JANUS_MAX_CONCURRENT_REQUESTS", default_value_t = DEFAULT_MAX_CONCURRENT_REQUESTS,
          value_parser = clap::value_parser!(u32).range(1..).map(|v| v as usize))]
    pub max_concurrent_requests: usize,

    /// Threads that prepare requests before the queue (templating, tokenization, image decoding
    /// and preprocessing); default: one per core, at most 8.
    #[arg(long, env = "JANUS_PREPARE_WORKERS",
          value_parser = clap::value_parser!(u32).range(1..=256).map(|v| v as usize))]
    pub prepare_workers: Option<usize>,

    /// Bytes of request images in memory at once: decoded at full size, or waiting as the model's
    /// input; beyond that, 429 with Retry-After (an image that could never fit: 400).
    #[arg(long, env = "JANUS_IMAGE_MEMORY_BYTES", default_value_t = DEFAULT_IMAGE_MEMORY_BYTES,
          value_parser = clap::value_parser!(u64).range(1 << 20..))]
    pub image_memory_bytes: u64,

    /// Most messages in one chat request.
    #[arg(long, env = "JANUS_MAX_MESSAGES", default_value_t = MAX_MESSAGES,
          value_parser = clap::value_parser!(u32).range(1..).map(|v| v as usize))]
    pub max_messages: usize,

    /// Most characters of text in one message (or one describe question).
    #[arg(long, env = "JANUS_MAX_MESSAGE_CHARS", default_value_t = MAX_MESSAGE_CHARS,
          value_parser = clap::value_parser!(u32).range(1..).map(|v| v as usize))]
    pub max_message_chars: usize,

    /// Most characters of text in one chat request (the system prompt and every message).
    #[arg(long, env = "JANUS_MAX_REQUEST_CHARS", default_value_t = MAX_REQUEST_CHARS,
          value_parser = clap::value_parser!(u32).range(1..).map(|v| v as usize))]
    pub max_request_chars: usize,

    /// Most images in one chat request.
    #[arg(long, env = "JANUS_MAX_IMAGES_PER_REQUEST", default_value_t = MAX_CHAT_IMAGES,
          value_parser = clap::value_parser!(u32).range(1..=64).map(|v| v as usize))]
    pub max_images_per_request: usize,

    /// Most pixels of one image in a request, read from its header before it is decoded (no side
    /// may exceed 16384).
    #[arg(long, env = "JANUS_MAX_IMAGE_PIXELS", default_value_t = DEFAULT_MAX_IMAGE_PIXELS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_image_pixels: u64,

    /// When idle, how long to wait for more image requests to batch with the first (ms).
    #[arg(long, env = "JANUS_BATCH_WAIT_MS", default_value_t = DEFAULT_BATCH_WAIT_MS)]
    pub batch_wait_ms: u64,

    /// Most text answers (chat, describe) decoded together in one batched step (default: as many
    /// as half the memory free after loading holds beside a full image batch, at most 16).
    #[arg(long, env = "JANUS_MAX_TEXT_SESSIONS",
          value_parser = clap::value_parser!(u32).range(1..=256).map(|v| v as usize))]
    pub max_text_sessions: Option<usize>,

    /// Text answers take their tokens in the language-model pass of a running image batch (one
    /// pass over the weights for both); `false`: a pass of their own, in turn with the images.
    #[arg(long, env = "JANUS_SHARED_STEPS", default_value_t = true, action = clap::ArgAction::Set)]
    pub shared_steps: bool,

    /// Prompt positions whose keys and values are kept (system prompts, and conversations up to
    /// their last question, images included), so that later answers that start the same way do
    /// not compute them again (the same numbers either way); 0 turns prefix caching off.
    #[arg(long, env = "JANUS_PREFIX_CACHE_POSITIONS", default_value_t = DEFAULT_PREFIX_CACHE_POSITIONS)]
    pub prefix_cache_positions: usize,

    /// Fetch http(s) image URLs in chat messages (public addresses only, no redirects, 10 s,
    /// at most --max-body-bytes); off by default, when only data: URLs are accepted.
    #[arg(long, env = "JANUS_ALLOW_REMOTE_IMAGES")]
    pub allow_remote_images: bool,

    /// How long `response_format=url` images stay downloadable, in seconds.
    #[arg(long, env = "JANUS_FILE_TTL_SECS", default_value_t = DEFAULT_FILE_TTL_SECS)]
    pub file_ttl_secs: u64,

    /// Most `response_format=url` images kept in memory (the oldest go first).
    #[arg(long, env = "JANUS_MAX_FILES", default_value_t = DEFAULT_MAX_FILES,
          value_parser = clap::value_parser!(u32).range(1..).map(|v| v as usize))]
    pub max_files: usize,

    /// Most responses kept in memory for `previous_response_id` (`POST /v1/responses` with
    /// `store` not false); beyond that the least recently used go first; 0 keeps none.
    #[arg(long, env = "JANUS_RESPONSE_STORE_SIZE", default_value_t = DEFAULT_RESPONSE_STORE_SIZE)]
    pub response_store_size: usize,

    /// Bytes the kept responses may hold in all (their messages, image data URLs included, each
    /// counted with the conversation it continues); beyond that the least recently used go
    /// first, and a response larger than all of it is not kept.
    #[arg(long, env = "JANUS_RESPONSE_STORE_BYTES", default_value_t = DEFAULT_RESPONSE_STORE_BYTES)]
    pub response_store_bytes: usize,

    /// Base of the image URLs handed out, e.g. `https://janus.example.com` behind a proxy
    /// (default: `http://` + the request's Host header).
    #[arg(long, env = "JANUS_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// On SIGTERM/Ctrl-C, how long in-flight requests may take to finish, in seconds.
    #[arg(long, env = "JANUS_SHUTDOWN_GRACE_SECS", default_value_t = DEFAULT_SHUTDOWN_GRACE_SECS)]
    pub shutdown_grace_secs: u64,

    /// Allow browsers from these origins (comma-separated, `*` for any); CORS is off by default.
    #[arg(long = "cors-origin", env = "JANUS_CORS_ORIGIN", value_delimiter = ',')]
    pub cors_origin: Vec<String>,
}

pub fn run(args: ServeArgs) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("janus-http")
        .build()
        .context("starting the tokio runtime")?;
    rt.block_on(serve(args))
}

impl ServeArgs {
    pub fn http_config(&self) -> HttpConfig {
        HttpConfig {
            api_key: self.api_key.clone().filter(|k| !k.is_empty()),
            max_body_bytes: self.max_body_bytes,
            max_batch_images: self.max_batch_images,
            allow_remote_images: self.allow_remote_images,
            file_ttl: Duration::from_secs(self.file_ttl_secs),
            max_files: self.max_files,
            public_url: self.public_url.clone(),
            cors_origins: self.cors_origin.clone(),
            max_streams: self.max_streams,
            limits: RequestLimits {
                max_messages: self.max_messages,
                max_message_chars: self.max_message_chars,
                max_request_chars: self.max_request_chars,
                max_images: self.max_images_per_request,
                max_image_pixels: self.max_image_pixels,
            },
            max_concurrent_requests: self.max_concurrent_requests,
            prepare_workers: self.prepare_workers.unwrap_or_else(crate::admission::default_prepare_workers),
            image_memory_bytes: self.image_memory_bytes,
            response_store_size: self.response_store_size,
            response_store_bytes: self.response_store_bytes,
        }
    }

    pub fn engine_options(&self) -> EngineOptions {
        EngineOptions {
            model: self.model.model.clone(),
            device: self.model.device.clone(),
            dtype: self.model.dtype.clone(),
            quant: self.model.quant,
            max_batch_images: self.max_batch_images,
            queue_capacity: self.queue_capacity,
            decode_chunk: self.model.decode_chunk,
            batch_wait: Duration::from_millis(self.batch_wait_ms),
            max_text_sessions: self.max_text_sessions,
            shared_steps: self.shared_steps,
            prefix_cache_positions: self.prefix_cache_positions,
        }
    }
}

async fn serve(args: ServeArgs) -> Result<()> {
    let signal = shutdown_signal()?;
    super::observe::prometheus();
    let addr = format!("{}:{}", args.host, args.port);
    // Bind first: a taken port fails at once, before the model loads.
    let listener = tokio::net::TcpListener::bind(&addr).await.with_context(|| format!("binding {addr}"))?;
    let engine: Arc<dyn Engine> = ModelEngine::start(args.engine_options());
    let state = State::new(engine, args.http_config());
    tracing::info!(
        "listening on http://{} (model {}, loading in the background; /ready says when)",
        listener.local_addr().map_or(addr.clone(), |a| a.to_string()),
        args.model.model
    );
    if state.cfg.api_key.is_none() {
        tracing::info!("no --api-key: /v1/* is open to anyone who can reach this address");
    }

    let grace = Duration::from_secs(args.shutdown_grace_secs);
    let (signalled_tx, mut signalled) = watch::channel::<Option<Instant>>(None);
    let on_signal = {
        let state = state.clone();
        async move {
            signal.await;
            tracing::info!(grace_secs = grace.as_secs(), "shutting down: no new connections; finishing in-flight work");
            state.draining.store(true, Ordering::SeqCst);
            state.engine.shutdown();
            let _ = signalled_tx.send(Some(Instant::now()));
        }
    };
    let load_failed = load_failure(state.engine.clone());
    let server = axum::serve(listener, app(state.clone())).with_graceful_shutdown(on_signal);
    let deadline = async {
        let at = *signalled.wait_for(Option::is_some).await.expect("the sender lives until the signal");
        tokio::time::sleep_until((at.expect("checked") + grace).into()).await;
    };
    tokio::select! {
        r = server.into_future() => r.context("serving HTTP")?,
        _ = deadline => tracing::warn!("grace period over; closing the connections still open"),
        reason = load_failed => anyhow::bail!("the model failed to load: {reason}"),
    }
    // Connections are closed; let the engine finish (or cancel) what it still holds.
    let until = signalled.borrow().map_or_else(Instant::now, |at| at + grace);
    if !drain(&state.engine, until).await {
        tracing::warn!("the engine is still busy at the end of the grace period; exiting anyway");
    }
    tracing::info!("stopped");
    Ok(())
}

/// Waits until the engine has finished what it holds, or `until`; returns whether it did.
pub async fn drain(engine: &EngineClient, until: Instant) -> bool {
    while !engine.is_idle() {
        if Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

/// Resolves with the reason if the engine's model fails to load; never resolves once it is ready.
async fn load_failure(engine: EngineClient) -> String {
    loop {
        match engine.status() {
            EngineStatus::Loading => tokio::time::sleep(Duration::from_millis(20)).await,
            EngineStatus::Ready => return std::future::pending().await,
            EngineStatus::Failed(reason) => return reason,
        }
    }
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C). The handlers are installed when this is called, not
/// when the future is first polled, so a signal that comes early is not lost.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()> + Send + 'static> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}
