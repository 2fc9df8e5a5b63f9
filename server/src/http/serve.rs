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
use tokio::sync::watch;

use super::{app, HttpConfig, State};
use crate::cli::ServeArgs;
use crate::engine::runner::{EngineOptions, ModelEngine};
use crate::engine::{Engine, EngineStatus};

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
            decode_chunk: self.decode_chunk,
            batch_wait: Duration::from_millis(self.batch_wait_ms),
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
    let state = State::new(engine.clone(), args.http_config());
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
    let load_failed = load_failure(engine.clone());
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
    while !engine.is_idle() && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if !engine.is_idle() {
        tracing::warn!("the engine is still busy at the end of the grace period; exiting anyway");
    }
    tracing::info!("stopped");
    Ok(())
}

/// Resolves with the reason if the engine's model fails to load; never resolves once it is ready.
async fn load_failure(engine: Arc<dyn Engine>) -> String {
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
