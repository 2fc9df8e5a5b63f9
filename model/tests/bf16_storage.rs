//! The exact mode stored as the checkpoint stores it: an f32 model on the CPU keeps a bf16
//! checkpoint's linear weights in bf16 (half the bytes a step reads, half the memory), and its
//! numbers are those of the same weights stored in f32, bit for bit. `janus-pro-tiny` is the bf16
//! checkpoint; `janus-pro-tiny-sharded` holds the same weights in f32.

mod common;

use common::*;
use janus::{Conversation, DType, SamplingParams, TextParams, TextSession};

#[test]
fn bf16_stored_weights_give_the_f32_numbers_bit_for_bit_at_half_the_bytes() {
    let narrow = load_tiny_with("janus-pro-tiny", DType::F32);
    let wide = load_tiny_with("janus-pro-tiny-sharded", DType::F32);
    // the decoder layers' linears (the step also reads `gen_aligner`, dense in the model's f32)
    let layers = |m: &janus::Janus| m.llm().layer_weight_bytes();
    assert_eq!(2 * layers(&narrow), layers(&wide), "bf16 kept: half the bytes");
    assert!(narrow.image_step_weight_bytes() < wide.image_step_weight_bytes());

    // Image tokens: every step's logits (prefill as a GEMM, then decode steps), greedy.
    let params = SamplingParams { greedy: true, ..Default::default() };
    let logits = |m: &janus::Janus| {
        let jobs = m.t2i_jobs("a red bicycle", 2, 3, params).unwrap();
        let mut batch = janus::T2iBatch::new(m, jobs).unwrap();
        let mut all = Vec::new();
        while !batch.is_done() {
            all.push(batch.step().unwrap().logits.flatten_all().unwrap().to_vec1::<f32>().unwrap());
        }
        all
    };
    let (a, b) = (logits(&narrow), logits(&wide));
    assert_eq!(a.len(), b.len());
    for (step, (x, y)) in a.iter().zip(&b).enumerate() {
        assert!(x.iter().zip(y).all(|(x, y)| x.to_bits() == y.to_bits()), "image step {step}");
    }

    // A text answer about an image: a chunked prompt (GEMM) and decode steps.
    let img = janus::input::preprocess::load_image(&assets().join("tiny/images/square.png")).unwrap();
    let mut conv = Conversation::single(img, "What is in the picture?");
    conv.system.clear();
    let text = |m: &janus::Janus| {
        let p = TextParams { max_new_tokens: Some(16), ..Default::default() };
        let mut s = TextSession::new(m, &conv, &p).unwrap();
        s.keep_logits();
        while !s.is_done() {
            s.step().unwrap();
        }
        s.logits().to_vec()
    };
    let (a, b) = (text(&narrow), text(&wide));
    assert_eq!(a.len(), b.len());
    for (step, (x, y)) in a.iter().zip(&b).enumerate() {
        assert!(x.iter().zip(y).all(|(x, y)| x.to_bits() == y.to_bits()), "text token {step}");
    }
}
