//! The contact sheet's images: which prompts it shows, and their thumbnails as `data:` URIs.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{Context, Result};
use base64::Engine as _;

use super::load::Run;

/// `k` prompts spread evenly over those any run has images for.
pub fn sample_prompts(runs: &[Run], k: usize) -> Vec<usize> {
    let all: Vec<usize> =
        runs.iter().flat_map(|r| r.images.keys().copied()).collect::<BTreeSet<_>>().into_iter().collect();
    if all.len() <= k {
        return all;
    }
    (0..k).map(|i| all[i * all.len() / k]).collect()
}

/// A `data:` URI of a thumbnail of `path` (longest side at most `max`): small images as PNG,
/// larger ones downscaled to JPEG. Returns the URI and whether the image was small (drawn
/// pixelated when enlarged).
pub fn thumbnail(path: &Path, max: u32) -> Result<(String, bool)> {
    let img = image::open(path).with_context(|| format!("reading {}", path.display()))?;
    let small = img.width().max(img.height()) <= max;
    let mut bytes = Vec::new();
    let mime = if small {
        img.to_rgb8().write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png)?;
        "image/png"
    } else {
        let t = img.thumbnail(max, max).to_rgb8();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 82).encode_image(&t)?;
        "image/jpeg"
    };
    Ok((format!("data:{mime};base64,{}", base64::engine::general_purpose::STANDARD.encode(&bytes)), small))
}
