//! What generated images come back as: `size` (the native square, or one of OpenAI's square
//! sizes, resized from the native image with Lanczos3: larger sizes are resized, not generated)
//! and `output_format` (`png`; `jpeg` at the quality `output_compression` gives; `webp`,
//! lossless). One `ImageOutput` per request encodes its every image, final or preview.

use std::io::Cursor;

use image::codecs::jpeg::JpegEncoder;
use image::codecs::webp::WebPEncoder;
use image::imageops::FilterType;
use image::{ExtendedColorType, ImageEncoder, RgbImage};

use super::config::OUTPUT_SIDES;
use super::ApiError;

/// An encoded image's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Png,
    /// With its quality, 0..=100.
    Jpeg(u8),
    /// Lossless.
    Webp,
}

impl OutputFormat {
    /// OpenAI's name (`png`, `jpeg`, `webp`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Png => "png",
            Self::Jpeg(_) => "jpeg",
            Self::Webp => "webp",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::Png => "image/png",
            Self::Jpeg(_) => "image/jpeg",
            Self::Webp => "image/webp",
        }
    }
}

/// How a request's images are sized and encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageOutput {
    /// The side of the returned images, in pixels (`None`: as they are: the model's size, or an
    /// edited input's).
    pub side: Option<u32>,
    /// The side the model draws.
    pub native: u32,
    pub format: OutputFormat,
}

impl ImageOutput {
    /// Checks `size`, `output_format` and `output_compression` against the model's `native` side.
    pub fn parse(
        size: Option<&str>,
        output_format: Option<&str>,
        output_compression: Option<i64>,
        native: usize,
    ) -> Result<Self, ApiError> {
        let native = native as u32;
        let side = match size {
            None | Some("auto") => None,
            Some(s) => match s.split_once('x').map(|(w, h)| (w.parse::<u32>(), h.parse::<u32>())) {
                Some((Ok(w), Ok(h))) if w == h && (w == native || OUTPUT_SIDES.contains(&w)) => Some(w),
                _ => {
                    let mut sides = vec![native];
                    sides.extend(OUTPUT_SIDES.iter().filter(|&&s| s != native));
                    sides.sort_unstable();
                    let list: Vec<String> = sides.iter().map(|s| format!("`{s}x{s}`")).collect();
                    let why = format!(
                        "must be `auto` or one of {} (square; the model draws {native}x{native}, other sizes are resized from it); got `{s}`",
                        list.join(", ")
                    );
                    return Err(ApiError::field("size", why));
                }
            },
        };
        let quality = match output_compression {
            None => 100,
            Some(q @ 0..=100) => q as u8,
            Some(q) => {
                return Err(ApiError::field("output_compression", format!("must be between 0 and 100; got {q}")))
            }
        };
        let format = match output_format {
            None | Some("png") => OutputFormat::Png,
            Some("jpeg") | Some("jpg") => OutputFormat::Jpeg(quality),
            Some("webp") => OutputFormat::Webp,
            Some(other) => {
                let why = format!("must be `png`, `jpeg` or `webp`; got `{other}`");
                return Err(ApiError::field("output_format", why));
            }
        };
        Ok(Self { side, native, format })
    }

    /// `WxH` of what an image of `w × h` pixels is returned as.
    pub fn size_for(&self, (w, h): (u32, u32)) -> String {
        let (w, h) = self.side.map_or((w, h), |s| (s, s));
        format!("{w}x{h}")
    }

    /// `WxH` of the returned images of the model's own size.
    pub fn size(&self) -> String {
        self.size_for((self.native, self.native))
    }

    /// `WxH` the model draws.
    pub fn native_size(&self) -> String {
        format!("{0}x{0}", self.native)
    }

    /// The image resized to `side` (Lanczos3) and encoded.
    pub fn encode(&self, image: &RgbImage) -> Result<Vec<u8>, ApiError> {
        let resized;
        let image = match self.side.filter(|&s| image.dimensions() != (s, s)) {
            None => image,
            Some(side) => {
                resized = image::imageops::resize(image, side, side, FilterType::Lanczos3);
                &resized
            }
        };
        let failed = |e: image::ImageError| ApiError::internal(format!("{} encoding failed: {e}", self.format.name()));
        let (w, h) = image.dimensions();
        match self.format {
            OutputFormat::Png => janus::input::image::png_bytes(image).map_err(ApiError::from),
            OutputFormat::Jpeg(q) => {
                let mut out = Vec::new();
                JpegEncoder::new_with_quality(&mut out, q.max(1))
                    .write_image(image.as_raw(), w, h, ExtendedColorType::Rgb8)
                    .map_err(failed)?;
                Ok(out)
            }
            OutputFormat::Webp => {
                let mut out = Cursor::new(Vec::new());
                WebPEncoder::new_lossless(&mut out)
                    .write_image(image.as_raw(), w, h, ExtendedColorType::Rgb8)
                    .map_err(failed)?;
                Ok(out.into_inner())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_formats() {
        let p = |size, format, q| ImageOutput::parse(size, format, q, 384);
        assert_eq!(p(None, None, None).unwrap(), ImageOutput { side: None, native: 384, format: OutputFormat::Png });
        assert_eq!(p(Some("384x384"), None, None).unwrap().size(), "384x384");
        assert_eq!(p(Some("1024x1024"), Some("jpeg"), Some(80)).unwrap().format, OutputFormat::Jpeg(80));
        assert_eq!(p(Some("512x512"), Some("webp"), None).unwrap().size_for((30, 20)), "512x512");
        assert_eq!(p(Some("auto"), None, None).unwrap().size_for((30, 20)), "30x20", "auto keeps an edit's size");
        for bad in ["1024x1536", "300x300", "big", "x"] {
            let e = p(Some(bad), None, None).unwrap_err();
            assert_eq!(e.param.as_deref(), Some("size"));
            assert!(e.message.contains("`256x256`, `384x384`, `512x512`, `1024x1024`"), "{}", e.message);
        }
        assert_eq!(p(None, Some("gif"), None).unwrap_err().param.as_deref(), Some("output_format"));
        assert_eq!(p(None, Some("jpeg"), Some(101)).unwrap_err().param.as_deref(), Some("output_compression"));
    }

    #[test]
    fn encodes_resized_images_that_decode() {
        let img = RgbImage::from_fn(8, 8, |x, y| image::Rgb([(x * 30) as u8, (y * 30) as u8, 90]));
        for format in [OutputFormat::Png, OutputFormat::Jpeg(90), OutputFormat::Webp] {
            let out = ImageOutput { side: Some(16), native: 8, format };
            let bytes = out.encode(&img).unwrap();
            let back = image::load_from_memory(&bytes).unwrap();
            assert_eq!((back.width(), back.height()), (16, 16), "{format:?}");
            assert_eq!(image::guess_format(&bytes).unwrap().to_mime_type(), format.content_type());
        }
        let same = ImageOutput { side: None, native: 8, format: OutputFormat::Png }.encode(&img).unwrap();
        assert_eq!(image::load_from_memory(&same).unwrap().to_rgb8(), img, "the native size is not resampled");
    }
}
