//! Text-to-image parity with transformers' `JanusForConditionalGeneration` (f32, CPU) on the
//! tiny random checkpoints, in every on-disk format we support, and on a checkpoint whose
//! generation grid does not follow from the vision image size and the VQ factor.

mod common;

use candle_core::{DType, Device, Tensor};
use common::*;
use janus::{ImageJob, Janus, SamplingParams, T2iBatch};

const HIDDEN_TOL: f32 = 1e-4;
const LOGIT_TOL: f32 = 1e-4;

fn greedy() -> SamplingParams {
    SamplingParams { greedy: true, ..Default::default() }
}

/// Largest difference between our pixels and the golden ones (uint8 `[1, H, W, 3]`), after
/// checking that both images have the same size.
fn worst_pixel_diff(img: &image::RgbImage, golden: &Tensor, what: &str) -> i16 {
    let dims = golden.dims();
    assert_eq!(dims.len(), 4, "{what}: golden pixels are [1, H, W, 3]");
    assert_eq!((img.height() as usize, img.width() as usize), (dims[1], dims[2]), "{what}: image size");
    let want = golden.flatten_all().unwrap().to_vec1::<u8>().unwrap();
    assert_eq!(img.as_raw().len(), want.len(), "{what}: pixel count");
    assert!(!want.is_empty(), "{what}: empty golden image");
    img.as_raw().iter().zip(&want).map(|(&a, &b)| (a as i16 - b as i16).abs()).max().unwrap()
}

/// Runs greedy CFG for one prompt and checks ids, per-step hidden states and logits (at the
/// golden's saved steps), tokens and decoded pixels against the goldens.
fn check_prompt(model: &Janus, g: &Golden, pi: usize, variant: &str) {
    let p = &g.json["prompts"][pi];
    let prompt = p["prompt"].as_str().unwrap();
    let cond = model.tokenizer.t2i_prompt_ids(prompt).unwrap();
    assert_eq!(cond, ids(&p["input_ids"]), "{variant}: prompt ids");
    assert_eq!(model.tokenizer.uncond_ids(&cond), ids(&p["uncond_ids"]), "{variant}: uncond ids");
    let saved: Vec<usize> = ids(&g.json["saved_steps"]).into_iter().map(|s| s as usize).collect();
    assert!(!saved.is_empty(), "{variant}: the golden saves no steps");

    let jobs = vec![ImageJob { prompt_ids: cond, params: greedy(), seed: 0, forced: None }];
    let mut batch = T2iBatch::new(model, jobs).unwrap();
    let (mut step, mut checked) = (0, 0);
    while !batch.is_done() {
        let out = batch.step().unwrap();
        if saved.contains(&step) {
            let h = max_abs_diff(&out.hidden, g.t(&format!("p{pi}.step{step}.hidden")));
            let l = max_abs_diff(&out.logits, g.t(&format!("p{pi}.step{step}.logits")));
            assert!(h <= HIDDEN_TOL, "{variant} p{pi} step {step}: hidden max abs diff {h}");
            assert!(l <= LOGIT_TOL, "{variant} p{pi} step {step}: logits max abs diff {l}");
            checked += 1;
        }
        step += 1;
    }
    assert_eq!(checked, saved.len(), "{variant} p{pi}: steps compared");
    let tokens = batch.into_tokens().unwrap();
    let want = ids(&p["image_tokens"]);
    assert!(!want.is_empty(), "{variant} p{pi}: empty golden tokens");
    assert_eq!(tokens[0], want, "{variant} p{pi}: greedy CFG tokens");

    let img = &model.decode_images(&tokens, 4).unwrap()[0];
    let worst = worst_pixel_diff(img, g.t(&format!("p{pi}.pixels")), &format!("{variant} p{pi}"));
    assert!(worst <= 1, "{variant} p{pi}: pixels differ by {worst}");
}

/// The model's grid is the golden's (its number of tokens, grid side and image side).
fn check_grid(model: &Janus, g: &Golden, variant: &str) {
    let n = g.json["num_image_tokens"].as_u64().unwrap() as usize;
    assert_eq!(model.num_image_tokens(), n, "{variant}: image tokens");
    assert_eq!(model.grid_size() * model.grid_size(), n, "{variant}: grid");
    let pixels = g.t("p0.pixels").dims()[1];
    assert_eq!(model.image_size(), pixels, "{variant}: image size");
}

#[test]
fn greedy_cfg_matches_transformers_in_every_format() {
    let g = Golden::load("t2i");
    let n_prompts = g.json["prompts"].as_array().unwrap().len();
    assert!(n_prompts >= 2);
    for variant in TINY_VARIANTS {
        let model = load_tiny(variant);
        assert_eq!(model.num_image_tokens(), 64);
        assert_eq!(model.image_size(), 32);
        check_grid(&model, &g, variant);
        for pi in 0..n_prompts {
            check_prompt(&model, &g, pi, variant);
        }
    }
}

/// transformers' rule: `vision_config.num_image_tokens` tokens (16) on the VQ's `num_patches`
/// grid (vision image 32 // patch 8 = 4), decoded into 4 × 2 = 8-pixel images. The vision image
/// size over the VQ factor (32 / 2) would say 256 tokens and 32 pixels.
#[test]
fn greedy_cfg_matches_transformers_when_vision_patch_and_vq_factor_differ() {
    let g = Golden::load("t2i_grid");
    let variant = GRID_VARIANT;
    let model = load_tiny(variant);
    assert_eq!((model.num_image_tokens(), model.grid_size(), model.image_size()), (16, 4, 8));
    assert_eq!(model.vq_cfg.downsample(), 2);
    assert_eq!(model.cfg.vision.patch_size, 8);
    check_grid(&model, &g, variant);
    let n_prompts = g.json["prompts"].as_array().unwrap().len();
    assert!(n_prompts >= 2);
    for pi in 0..n_prompts {
        check_prompt(&model, &g, pi, variant);
    }
    check_vq_decode(&model, &g, variant);
}

#[test]
fn prefill_hidden_states_match_at_every_position() {
    let g = Golden::load("t2i");
    let model = load_tiny("janus-pro-tiny-hf");
    let cond = ids(&g.json["prompts"][0]["input_ids"]);
    let len = cond.len();
    let ids = Tensor::from_vec(cond, (1, len), &Device::Cpu).unwrap();
    let mut cache = janus::modules::llm::LlmCache::new(&model.cfg.llm, vec![0], len, DType::F32, &Device::Cpu).unwrap();
    let hidden = model.llm().forward(&model.llm().embed(&ids).unwrap(), &mut cache).unwrap();
    let d = max_abs_diff(&hidden.squeeze(0).unwrap(), g.t("p0.prefill_hidden"));
    assert!(d <= HIDDEN_TOL, "prefill hidden max abs diff {d}");
}

/// Decodes the golden's fixed token grid and compares the raw output and the pixels.
fn check_vq_decode(model: &Janus, g: &Golden, variant: &str) {
    let toks = ids(&g.json["vq_tokens"]);
    assert_eq!(toks.len(), model.num_image_tokens(), "{variant}: VQ token count");
    let t = Tensor::from_vec(toks.clone(), (1, toks.len()), &Device::Cpu).unwrap();
    let raw = model.decode_raw(&t).unwrap();
    let d = max_abs_diff(&raw, g.t("vq.decoded"));
    assert!(d <= 1e-4, "{variant}: VQ decoder output max abs diff {d}");
    let img = &model.decode_images(std::slice::from_ref(&toks), 1).unwrap()[0];
    let worst = worst_pixel_diff(img, g.t("vq.pixels"), &format!("{variant} VQ"));
    assert!(worst <= 1, "{variant}: pixels differ by {worst}");
}

#[test]
fn vq_decode_of_fixed_grid_matches() {
    let g = Golden::load("t2i");
    for variant in ["janus-pro-tiny", "janus-pro-tiny-hf"] {
        check_vq_decode(&load_tiny(variant), &g, variant);
    }
}

#[test]
fn tokenizer_matches_transformers() {
    let g = Golden::load("t2i");
    let model = load_tiny("janus-pro-tiny");
    let vectors = g.json["tokenizer_vectors"].as_array().unwrap();
    assert!(!vectors.is_empty());
    for v in vectors {
        let text = v["text"].as_str().unwrap();
        assert_eq!(model.tokenizer.encode(text).unwrap(), ids(&v["ids"]), "tokenizing {text:?}");
    }
}
