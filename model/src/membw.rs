//! The machine's memory read bandwidth, probed in the bench's own run (issue 28): the floor of a
//! decode step is the bytes of weights it reads over this. Shared machines drift (31 to 52 GB/s
//! within an hour here), so the bench probes just before loading and just after measuring, and
//! reports the step's ratio to the floor: a time alone says little.

use std::time::Instant;

/// Bytes the probe reads: well beyond any last-level cache.
const PROBE_BYTES: usize = 512 << 20;

/// Read bandwidth in GB/s: the best of five sums of a 512 MiB buffer, one slice per thread (as
/// many threads as the machine runs at once), each thread reading four streams at once so that
/// enough cache misses are in flight. The buffer is written first, so that every page is real,
/// and freed after. (A plain one-stream sum read about 15% less here.)
pub fn probe() -> f64 {
    let words = PROBE_BYTES / 4;
    let buf: Vec<u32> = (0..words as u32).collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = words.div_ceil(threads);
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        let total = std::thread::scope(|s| {
            let parts: Vec<_> = buf.chunks(chunk).map(|c| s.spawn(move || sum(c))).collect();
            parts.into_iter().map(|h| h.join().unwrap_or(0)).fold(0u32, u32::wrapping_add)
        });
        std::hint::black_box(total);
        best = best.min(t.elapsed().as_secs_f64());
    }
    PROBE_BYTES as f64 / best / 1e9
}

/// A wrapping sum of `c` read as four streams (its quarters), 16 lanes each (vectorised).
fn sum(c: &[u32]) -> u32 {
    let q = c.len() / 64 * 16;
    let (s0, rest) = c.split_at(q);
    let (s1, rest) = rest.split_at(q);
    let (s2, rest) = rest.split_at(q);
    let (s3, tail) = rest.split_at(q);
    let mut acc = [[0u32; 16]; 4];
    let streams = s0.chunks_exact(16).zip(s1.chunks_exact(16)).zip(s2.chunks_exact(16)).zip(s3.chunks_exact(16));
    for (((a, b), c), d) in streams {
        for i in 0..16 {
            acc[0][i] = acc[0][i].wrapping_add(a[i]);
            acc[1][i] = acc[1][i].wrapping_add(b[i]);
            acc[2][i] = acc[2][i].wrapping_add(c[i]);
            acc[3][i] = acc[3][i].wrapping_add(d[i]);
        }
    }
    tail.iter().chain(acc.iter().flatten()).fold(0u32, |a, &x| a.wrapping_add(x))
}

/// The floor of a step that reads `bytes` at `gbps` GB/s, in ms.
pub fn floor_ms(bytes: usize, gbps: f64) -> f64 {
    bytes as f64 / (gbps * 1e9) * 1e3
}
