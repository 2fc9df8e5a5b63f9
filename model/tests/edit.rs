//! Edits on the tiny model: an edit with nothing editable gives the input's own tokens, one with
//! everything editable gives what plain generation gives for the same prompt and seed, and in
//! between the kept tokens are the input's and the others drawn.

mod common;

use std::sync::Arc;

use common::*;
use janus::edit::{editable_grid, encoder_pixels, ForcedTokens};
use janus::{Janus, SamplingParams};

fn edit_tokens(model: &Janus, editable: Vec<bool>, input: &[u32], seed: u64) -> Vec<Vec<u32>> {
    let ids = model.prompter().t2i_prompt_ids("a red hat").unwrap();
    let mut jobs = model.image_jobs(ids, 2, seed, SamplingParams::default()).unwrap();
    let forced = Arc::new(ForcedTokens::new(input.to_vec(), editable).unwrap());
    jobs.iter_mut().for_each(|j| j.forced = Some(forced.clone()));
    model.generate_tokens(jobs, |_, _| {}).unwrap()
}

#[test]
fn edits_keep_what_is_not_editable_and_draw_the_rest_as_generation_does() {
    let model = load_tiny("janus-pro-tiny");
    let img = janus::input::preprocess::load_image(&assets().join("tiny/images/wide.png")).unwrap().to_rgb8();
    let input = model.encode_pixels(&encoder_pixels(&img, model.image_size()).unwrap()).unwrap().remove(0);
    let n = model.num_image_tokens();
    assert_eq!(input.len(), n);

    // Nothing editable: the input's tokens, for every image and seed.
    for out in edit_tokens(&model, vec![false; n], &input, 3) {
        assert_eq!(out, input);
    }
    // Everything editable: plain generation's tokens.
    let ids = model.prompter().t2i_prompt_ids("a red hat").unwrap();
    let plain =
        model.generate_tokens(model.image_jobs(ids, 2, 3, SamplingParams::default()).unwrap(), |_, _| {}).unwrap();
    assert_eq!(edit_tokens(&model, vec![true; n], &input, 3), plain);

    // The right half editable: the left half is the input's; the right half is drawn (and, on a
    // random model, differs from the input somewhere).
    let grid = model.grid_size();
    let marks = image::GrayImage::from_fn(img.width(), img.height(), |x, _| {
        image::Luma([if x >= img.width() / 2 { 255 } else { 0 }])
    });
    let editable = editable_grid(&marks, grid);
    for out in edit_tokens(&model, editable.clone(), &input, 5) {
        for (i, (&t, &e)) in out.iter().zip(&editable).enumerate() {
            if !e {
                assert_eq!(t, input[i], "token {i} is kept");
            }
        }
        assert!(out.iter().zip(&input).zip(&editable).any(|((a, b), &e)| e && a != b), "something was drawn");
    }
}
