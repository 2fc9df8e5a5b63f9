//! Image preprocessing for understanding: decode → RGB → long-side resize → centred pad →
//! rescale and normalise.
//!
//! Reference: deepseek-ai/Janus `janus/models/image_processing_vlm.py` (`VLMImageProcessor`):
//! PIL `convert("RGB")` (alpha is dropped), new size `max(int(side / long_side * S), min_size)`
//! with bicubic antialiased resampling, padding to a square centred on the background colour,
//! then `x / 255` and `(x - mean) / std`. The released `preprocessor_config.json` sets
//! mean = std = 0.5 and the background to (127, 127, 127). Note: transformers'
//! `JanusImageProcessor` rounds the new size where the original truncates; the two agree except
//! when the scaled side has a fractional part ≥ 0.5, and we follow the original.

use std::io::Cursor;
use std::path::Path;

use candle_core::{Device, Tensor};
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, RgbImage};
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::limits::DEFAULT_MAX_IMAGE_PIXELS;

/// Largest accepted side, in pixels (whatever the pixel limit).
pub const MAX_IMAGE_SIDE: u32 = 16384;

/// What the model's `preprocessor_config.json` says (either format), with Janus-Pro defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct PreprocessConfig {
    pub image_size: usize,
    pub min_size: usize,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub background: [u8; 3],
    pub normalize: bool,
}

#[derive(Deserialize)]
struct PreprocessJson {
    image_size: Option<usize>,
    size: Option<SizeJson>,
    min_size: Option<usize>,
    image_mean: Option<[f32; 3]>,
    image_std: Option<[f32; 3]>,
    background_color: Option<[u8; 3]>,
    do_normalize: Option<bool>,
}

#[derive(Deserialize)]
struct SizeJson {
    height: Option<usize>,
    width: Option<usize>,
}

impl PreprocessConfig {
    /// Janus-Pro's released values for a model whose vision input is `image_size`.
    pub fn janus_default(image_size: usize) -> Self {
        Self { image_size, min_size: 14, mean: [0.5; 3], std: [0.5; 3], background: [127; 3], normalize: true }
    }

    /// Reads `preprocessor_config.json` when there is one; the image size must agree with the
    /// vision encoder's.
    pub fn load(path: Option<&Path>, image_size: usize) -> Result<Self> {
        let mut cfg = Self::janus_default(image_size);
        let Some(path) = path else { return Ok(cfg) };
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let j: PreprocessJson =
            serde_json::from_str(&text).map_err(|e| Error::Config { path: path.to_path_buf(), msg: e.to_string() })?;
        let size = j.image_size.or(j.size.and_then(|s| s.height.or(s.width))).unwrap_or(image_size);
        if size != image_size {
            return Err(Error::Config {
                path: path.to_path_buf(),
                msg: format!("image size {size} differs from the vision encoder's {image_size}"),
            });
        }
        if let Some(m) = j.min_size {
            cfg.min_size = m;
        }
        if let Some(m) = j.image_mean {
            cfg.mean = m;
        }
        if let Some(s) = j.image_std {
            cfg.std = s;
        }
        cfg.background = j.background_color.unwrap_or_else(|| cfg.mean.map(|m| (m * 255.0) as u8));
        if let Some(n) = j.do_normalize {
            cfg.normalize = n;
        }
        Ok(cfg)
    }

    /// Resize and pad to the square model input (u8 RGB).
    pub fn resize_and_pad(&self, img: &RgbImage) -> RgbImage {
        let (w, h) = (img.width() as usize, img.height() as usize);
        let s = self.image_size;
        let long = w.max(h);
        let nw = ((w as f64 / long as f64 * s as f64) as usize).max(self.min_size).min(s);
        let nh = ((h as f64 / long as f64 * s as f64) as usize).max(self.min_size).min(s);
        let resized = resize_bicubic(img, nw, nh);
        let mut out = RgbImage::from_pixel(s as u32, s as u32, image::Rgb(self.background));
        let (x0, y0) = ((s - nw) / 2, (s - nh) / 2);
        image::imageops::replace(&mut out, &resized, x0 as i64, y0 as i64);
        out
    }

    /// A decoded image → normalised pixels `[3, S, S]` (f32).
    pub fn pixels(&self, img: &DynamicImage, device: &Device) -> Result<Tensor> {
        let s = self.image_size;
        Ok(Tensor::from_vec(self.normalised(img), (3, s, s), device)?)
    }

    /// A decoded image → normalised pixels, channel-major `3 × S × S` (an RGB image is read
    /// as it is; others are converted first).
    pub fn normalised(&self, img: &DynamicImage) -> Vec<f32> {
        let square = match img {
            DynamicImage::ImageRgb8(rgb) => self.resize_and_pad(rgb),
            other => self.resize_and_pad(&other.to_rgb8()),
        };
        let s = self.image_size;
        let mut data = vec![0f32; 3 * s * s];
        for (x, y, p) in square.enumerate_pixels() {
            for c in 0..3 {
                let mut v = (p[c] as f64 * (1.0 / 255.0)) as f32;
                if self.normalize {
                    v = (v - self.mean[c]) / self.std[c];
                }
                data[c * s * s + y as usize * s + x as usize] = v;
            }
        }
        data
    }
}

/// Pillow's bicubic resize (`Image.resize(size, BICUBIC)`, which the reference reaches through
/// torchvision's `resize(..., antialias=True)` on a PIL image), reproduced to the bit.
pub fn resize_bicubic(img: &RgbImage, out_w: usize, out_h: usize) -> RgbImage {
    resize_pillow(img, out_w, out_h, Filter::Bicubic)
}

/// The resampling filters of [`resize_pillow`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// Triangle, support 1 (`Image.BILINEAR`).
    Bilinear,
    /// Keys cubic with a = -0.5, support 2 (`Image.BICUBIC`).
    Bicubic,
}

impl Filter {
    fn support(self) -> f64 {
        match self {
            Filter::Bilinear => 1.0,
            Filter::Bicubic => 2.0,
        }
    }

    fn weight(self, x: f64) -> f64 {
        let x = x.abs();
        match self {
            Filter::Bilinear if x < 1.0 => 1.0 - x,
            Filter::Bicubic if x < 1.0 => {
                const A: f64 = -0.5;
                ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
            }
            Filter::Bicubic if x < 2.0 => {
                const A: f64 = -0.5;
                (((x - 5.0) * x + 8.0) * x - 4.0) * A
            }
            _ => 0.0,
        }
    }
}

/// Pillow's `Image.resize(size, filter)` on an RGB image, to the bit (`libImaging/Resample.c`):
/// filter support scaled by the reduction factor, 22-bit fixed-point weights, horizontal pass
/// then vertical pass with 8-bit rounding in between.
pub fn resize_pillow(img: &RgbImage, out_w: usize, out_h: usize, filter: Filter) -> RgbImage {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let src: &[u8] = img.as_raw();
    let (horizontal, tmp_w) = if out_w != w {
        let (bounds, coeffs, k) = pil_coeffs(w, out_w, filter);
        let mut out = vec![0u8; out_w * h * 3];
        for y in 0..h {
            for (x, &(x0, n)) in bounds.iter().enumerate() {
                let kk = &coeffs[x * k..x * k + n];
                for c in 0..3 {
                    let acc = kk.iter().enumerate().fold(1i64 << (PIL_BITS - 1), |a, (i, &wgt)| {
                        a + src[(y * w + x0 + i) * 3 + c] as i64 * wgt as i64
                    });
                    out[(y * out_w + x) * 3 + c] = clip8(acc);
                }
            }
        }
        (std::borrow::Cow::Owned(out), out_w)
    } else {
        (std::borrow::Cow::Borrowed(src), w)
    };
    let data = if out_h != h {
        let (bounds, coeffs, k) = pil_coeffs(h, out_h, filter);
        let mut out = vec![0u8; tmp_w * out_h * 3];
        for (y, &(y0, n)) in bounds.iter().enumerate() {
            let kk = &coeffs[y * k..y * k + n];
            for x in 0..tmp_w {
                for c in 0..3 {
                    let acc = kk.iter().enumerate().fold(1i64 << (PIL_BITS - 1), |a, (i, &wgt)| {
                        a + horizontal[((y0 + i) * tmp_w + x) * 3 + c] as i64 * wgt as i64
                    });
                    out[(y * tmp_w + x) * 3 + c] = clip8(acc);
                }
            }
        }
        out
    } else {
        horizontal.into_owned()
    };
    RgbImage::from_raw(out_w as u32, out_h as u32, data).expect("sized buffer")
}

const PIL_BITS: u32 = 32 - 8 - 2;

fn clip8(acc: i64) -> u8 {
    (acc >> PIL_BITS).clamp(0, 255) as u8
}

/// Per output pixel: (first input pixel, tap count), and fixed-point taps (`k` per pixel).
fn pil_coeffs(in_size: usize, out_size: usize, filter: Filter) -> (Vec<(usize, usize)>, Vec<i32>, usize) {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    let k = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut coeffs = vec![0i32; out_size * k];
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize - xmin;
        let ws: Vec<f64> =
            (0..xmax).map(|x| filter.weight((x as f64 + xmin as f64 - center + 0.5) / filterscale)).collect();
        let total: f64 = ws.iter().sum();
        for (x, w) in ws.iter().enumerate() {
            let w = if total != 0.0 { w / total } else { *w };
            let fixed = w * (1i64 << PIL_BITS) as f64;
            coeffs[xx * k + x] = if w < 0.0 { (fixed - 0.5) as i32 } else { (fixed + 0.5) as i32 };
        }
        bounds.push((xmin, xmax));
    }
    (bounds, coeffs, k)
}

/// What an image's header says, read without decoding it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageProbe {
    pub format: ImageFormat,
    pub width: u32,
    pub height: u32,
    /// Bytes decoding takes: the decoded image in its own colour type, and its RGB copy when
    /// that is another.
    pub decode_bytes: u64,
}

impl ImageProbe {
    /// Reads the header of PNG, JPEG, WebP or GIF bytes: a format we do not read is
    /// [`Error::UnsupportedImage`], a header that does not parse or an image with no pixels
    /// [`Error::InvalidImage`].
    pub fn read(bytes: &[u8]) -> Result<Self> {
        if bytes.is_empty() {
            return Err(Error::InvalidImage("the image is empty (0 bytes)".into()));
        }
        let reader = ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| Error::InvalidImage(e.to_string()))?;
        let Some(format) = reader.format() else {
            return Err(Error::UnsupportedImage { format: None });
        };
        if !matches!(format, ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::WebP | ImageFormat::Gif) {
            return Err(Error::UnsupportedImage { format: Some(format!("{format:?}")) });
        }
        let mut reader = reader;
        reader.no_limits();
        let decoder = reader
            .into_decoder()
            .map_err(|e| Error::InvalidImage(format!("cannot read the {format:?} header: {e}")))?;
        let (width, height) = decoder.dimensions();
        if width == 0 || height == 0 {
            return Err(Error::InvalidImage(format!("the image is {width}x{height}: it has no pixels")));
        }
        let rgb_copy = match decoder.color_type() {
            image::ColorType::Rgb8 => 0,
            _ => width as u64 * height as u64 * 3,
        };
        Ok(Self { format, width, height, decode_bytes: decoder.total_bytes().saturating_add(rgb_copy) })
    }

    /// Refuses an image of more than `max_pixels` pixels or [`MAX_IMAGE_SIDE`] a side.
    pub fn check_size(&self, max_pixels: u64) -> Result<()> {
        let (width, height) = (self.width, self.height);
        if width > MAX_IMAGE_SIDE || height > MAX_IMAGE_SIDE || width as u64 * height as u64 > max_pixels {
            return Err(Error::ImageTooLarge { width, height, max_pixels, max_side: MAX_IMAGE_SIDE });
        }
        Ok(())
    }

    /// Decodes the bytes it was read from (the first frame of a GIF), allocating at most
    /// [`ImageProbe::decode_bytes`].
    pub fn decode(&self, bytes: &[u8]) -> Result<DynamicImage> {
        let format = self.format;
        let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
        let mut limits = image::Limits::default();
        limits.max_image_width = Some(MAX_IMAGE_SIDE);
        limits.max_image_height = Some(MAX_IMAGE_SIDE);
        limits.max_alloc = Some(self.decode_bytes.max(1 << 20));
        reader.limits(limits);
        let img =
            reader.decode().map_err(|e| Error::InvalidImage(format!("cannot decode the {format:?} image: {e}")))?;
        if img.width() == 0 || img.height() == 0 {
            return Err(Error::InvalidImage("the image has no pixels".into()));
        }
        Ok(img)
    }
}

/// Decodes PNG, JPEG (RGB, grayscale, CMYK), WebP or GIF (first frame) bytes, refusing images
/// over [`DEFAULT_MAX_IMAGE_PIXELS`] from their header, before any pixel memory is allocated.
pub fn decode_image(bytes: &[u8]) -> Result<DynamicImage> {
    let probe = ImageProbe::read(bytes)?;
    probe.check_size(DEFAULT_MAX_IMAGE_PIXELS)?;
    probe.decode(bytes)
}

/// Reads and decodes an image file.
pub fn load_image(path: &Path) -> Result<DynamicImage> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode_image(&bytes).map_err(|e| match e {
        Error::InvalidImage(m) => Error::InvalidImage(format!("{}: {m}", path.display())),
        other => other,
    })
}
