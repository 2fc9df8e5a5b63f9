//! Image decoding for understanding: every accepted format, and clear errors for bad input.

mod common;

use std::io::Cursor;

use common::*;
use image::{DynamicImage, ImageFormat, Rgb, RgbImage, Rgba, RgbaImage};
use janus::input::preprocess::{decode_image, load_image, PreprocessConfig};
use janus::Error;

fn gradient(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| Rgb([(x * 8) as u8, (y * 12) as u8, 90]))
}

fn encode(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

fn image_err(bytes: &[u8]) -> String {
    match decode_image(bytes) {
        Err(e @ (Error::InvalidImage(_) | Error::UnsupportedImage { .. } | Error::ImageTooLarge { .. })) => {
            e.to_string()
        }
        other => panic!("expected an image error, got {other:?}"),
    }
}

#[test]
fn png_with_alpha_drops_the_alpha_channel() {
    let rgba = RgbaImage::from_fn(5, 4, |x, y| Rgba([x as u8 * 40, y as u8 * 50, 7, (x * 60) as u8]));
    let img = decode_image(&encode(&DynamicImage::ImageRgba8(rgba.clone()), ImageFormat::Png)).unwrap();
    let rgb = img.to_rgb8();
    for (x, y, p) in rgb.enumerate_pixels() {
        let q = rgba.get_pixel(x, y);
        assert_eq!(p.0, [q[0], q[1], q[2]], "PIL's convert(\"RGB\") keeps the colour and drops alpha");
    }
}

#[test]
fn grayscale_jpeg_webp_and_gif_decode_to_rgb() {
    let src = DynamicImage::ImageRgb8(gradient(30, 20));
    let gray = DynamicImage::ImageLuma8(src.to_luma8());
    let g = decode_image(&encode(&gray, ImageFormat::Jpeg)).unwrap().to_rgb8();
    assert_eq!(g.dimensions(), (30, 20));
    assert!(g.pixels().all(|p| p[0] == p[1] && p[1] == p[2]), "grey stays grey");

    let webp = decode_image(&encode(&src, ImageFormat::WebP)).unwrap().to_rgb8();
    assert_eq!(webp, src.to_rgb8(), "lossless WebP round-trips");

    // A two-frame GIF: the first frame is used.
    let mut gif = Vec::new();
    {
        let mut enc = image::codecs::gif::GifEncoder::new(&mut gif);
        let red = RgbaImage::from_pixel(6, 6, Rgba([255, 0, 0, 255]));
        let blue = RgbaImage::from_pixel(6, 6, Rgba([0, 0, 255, 255]));
        enc.encode_frames([image::Frame::new(red), image::Frame::new(blue)]).unwrap();
    }
    let first = decode_image(&gif).unwrap().to_rgb8();
    assert_eq!(first.get_pixel(3, 3).0, [255, 0, 0]);
}

#[test]
fn cmyk_jpeg_decodes_to_the_right_colours() {
    // Written by Pillow from this gradient converted to CMYK (Adobe-style inverted CMYK).
    let img = load_image(&assets().join("tiny/images/cmyk.jpg")).unwrap().to_rgb8();
    let src = gradient(30, 20);
    assert_eq!(img.dimensions(), src.dimensions());
    let mean_err: f64 = img.as_raw().iter().zip(src.as_raw()).map(|(&a, &b)| (a as f64 - b as f64).abs()).sum::<f64>()
        / src.as_raw().len() as f64;
    assert!(mean_err < 8.0, "CMYK colours are off by {mean_err:.1} on average (inverted?)");
}

#[test]
fn corrupt_empty_oversized_and_unsupported_images_are_refused() {
    assert!(image_err(&[]).contains("empty"));
    assert!(matches!(decode_image(b"this is not an image at all"), Err(Error::UnsupportedImage { .. })));
    assert!(image_err(b"this is not an image at all").contains("unrecognised"));

    let png = encode(&DynamicImage::ImageRgb8(gradient(30, 20)), ImageFormat::Png);
    assert!(matches!(decode_image(&png[..png.len() / 2]), Err(Error::InvalidImage(_))));
    let e = image_err(&png[..png.len() / 2]);
    assert!(e.contains("Png"), "{e}");

    // A 20000 x 20000 PNG header (the pixel data is never read, nor allocated).
    let mut huge = png.clone();
    huge[16..20].copy_from_slice(&20000u32.to_be_bytes());
    huge[20..24].copy_from_slice(&20000u32.to_be_bytes());
    let crc = crc32(&huge[12..29]);
    huge[29..33].copy_from_slice(&crc.to_be_bytes());
    let e = image_err(&huge);
    assert!(e.contains("20000x20000") && e.contains("limit"), "{e}");
    assert!(matches!(decode_image(&huge), Err(Error::ImageTooLarge { width: 20000, height: 20000, .. })));
    // The header is read without decoding: its size and the bytes a decode would take.
    let probe = janus::input::preprocess::ImageProbe::read(&huge).unwrap();
    assert_eq!((probe.width, probe.height, probe.decode_bytes), (20000, 20000, 20000 * 20000 * 3));
    assert!(probe.check_size(20000 * 20000).is_err(), "no side may exceed 16384 pixels");
    let small = janus::input::preprocess::ImageProbe::read(&png).unwrap();
    assert!(small.check_size(600).is_ok() && small.check_size(599).is_err(), "30x20 is 600 pixels");

    let mut bmp = b"BM".to_vec();
    bmp.resize(64, 0);
    match decode_image(&bmp) {
        Err(Error::UnsupportedImage { format }) => assert_eq!(format.as_deref(), Some("Bmp")),
        other => panic!("expected an unsupported-image error, got {other:?}"),
    }
}

#[test]
fn every_size_preprocesses_to_the_model_square() {
    let cfg = PreprocessConfig::janus_default(32);
    for (w, h) in [(1, 1), (1, 500), (500, 1), (31, 33), (64, 29), (32, 32), (1000, 700)] {
        let img = DynamicImage::ImageRgb8(gradient(w, h));
        let t = cfg.pixels(&img, &janus::Device::Cpu).unwrap();
        assert_eq!(t.dims(), &[3, 32, 32]);
        let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(v.iter().all(|x| (-1.0..=1.0).contains(x)), "{w}x{h}: values outside [-1, 1]");
    }
}

/// CRC-32 (PNG chunks), bitwise.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}
