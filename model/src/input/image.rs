//! Pixels in and out: decoder output → RGB u8 images → PNG bytes.
//!
//! Reference: deepseek-ai/Janus `generation_inference.py` post-processing:
//! `clip((x + 1) / 2 * 255, 0, 255)` in f32, then stored into uint8 (truncation).

use candle_core::{DType, Tensor};
use image::{ImageFormat, RgbImage};

use crate::error::{Error, Result};

/// `[N, 3, H, W]` decoder output in [-1, 1] → N RGB images, exactly as the reference rounds.
pub fn to_rgb(pixels: &Tensor) -> Result<Vec<RgbImage>> {
    let (n, c, h, w) = pixels.dims4()?;
    if c != 3 {
        return Err(Error::InvalidInput(format!("expected 3 channels, got {c}")));
    }
    let data = pixels.to_dtype(DType::F32)?.permute((0, 2, 3, 1))?.flatten_all()?.to_vec1::<f32>()?;
    let per = h * w * 3;
    Ok((0..n)
        .map(|i| {
            let buf: Vec<u8> = data[i * per..(i + 1) * per]
                .iter()
                .map(|&x| ((x + 1.0) / 2.0 * 255.0).clamp(0.0, 255.0) as u8)
                .collect();
            RgbImage::from_raw(w as u32, h as u32, buf).expect("buffer has h*w*3 bytes")
        })
        .collect())
}

/// PNG bytes of an RGB image (the `image` crate's fast default compression).
pub fn png_bytes(img: &RgbImage) -> Result<Vec<u8>> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, ImageFormat::Png).map_err(|e| Error::ImageEncode(e.to_string()))?;
    Ok(out.into_inner())
}
