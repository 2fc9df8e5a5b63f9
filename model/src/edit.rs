//! Image edits: what an edit keeps and what it redraws. The input image is encoded to VQ tokens
//! ([`crate::Janus::encode_pixels`]); its mask (OpenAI's convention: fully transparent pixels
//! mark what to change) is reduced to the token grid, a token editable if any of its pixels is
//! ([`editable_grid`]); generation then runs in raster order with every kept token forced from
//! the input ([`ForcedTokens`], applied in [`crate::T2iBatch`]'s steps) and the editable ones
//! sampled. The decoded result is laid over the input inside the mask only, with a narrow edge
//! feathered inwards ([`composite`]), so every pixel outside the mask is the input's exactly.
//!
//! The model sees only the tokens above and to the left of each token it draws, so a seam can
//! show at the lower and right edges of a masked area.

use candle_core::{Device, Tensor};
use image::imageops::FilterType;
use image::{GrayImage, RgbImage, RgbaImage};

use crate::error::{Error, Result};

/// The feathered edge of an edit is the shorter side of the image over this many pixels wide
/// (3 pixels at 384), at least one.
pub const FEATHER_DIVISOR: u32 = 128;

/// The tokens of an edited image that are kept from the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForcedTokens {
    /// The input's tokens, raster order.
    tokens: Vec<u32>,
    /// Per token: drawn (true) or kept (false).
    editable: Vec<bool>,
}

impl ForcedTokens {
    /// `tokens`: the encoded input; `editable`: the mask on the same grid.
    pub fn new(tokens: Vec<u32>, editable: Vec<bool>) -> Result<Self> {
        if tokens.len() != editable.len() {
            let why = format!("{} tokens and a mask of {} cells", tokens.len(), editable.len());
            return Err(Error::InvalidInput(why));
        }
        Ok(Self { tokens, editable })
    }

    /// The token kept at `step`, or `None` where it is drawn.
    pub fn kept(&self, step: usize) -> Option<u32> {
        match self.editable.get(step) {
            Some(false) => self.tokens.get(step).copied(),
            _ => None,
        }
    }
}

/// Which pixels a mask marks for change: its fully transparent ones (alpha 0), as 255; others 0.
pub fn mask_marks(mask: &RgbaImage) -> GrayImage {
    GrayImage::from_fn(mask.width(), mask.height(), |x, y| {
        image::Luma([if mask.get_pixel(x, y)[3] == 0 { 255 } else { 0 }])
    })
}

/// The mask reduced to a `grid × grid` token grid (raster order): a token is editable if any of
/// the pixels it covers is marked. Pixel (x, y) of a W × H mask lies in cell (x·grid/W, y·grid/H).
pub fn editable_grid(marks: &GrayImage, grid: usize) -> Vec<bool> {
    let (w, h) = (marks.width() as usize, marks.height() as usize);
    let mut cells = vec![false; grid * grid];
    for (x, y, p) in marks.enumerate_pixels() {
        if p[0] > 0 {
            let (cx, cy) = (x as usize * grid / w.max(1), y as usize * grid / h.max(1));
            cells[cy * grid + cx] = true;
        }
    }
    cells
}

/// An RGB image as the VQ encoder's input `[3, side, side]` in [-1, 1] (x / 127.5 − 1): resized
/// as a whole to the square the model draws with Pillow's bicubic filter (a non-square image is
/// stretched, not cropped or padded, so that its pixels and its mask's map onto the token grid
/// alike).
pub fn encoder_pixels(image: &RgbImage, side: usize) -> Result<Tensor> {
    let resized;
    let img = match (image.width() as usize, image.height() as usize) == (side, side) {
        true => image,
        false => {
            resized = crate::input::preprocess::resize_bicubic(image, side, side);
            &resized
        }
    };
    let raw = img.as_raw();
    let mut data = Vec::with_capacity(3 * side * side);
    for c in 0..3 {
        data.extend(raw.iter().skip(c).step_by(3).map(|&v| v as f32 / 127.5 - 1.0));
    }
    Ok(Tensor::from_vec(data, (3, side, side), &Device::Cpu)?)
}

/// The generated image laid over `original` where `marks` marks it, at the original's size:
/// `generated` (any size) resized to it, and blended in with a weight that is 0 outside the
/// marks (those pixels are the original's exactly) and rises to 1 within `feather` pixels of
/// the marks' edge.
pub fn composite(original: &RgbImage, generated: &RgbImage, marks: &GrayImage, feather: u32) -> RgbImage {
    let (w, h) = original.dimensions();
    let resized;
    let generated = match generated.dimensions() == (w, h) {
        true => generated,
        false => {
            resized = image::imageops::resize(generated, w, h, FilterType::Lanczos3);
            &resized
        }
    };
    let weight = inward_feather(marks, feather);
    RgbImage::from_fn(w, h, |x, y| {
        let a = weight[(y * w + x) as usize];
        let (o, g) = (original.get_pixel(x, y), generated.get_pixel(x, y));
        if a <= 0.0 {
            return *o;
        }
        image::Rgb(std::array::from_fn(|c| (o[c] as f32 * (1.0 - a) + g[c] as f32 * a).round().clamp(0.0, 255.0) as u8))
    })
}

/// Per pixel, 0 outside the marks, and inside them 2·(box mean of the marks over a window of
/// radius `r`) − 1, clamped to [0, 1]: 0 at the edge, 1 from `r` pixels in.
fn inward_feather(marks: &GrayImage, r: u32) -> Vec<f32> {
    let (w, h) = (marks.width() as usize, marks.height() as usize);
    let m: Vec<f32> = marks.as_raw().iter().map(|&v| if v > 0 { 1.0 } else { 0.0 }).collect();
    if r == 0 {
        return m;
    }
    let r = r as usize;
    // Separable box mean with running sums; the window is clipped at the borders (what lies
    // beyond the image counts as marked, so a mask reaching the border is not faded there).
    let blur = |src: &[f32], len: usize, stride: usize, lines: usize, step: usize| {
        let mut out = vec![0f32; src.len()];
        for line in 0..lines {
            let at = |i: usize| src[line * step + i * stride];
            let mut prefix = vec![0f32; len + 1];
            for i in 0..len {
                prefix[i + 1] = prefix[i] + at(i);
            }
            for i in 0..len {
                let (lo, hi) = (i.saturating_sub(r), (i + r).min(len - 1));
                let outside = (2 * r + 1 - (hi - lo + 1)) as f32;
                out[line * step + i * stride] = (prefix[hi + 1] - prefix[lo] + outside) / (2 * r + 1) as f32;
            }
        }
        out
    };
    let rows = blur(&m, w, 1, h, w);
    let both = blur(&rows, h, w, w, 1);
    m.iter()
        .zip(both)
        .map(|(&inside, mean)| if inside > 0.0 { (2.0 * mean - 1.0).clamp(0.0, 1.0) } else { 0.0 })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marks(w: u32, h: u32, marked: impl Fn(u32, u32) -> bool) -> GrayImage {
        GrayImage::from_fn(w, h, |x, y| image::Luma([if marked(x, y) { 255 } else { 0 }]))
    }

    #[test]
    fn a_token_is_editable_if_any_of_its_pixels_is_marked() {
        // 48 × 48 pixels on a 4 × 4 grid: 12-pixel cells; one marked pixel at (13, 25) → cell (1, 2).
        let g = editable_grid(&marks(48, 48, |x, y| (x, y) == (13, 25)), 4);
        assert_eq!(g.iter().filter(|&&e| e).count(), 1);
        assert!(g[2 * 4 + 1]);
        // A non-square mask maps each axis on its own.
        let g = editable_grid(&marks(40, 8, |x, _| x >= 30), 4);
        assert_eq!(g.iter().filter(|&&e| e).count(), 4, "the last column");
        assert!((0..4).all(|row| g[row * 4 + 3]));
        let mask = RgbaImage::from_fn(4, 4, |x, _| image::Rgba([9, 9, 9, if x == 0 { 0 } else { 200 }]));
        assert_eq!(mask_marks(&mask).as_raw().iter().filter(|&&v| v > 0).count(), 4, "only alpha 0 marks");
    }

    #[test]
    fn forced_tokens_keep_what_is_not_editable() {
        let f = ForcedTokens::new(vec![7, 8, 9], vec![false, true, false]).unwrap();
        assert_eq!((0..4).map(|i| f.kept(i)).collect::<Vec<_>>(), vec![Some(7), None, Some(9), None]);
        assert!(ForcedTokens::new(vec![1], vec![]).is_err());
    }

    #[test]
    fn composite_keeps_every_pixel_outside_the_marks() {
        let original = RgbImage::from_fn(30, 20, |x, y| image::Rgb([x as u8 * 8, y as u8 * 12, 50]));
        let generated = RgbImage::from_pixel(12, 12, image::Rgb([255, 0, 255]));
        let m = marks(30, 20, |x, y| (5..25).contains(&x) && (4..16).contains(&y));
        let out = composite(&original, &generated, &m, 3);
        for (x, y, p) in out.enumerate_pixels() {
            if m.get_pixel(x, y)[0] == 0 {
                assert_eq!(p, original.get_pixel(x, y), "({x}, {y}) outside the mask");
            }
        }
        assert_eq!(out.get_pixel(15, 10), &image::Rgb([255, 0, 255]), "deep inside: the generated image");
        let edge = out.get_pixel(5, 10);
        assert_ne!(edge, &image::Rgb([255, 0, 255]), "the edge is blended");
        // Nothing marked: the original; all marked: the generated image (resized).
        assert_eq!(composite(&original, &generated, &marks(30, 20, |_, _| false), 3), original);
        let all = composite(&original, &generated, &marks(30, 20, |_, _| true), 3);
        assert!(all.pixels().all(|p| p == &image::Rgb([255, 0, 255])));
    }

    #[test]
    fn encoder_pixels_are_the_square_in_minus_one_to_one() {
        let img = RgbImage::from_fn(8, 4, |x, _| image::Rgb([if x < 4 { 0 } else { 255 }, 128, 255]));
        let t = encoder_pixels(&img, 8).unwrap();
        assert_eq!(t.dims(), &[3, 8, 8]);
        let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
        assert!(v.iter().all(|x| (-1.0..=1.0).contains(x)));
        assert_eq!(v[64 + 8 * 3 + 2], 128.0 / 127.5 - 1.0, "channel 1 is 128 everywhere");
    }
}
