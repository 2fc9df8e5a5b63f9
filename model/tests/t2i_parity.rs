//! Text-to-image parity with transformers' `JanusForConditionalGeneration` (f32, CPU) on the
//! tiny random checkpoints, in every on-disk format we support.

mod common;

use candle_core::{DType, Device, Tensor};
use common::*;
use janus::{ImageJob, Janus, SamplingParams, T2iBatch};

const HIDDEN_TOL: f32 = 1e-4;
const LOGIT_TOL: f32 = 1e-4;
const SAVED_STEPS: [usize; 5] = [0, 1, 2, 31, 63];

fn greedy() -> SamplingParams {
    SamplingParams { greedy: true, ..Default::default() }
}

/// Runs greedy CFG for one prompt and checks ids, per-step hidden states and logits, tokens
/// and decoded pixels against the goldens.
fn check_prompt(model: &Janus, g: &Golden, pi: usize, variant: &str) {
    let p = &g.json["prompts"][pi];
    let prompt = p["prompt"].as_str().unwrap();
    let cond = model.tokenizer.t2i_prompt_ids(prompt).unwrap();
    assert_eq!(cond, ids(&p["input_ids"]), "{variant}: prompt ids");
    assert_eq!(model.tokenizer.uncond_ids(&cond), ids(&p["uncond_ids"]), "{variant}: uncond ids");

    let jobs = vec![ImageJob { prompt_ids: cond, params: greedy(), seed: 0 }];
    let mut batch = T2iBatch::new(model, jobs).unwrap();
    let mut step = 0;
    while !batch.is_done() {
        let out = batch.step().unwrap();
        if SAVED_STEPS.contains(&step) {
            let h = max_abs_diff(&out.hidden, g.t(&format!("p{pi}.step{step}.hidden")));
            let l = max_abs_diff(&out.logits, g.t(&format!("p{pi}.step{step}.logits")));
            assert!(h <= HIDDEN_TOL, "{variant} p{pi} step {step}: hidden max abs diff {h}");
            assert!(l <= LOGIT_TOL, "{variant} p{pi} step {step}: logits max abs diff {l}");
        }
        step += 1;
    }
    let tokens = batch.into_tokens().unwrap();
    assert_eq!(tokens[0], ids(&p["image_tokens"]), "{variant} p{pi}: greedy CFG tokens");

    let img = &model.decode_images(&tokens, 4).unwrap()[0];
    let want = g.t(&format!("p{pi}.pixels")).flatten_all().unwrap().to_vec1::<u8>().unwrap();
    let worst = img.as_raw().iter().zip(&want).map(|(&a, &b)| (a as i16 - b as i16).abs()).max().unwrap();
    assert!(worst <= 1, "{variant} p{pi}: pixels differ by {worst}");
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
        for pi in 0..n_prompts {
            check_prompt(&model, &g, pi, variant);
        }
    }
}

#[test]
fn prefill_hidden_states_match_at_every_position() {
    let g = Golden::load("t2i");
    let model = load_tiny("janus-pro-tiny-hf");
    let cond = ids(&g.json["prompts"][0]["input_ids"]);
    let len = cond.len();
    let ids = Tensor::from_vec(cond, (1, len), &Device::Cpu).unwrap();
    let mut cache = janus::llm::LlmCache::new(&model.cfg.llm, vec![0], len, DType::F32, &Device::Cpu).unwrap();
    let hidden = model.llm().forward(&model.llm().embed(&ids).unwrap(), &mut cache).unwrap();
    let d = max_abs_diff(&hidden.squeeze(0).unwrap(), g.t("p0.prefill_hidden"));
    assert!(d <= HIDDEN_TOL, "prefill hidden max abs diff {d}");
}

#[test]
fn vq_decode_of_fixed_grid_matches() {
    let g = Golden::load("t2i");
    let toks = ids(&g.json["vq_tokens"]);
    for variant in ["janus-pro-tiny", "janus-pro-tiny-hf"] {
        let model = load_tiny(variant);
        let t = Tensor::from_vec(toks.clone(), (1, toks.len()), &Device::Cpu).unwrap();
        let raw = model.decode_raw(&t).unwrap();
        let d = max_abs_diff(&raw, g.t("vq.decoded"));
        assert!(d <= 1e-4, "{variant}: VQ decoder output max abs diff {d}");
        let img = &model.decode_images(std::slice::from_ref(&toks), 1).unwrap()[0];
        let want = g.t("vq.pixels").flatten_all().unwrap().to_vec1::<u8>().unwrap();
        let worst = img.as_raw().iter().zip(&want).map(|(&a, &b)| (a as i16 - b as i16).abs()).max().unwrap();
        assert!(worst <= 1, "{variant}: pixels differ by {worst}");
    }
}

#[test]
fn tokenizer_matches_transformers() {
    let g = Golden::load("t2i");
    let model = load_tiny("janus-pro-tiny");
    for v in g.json["tokenizer_vectors"].as_array().unwrap() {
        let text = v["text"].as_str().unwrap();
        assert_eq!(model.tokenizer.encode(text).unwrap(), ids(&v["ids"]), "tokenizing {text:?}");
    }
}
