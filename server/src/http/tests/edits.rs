//! `/v1/images/edits` and `/v1/images/variations` against the fake engine (solid-colour images of
//! 384 × 384): the mask reduced to the token grid reaches the engine, the result is laid over the
//! input inside the mask only, a redraw without a mask and a variation draw from the model's
//! description (`revised_prompt`), and bad forms are 400s naming the field.

use axum::http::StatusCode;
use base64::Engine as _;
use image::{Rgba, RgbaImage};

use super::fake::Fake;
use super::*;

const EDITS: &str = "/v1/images/edits";
/// A form field: name, file name (for files), bytes.
type Field<'a> = (&'a str, Option<&'a str>, &'a [u8]);
const VARIATIONS: &str = "/v1/images/variations";

fn photo(w: u32, h: u32) -> image::RgbImage {
    image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 7) as u8, (y * 5) as u8, 60]))
}

fn png(img: &image::RgbImage) -> Vec<u8> {
    janus::input::image::png_bytes(img).unwrap()
}

/// A PNG mask of `w × h`, transparent where `marked`.
fn mask(w: u32, h: u32, marked: impl Fn(u32, u32) -> bool) -> Vec<u8> {
    let m = RgbaImage::from_fn(w, h, |x, y| Rgba([0, 0, 0, if marked(x, y) { 0 } else { 255 }]));
    let mut out = std::io::Cursor::new(Vec::new());
    m.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fn first_image(v: &serde_json::Value) -> image::RgbImage {
    let bytes = base64::prelude::BASE64_STANDARD.decode(v["data"][0]["b64_json"].as_str().unwrap()).unwrap();
    image::load_from_memory(&bytes).unwrap().to_rgb8()
}

#[tokio::test]
async fn a_masked_edit_keeps_every_pixel_outside_the_mask() {
    let h = default_harness();
    let input = photo(96, 64);
    let (img, m) = (png(&input), mask(96, 64, |x, y| x >= 48 && y < 32));
    let r = send(
        &h.app,
        multipart_to(
            EDITS,
            &[
                ("image", Some("a.png"), &img),
                ("mask", Some("m.png"), &m),
                ("prompt", None, b"a red hat"),
                ("seed", None, b"9"),
            ],
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.headers["x-native-size"], "384x384");
    let v = r.json();
    assert_eq!(v["size"], "96x64", "auto: the input's size");
    assert!(v["data"][0].get("revised_prompt").is_none());
    let out = first_image(&v);
    let drawn = Fake::colour(9, 0);
    for (x, y, p) in out.enumerate_pixels() {
        if x >= 48 && y < 32 {
            if x >= 52 && y < 28 {
                assert_eq!(p, &drawn, "({x}, {y}) inside: the drawn image");
            }
        } else {
            assert_eq!(p, input.get_pixel(x, y), "({x}, {y}) outside: the input's pixel");
        }
    }
    // The engine got the input as the encoder's input and the mask on the 24 × 24 grid: the
    // upper-right quarter.
    let seen = h.fake.last_images.lock().unwrap().clone().unwrap();
    let edit = seen.edit.expect("an edit");
    assert_eq!(edit.pixels.dims(), &[3, 384, 384]);
    let want: Vec<bool> = (0..576).map(|i| (i % 24) >= 12 && (i / 24) < 12).collect();
    assert_eq!(edit.editable, want);
    assert_eq!(seen.request.prompt, "a red hat");
}

#[tokio::test]
async fn without_a_mask_the_image_is_described_and_redrawn() {
    let h = default_harness();
    let img = png(&photo(40, 40));
    let r = send(
        &h.app,
        multipart_to(
            EDITS,
            &[("image[]", Some("a.png"), &img), ("prompt", None, b"make it night"), ("size", None, b"512x512")],
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v = r.json();
    let revised = v["data"][0]["revised_prompt"].as_str().unwrap();
    assert!(revised.starts_with("make it night. "), "{revised}");
    assert_eq!(v["size"], "512x512");
    assert_eq!(first_image(&v).dimensions(), (512, 512));
    let seen = h.fake.last_images.lock().unwrap().clone().unwrap();
    assert!(seen.edit.is_none(), "a redraw, not an edit");
    assert_eq!(seen.request.prompt, revised);
    let asked = h.fake.last_chat.lock().unwrap().clone().unwrap();
    assert_eq!(asked.images.len(), 1, "the image was described");
}

#[tokio::test]
async fn variations_are_drawn_from_the_description() {
    let h = default_harness();
    let img = png(&photo(20, 30));
    let r = send(
        &h.app,
        multipart_to(
            VARIATIONS,
            &[("image", Some("a.png"), &img), ("n", None, b"2"), ("output_format", None, b"webp")],
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v = r.json();
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert_eq!(v["output_format"], "webp");
    let revised = v["data"][1]["revised_prompt"].as_str().unwrap();
    assert_eq!(h.fake.last_images.lock().unwrap().clone().unwrap().request.prompt, revised);
    assert_eq!(h.fake.last_chat.lock().unwrap().clone().unwrap().max_new, janus::limits::CAPTION_MAX_TOKENS);
}

#[tokio::test]
async fn bad_forms_are_named() {
    let h = default_harness();
    let img = png(&photo(16, 16));
    let opaque = {
        let mut out = std::io::Cursor::new(Vec::new());
        photo(16, 16).write_to(&mut out, image::ImageFormat::Png).unwrap();
        out.into_inner()
    };
    let small_mask = mask(8, 8, |_, _| true);
    let cases: Vec<(&str, Vec<Field>, &str, u16, &str)> = vec![
        (EDITS, vec![("prompt", None, b"x")], "image", 400, "required"),
        (EDITS, vec![("image", Some("a.png"), &img)], "prompt", 400, "required"),
        (
            EDITS,
            vec![("image", Some("a.png"), &img), ("mask", Some("m.png"), &small_mask), ("prompt", None, b"x")],
            "mask",
            400,
            "16x16; got 8x8",
        ),
        (
            EDITS,
            vec![("image", Some("a.png"), &img), ("mask", Some("m.png"), &opaque), ("prompt", None, b"x")],
            "mask",
            400,
            "alpha channel",
        ),
        (
            EDITS,
            vec![
                ("image", Some("a.png"), b"not an image"),
                ("mask", Some("m.png"), &small_mask),
                ("prompt", None, b"x"),
            ],
            "image",
            415,
            "unrecognised",
        ),
        (
            EDITS,
            vec![("image", Some("a.png"), &img), ("prompt", None, b"x"), ("background", None, b"transparent")],
            "background",
            400,
            "opaque",
        ),
        (
            EDITS,
            vec![("image", Some("a.png"), &img), ("prompt", None, b"x"), ("size", None, b"1792x1024")],
            "size",
            400,
            "1024x1024",
        ),
        (
            EDITS,
            vec![("image", Some("a.png"), &img), ("prompt", None, b"x"), ("n", None, b"two")],
            "n",
            400,
            "an integer",
        ),
        (
            EDITS,
            vec![("image", Some("a.png"), &img), ("prompt", None, b"x"), ("style", None, b"vivid")],
            "style",
            400,
            "unknown form field",
        ),
        (
            VARIATIONS,
            vec![("image", Some("a.png"), &img), ("mask", Some("m.png"), &small_mask)],
            "mask",
            400,
            "unknown form field",
        ),
        (VARIATIONS, vec![("image", Some("a.png"), &img), ("n", None, b"17")], "n", 400, "between 1 and 16"),
    ];
    for (path, parts, param, status, needle) in cases {
        send(&h.app, multipart_to(path, &parts)).await.assert_error(status, Some(param), needle);
    }
}
