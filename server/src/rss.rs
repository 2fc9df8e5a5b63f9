//! Peak anonymous resident memory (`RssAnon` of `/proc/self/status`), sampled on a thread.
//!
//! `VmHWM` counts file-backed pages too, so a memory-mapped checkpoint would count at its full
//! size although the kernel can evict those pages at any time; `RssAnon` is what the process
//! really holds (weights copied out of the file, KV caches, activations).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How often the sampler reads `/proc/self/status`.
const PERIOD: Duration = Duration::from_millis(5);

/// `RssAnon` now, in bytes (Linux; `None` elsewhere).
pub fn rss_anon() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("RssAnon:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Keeps the highest `RssAnon` seen since it started or was last reset; stops when dropped.
pub struct PeakRss {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl PeakRss {
    /// `None` where `RssAnon` cannot be read.
    pub fn start() -> Option<Self> {
        let first = rss_anon()?;
        let peak = Arc::new(AtomicU64::new(first));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (peak.clone(), stop.clone());
        std::thread::Builder::new()
            .name("peak-rss".into())
            .spawn(move || {
                while !s.load(Ordering::Relaxed) {
                    if let Some(now) = rss_anon() {
                        p.fetch_max(now, Ordering::Relaxed);
                    }
                    std::thread::sleep(PERIOD);
                }
            })
            .ok()?;
        Some(Self { peak, stop })
    }

    /// The peak so far, in bytes (with a last reading, so a peak just reached counts).
    pub fn peak(&self) -> u64 {
        let now = rss_anon().unwrap_or(0);
        self.peak.fetch_max(now, Ordering::Relaxed).max(now)
    }

    /// Starts over from the present level.
    pub fn reset(&self) {
        self.peak.store(rss_anon().unwrap_or(0), Ordering::Relaxed);
    }
}

impl Drop for PeakRss {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sees_an_allocation_that_is_gone_again() {
        let Some(p) = PeakRss::start() else { return }; // not Linux
        let before = p.peak();
        let block = vec![1u8; 64 << 20];
        std::thread::sleep(PERIOD * 4);
        assert_eq!(block.iter().map(|&b| b as usize).sum::<usize>(), 64 << 20);
        drop(block);
        assert!(p.peak() >= before + (60 << 20), "peak {} vs {before}", p.peak());
        p.reset();
        assert!(p.peak() < before + (60 << 20));
    }
}
