//! The stage between a request's arrival and the engine's queue (after TGI's validation
//! workers), so that one request cannot hurt the others:
//! - every model request holds a slot from its arrival to its response's last byte
//!   (`--max-concurrent-requests`; 429 beyond), streamed or not;
//! - its CPU work (templating, tokenization, image decoding and preprocessing) runs on a bounded
//!   pool of blocking workers (`--prepare-workers`), neither on the async runtime nor on the
//!   engine thread, which receives ready ids and pixels;
//! - the bytes of images decoded or waiting as the model's input are bounded by a budget
//!   (`--image-memory-bytes`, [`ImageMemory`]; 429 when full), which a request's prepared images
//!   hold until the engine has read them.
//!
//! | file | what |
//! | --- | --- |
//! | `mod.rs` | [`Admission`]: request slots and the worker pool; [`AdmissionError`] |
//! | `memory.rs` | [`ImageMemory`], the byte budget, and its [`Reservation`]s |

mod memory;

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub use memory::{ImageMemory, Reservation};

/// Why a request was not admitted (the HTTP layer maps each to its status).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AdmissionError {
    /// `--max-concurrent-requests` requests are in flight: 429.
    #[error("{limit} requests are in flight, this server's limit (--max-concurrent-requests); retry later")]
    TooManyRequests { limit: usize },
    /// The image memory budget has no room now: 429.
    #[error(
        "the images in flight fill this server's image memory ({capacity} bytes, --image-memory-bytes); \
         {needed} more bytes are needed; retry later"
    )]
    MemoryFull { needed: u64, capacity: u64 },
    /// One image needs more than the whole budget: it could never be admitted (400).
    #[error("decoding this image needs {needed} bytes, more than this server's image memory ({capacity} bytes, --image-memory-bytes)")]
    OverBudget { needed: u64, capacity: u64 },
    /// A preparation worker failed (a bug: it panicked).
    #[error("a preparation worker failed: {0}")]
    WorkerFailed(String),
}

/// The admission stage's state, shared by the handlers.
pub struct Admission {
    slots: Arc<Semaphore>,
    max_requests: usize,
    workers: Arc<Semaphore>,
    memory: ImageMemory,
}

/// A request's place among those in flight; dropping it frees the place.
pub type RequestSlot = OwnedSemaphorePermit;

impl Admission {
    /// At most `max_requests` requests in flight, `workers` preparing at once, and
    /// `image_memory` bytes of images.
    pub fn new(max_requests: usize, workers: usize, image_memory: u64) -> Self {
        let max_requests = max_requests.max(1);
        Self {
            slots: Arc::new(Semaphore::new(max_requests)),
            max_requests,
            workers: Arc::new(Semaphore::new(workers.max(1))),
            memory: ImageMemory::new(image_memory),
        }
    }

    /// A slot for a new request, or 429 when `--max-concurrent-requests` are in flight.
    pub fn admit(&self) -> Result<RequestSlot, AdmissionError> {
        self.slots.clone().try_acquire_owned().map_err(|_| AdmissionError::TooManyRequests { limit: self.max_requests })
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.max_requests - self.slots.available_permits()
    }

    pub fn memory(&self) -> &ImageMemory {
        &self.memory
    }

    /// Runs `work` on a preparation worker once one is free (waiting holds no more than the
    /// request already holds: its body).
    pub async fn prepare<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, AdmissionError> {
        let worker =
            self.workers.clone().acquire_owned().await.map_err(|e| AdmissionError::WorkerFailed(e.to_string()))?;
        tokio::task::spawn_blocking(move || {
            let _worker = worker;
            work()
        })
        .await
        .map_err(|e| AdmissionError::WorkerFailed(e.to_string()))
    }
}

/// `--prepare-workers` when not given: one per core, at most 8.
pub fn default_prepare_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn slots_are_bounded_and_freed() {
        let a = Admission::new(2, 1, 1 << 20);
        let (x, _y) = (a.admit().unwrap(), a.admit().unwrap());
        assert_eq!(a.admit().unwrap_err(), AdmissionError::TooManyRequests { limit: 2 });
        assert_eq!(a.in_flight(), 2);
        drop(x);
        assert!(a.admit().is_ok());
    }

    /// Work runs on one worker at a time when there is one.
    #[tokio::test]
    async fn preparation_runs_on_the_bounded_pool() {
        let a = Arc::new(Admission::new(8, 1, 1 << 20));
        let busy = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let runs = (0..4).map(|_| {
            let (a, busy, most) = (a.clone(), busy.clone(), most.clone());
            tokio::spawn(async move {
                a.prepare(move || {
                    let now = busy.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                    most.fetch_max(now, std::sync::atomic::Ordering::SeqCst);
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    busy.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                })
                .await
                .unwrap()
            })
        });
        for r in runs.collect::<Vec<_>>() {
            r.await.unwrap();
        }
        assert_eq!(most.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}
