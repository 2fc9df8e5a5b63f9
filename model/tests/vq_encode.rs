//! VQ encoder parity with transformers' `JanusVQVAE` encoder + `quant_conv` (f32, CPU) and the
//! original quantizer rule (L2-normalised z and codebook, squared distance, argmin), on the tiny
//! checkpoints in every on-disk format; goldens from `scripts/make_goldens.py`
//! (`assets/golden/vq_encode*.json`).

mod common;

use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Shape, Tensor};
use common::*;
use janus::load::checkpoint::Checkpoint;
use janus::modules::vq_encoder::nearest_codes;
use janus::{Janus, LoadOptions, ModelFiles, Parts};

/// Largest allowed |z − z_golden| (z is O(1): the goldens' z lie within about ±2.3; we differ
/// by at most 4e-6).
const Z_TOL: f32 = 2e-5;
/// Where the golden's best two squared distances (of unit vectors, in [0, 4]) are closer than
/// this, either index is accepted: well above what f32 rounding of z moves a distance (~1e-6).
/// The tiny goldens' smallest gap is 2e-3, so every index must match there.
const GAP_TOL: f64 = 1e-4;

fn golden_for(variant: &str) -> Golden {
    Golden::load(if variant == GRID_VARIANT { "vq_encode_grid" } else { "vq_encode" })
}

fn cases(g: &Golden) -> &Vec<serde_json::Value> {
    let c = g.json["cases"].as_array().expect("cases");
    assert!(c.len() >= 2, "the golden has {} images", c.len());
    c
}

fn stem(case: &serde_json::Value) -> String {
    Path::new(case["image"].as_str().unwrap()).file_stem().unwrap().to_string_lossy().into_owned()
}

fn gaps(case: &serde_json::Value) -> Vec<f64> {
    case["best_two_gap"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect()
}

/// Positions where `got` differs from the golden's indices although the golden's best two
/// distances are further apart than [`GAP_TOL`].
fn hard_mismatches(got: &[u32], case: &serde_json::Value) -> Vec<usize> {
    let want = ids(&case["indices"]);
    assert_eq!(got.len(), want.len(), "token count");
    let gaps = gaps(case);
    (0..want.len()).filter(|&i| got[i] != want[i] && gaps[i] > GAP_TOL).collect()
}

/// One tiny variant against its golden: the pixels we make from the image file, z, and the
/// indices (through both public entry points).
fn check_variant(variant: &str) {
    let g = golden_for(variant);
    let model = load_tiny(variant);
    let size = g.json["image_size"].as_u64().unwrap() as usize;
    let grid = g.json["grid_size"].as_u64().unwrap() as usize;
    assert_eq!((model.image_size(), model.grid_size()), (size, grid), "{variant}: sizes");
    let enc = model.vq_encoder_config().unwrap_or_else(|| panic!("{variant}: no VQ encoder loaded"));
    assert_eq!(enc.downsample(), g.json["downsample"].as_u64().unwrap() as usize, "{variant}: downsampling");
    for case in cases(&g) {
        let s = stem(case);
        let what = format!("{variant} {s}");
        let pixels = g.t(&format!("{s}.pixels"));
        // Our preprocessing (whole-image bicubic resize, x / 127.5 − 1) makes the golden's pixels.
        let img =
            janus::input::preprocess::load_image(&assets().join("tiny/images").join(case["image"].as_str().unwrap()))
                .unwrap();
        let ours = model.encoder_pixels(std::slice::from_ref(&img)).unwrap();
        assert_eq!(max_abs_diff(&ours, pixels), 0.0, "{what}: encoder input pixels");

        let z = model.encode_raw(pixels).unwrap();
        let d = max_abs_diff(&z, g.t(&format!("{s}.z")));
        assert!(d <= Z_TOL, "{what}: z max abs diff {d}");

        let got = model.encode_pixels(pixels).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].len(), grid * grid, "{what}: token count");
        let bad = hard_mismatches(&got[0], case);
        assert!(bad.is_empty(), "{what}: indices differ at positions {bad:?}");
        assert_eq!(model.encode_image_tokens(std::slice::from_ref(&img)).unwrap(), got, "{what}: from the image");
    }
}

#[test]
fn encoder_matches_transformers_and_the_original_quantizer_in_every_format() {
    for variant in TINY_VARIANTS {
        check_variant(variant);
    }
}

/// The 4×4-grid model: one downsampling level, an encoder without residual blocks.
#[test]
fn encoder_matches_on_the_grid_variant() {
    check_variant(GRID_VARIANT);
}

/// A batch gives what the images give one by one.
#[test]
fn batched_pixels_encode_like_single_images() {
    let g = golden_for("janus-pro-tiny-hf");
    let model = load_tiny("janus-pro-tiny-hf");
    let singles: Vec<Tensor> = cases(&g).iter().map(|c| g.t(&format!("{}.pixels", stem(c))).clone()).collect();
    let batch = Tensor::cat(&singles, 0).unwrap();
    let together = model.encode_pixels(&batch).unwrap();
    let apart: Vec<Vec<u32>> = singles.iter().flat_map(|p| model.encode_pixels(p).unwrap()).collect();
    assert_eq!(together, apart);
    // One image may also come without its batch axis.
    assert_eq!(model.encode_pixels(&singles[0].squeeze(0).unwrap()).unwrap(), vec![apart[0].clone()]);
}

/// The test can fail: quantizing our z without the L2 normalisation (transformers' `encode`)
/// gives indices that differ from the golden's beyond rounding, on every tiny model (whose
/// codebook rows have different norms).
#[test]
fn skipping_the_l2_normalisation_changes_the_indices() {
    for variant in ["janus-pro-tiny-hf", GRID_VARIANT] {
        let g = golden_for(variant);
        let model = load_tiny(variant);
        let files = ModelFiles::from_dir(&tiny_dir(variant), variant).unwrap();
        let ckpt = Arc::new(Checkpoint::open(&files.weights).unwrap());
        let shape = ckpt.shape_of("gen_vision_model.quantize.embedding.weight").unwrap();
        let raw_codebook = ckpt
            .load("gen_vision_model.quantize.embedding.weight", &Shape::from(shape.clone()), DType::F32, &Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let e = shape[1];
        let mut differing = 0;
        for case in cases(&g) {
            let s = stem(case);
            let z = model.encode_raw(g.t(&format!("{s}.pixels"))).unwrap();
            let rows = z.permute((0, 2, 3, 1)).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            differing += hard_mismatches(&nearest_codes(&rows, &raw_codebook, e), case).len();
        }
        assert!(differing > 0, "{variant}: the normalisation changed no index");
    }
}

/// Image → tokens → the VQ decoder: an image of the generated size comes back, and encoding
/// that image again mostly finds the same tokens (the VQ is random here, so only loosely).
#[test]
fn encode_then_decode_round_trips_to_an_image_of_the_right_size() {
    for variant in ["janus-pro-tiny", GRID_VARIANT] {
        let model = load_tiny(variant);
        let img = janus::input::preprocess::load_image(&assets().join("tiny/images/wide.png")).unwrap();
        let tokens = model.encode_image_tokens(std::slice::from_ref(&img)).unwrap();
        assert_eq!(tokens.len(), 1);
        assert_eq!(tokens[0].len(), model.num_image_tokens());
        assert!(tokens[0].iter().all(|&t| (t as usize) < model.cfg.gen.image_token_size));
        let decoded = model.decode_images(&tokens, 1).unwrap();
        let s = model.image_size() as u32;
        assert_eq!((decoded[0].width(), decoded[0].height()), (s, s), "{variant}: decoded size");
    }
}

fn load_parts(variant: &str, parts: Parts) -> janus::Result<Janus> {
    let files = ModelFiles::from_dir(&tiny_dir(variant), variant).unwrap();
    let opts = LoadOptions { parts, ..LoadOptions::for_device(Device::Cpu) };
    Janus::load(&files, &opts)
}

/// One-job loads leave the encoder on disk and say so with a typed error; `Parts::Edit` loads
/// it (and the decoder) without the vision encoder.
#[test]
fn the_encoder_is_loaded_only_for_all_and_edit() {
    let img = janus::input::preprocess::load_image(&assets().join("tiny/images/square.png")).unwrap();
    for parts in [Parts::Generation, Parts::Understanding] {
        let m = load_parts("janus-pro-tiny", parts).unwrap();
        assert!(m.vq_encoder_config().is_none(), "{parts:?}");
        let e = m.encode_image_tokens(std::slice::from_ref(&img)).unwrap_err();
        assert!(matches!(e, janus::Error::PartNotLoaded(_)), "{parts:?}: {e:?}");
    }
    let m = load_parts("janus-pro-tiny", Parts::Edit).unwrap();
    let tokens = m.encode_image_tokens(std::slice::from_ref(&img)).unwrap();
    assert_eq!(m.decode_images(&tokens, 1).unwrap().len(), 1);
    assert!(!Parts::Edit.understanding() && Parts::Edit.generation() && Parts::Edit.vq_encoder());
    let all = load_tiny("janus-pro-tiny");
    assert_eq!(all.encode_image_tokens(std::slice::from_ref(&img)).unwrap(), tokens);
}

/// Pixels of the wrong size are refused, not encoded into a grid of another size.
#[test]
fn wrong_pixel_shapes_are_refused() {
    let model = load_tiny("janus-pro-tiny-hf");
    for dims in [vec![1, 3, 16, 16], vec![1, 1, 32, 32], vec![32, 32]] {
        let t = Tensor::zeros(dims.clone(), DType::F32, &Device::Cpu).unwrap();
        let e = model.encode_pixels(&t).unwrap_err();
        assert!(matches!(e, janus::Error::InvalidInput(_)), "{dims:?}: {e:?}");
    }
}
