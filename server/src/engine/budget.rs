//! How many text answers the engine decodes together by default: as many as the KV-cache budget
//! holds beside a full image cohort, at most [`MAX_TEXT_SESSIONS`]. The budget is half the memory
//! free once the model is loaded (device memory on CUDA, `MemAvailable` on the CPU); a cohort of
//! `--max-batch-images` images and a full prefix cache (`--prefix-cache-positions`) are counted
//! first, so text, images and cached prompt prefixes share one budget.

use janus::limits::{DEFAULT_MAX_NEW_TOKENS, MAX_TEXT_SESSIONS};
use janus::Janus;

/// Positions a typical request keeps in its cache: an image prompt (576 image positions and
/// some text) and, for a text answer, a default-length answer.
fn prompt_positions(model: &Janus) -> usize {
    model.num_image_tokens() + 64
}

/// The sizes the default is computed from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Budget {
    /// Bytes the KV caches may take.
    pub bytes: u64,
    /// Bytes of one row's cache per position.
    pub per_position: u64,
    /// Positions of one image cohort row, and rows of a full cohort.
    pub cohort_positions: u64,
    pub cohort_rows: u64,
    /// Positions of one text answer.
    pub text_positions: u64,
    /// Positions the prefix cache may hold.
    pub prefix_positions: u64,
}

impl Budget {
    pub fn of(model: &Janus, max_batch_images: usize) -> Option<Self> {
        let free = janus::device::memory_available(model.device())?;
        let prompt = prompt_positions(model) as u64;
        Some(Self {
            bytes: free / 2,
            per_position: model.cfg.llm.kv_bytes_per_position(model.dtype()) as u64,
            cohort_positions: prompt,
            cohort_rows: 2 * max_batch_images as u64,
            text_positions: prompt + DEFAULT_MAX_NEW_TOKENS as u64,
            prefix_positions: model.prefix_cache().capacity() as u64,
        })
    }

    /// Text answers that fit beside a full cohort: at least 1, at most [`MAX_TEXT_SESSIONS`].
    pub fn text_sessions(&self) -> usize {
        let first = (self.cohort_rows * self.cohort_positions + self.prefix_positions) * self.per_position;
        let per_answer = (self.text_positions * self.per_position).max(1);
        let fit = self.bytes.saturating_sub(first) / per_answer;
        (fit as usize).clamp(1, MAX_TEXT_SESSIONS)
    }
}

/// `--max-text-sessions`, or the memory-aware default (the cap when memory cannot be read).
pub(super) fn max_text_sessions(model: &Janus, given: Option<usize>, max_batch_images: usize) -> usize {
    if let Some(n) = given {
        return n.max(1);
    }
    match Budget::of(model, max_batch_images) {
        Some(b) => {
            let n = b.text_sessions();
            tracing::info!(
                text_sessions = n,
                budget_gib = b.bytes as f64 / (1u64 << 30) as f64,
                "text answers decoded together (memory-aware default; --max-text-sessions sets it)"
            );
            n
        }
        None => MAX_TEXT_SESSIONS,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    /// Janus-Pro-1B in f32 on the CPU: 393,216 bytes per position (24 layers, 16 heads of 128).
    fn one_b(free: u64, images: u64) -> Budget {
        Budget {
            bytes: free / 2,
            per_position: 2 * 24 * 16 * 128 * 4,
            cohort_positions: 640,
            cohort_rows: 2 * images,
            text_positions: 640 + 512,
            prefix_positions: 512,
        }
    }

    #[test]
    fn the_default_follows_memory_and_counts_a_full_cohort_first() {
        // 64 GiB free: a 16-image cohort (7.5 GiB) and 16 answers of 0.42 GiB fit in 32 GiB.
        assert_eq!(one_b(64 * GIB, 16).text_sessions(), MAX_TEXT_SESSIONS);
        // 16 GiB free: 8 GiB budget, 7.5 GiB for the cohort, room for one answer.
        assert_eq!(one_b(16 * GIB, 16).text_sessions(), 1);
        // The same memory with a 4-image cohort leaves room for more answers.
        let n = one_b(16 * GIB, 4).text_sessions();
        assert!(n > 5 && n < MAX_TEXT_SESSIONS, "{n}");
        // Never 0: one answer always runs.
        assert_eq!(one_b(GIB, 16).text_sessions(), 1);
    }
}
