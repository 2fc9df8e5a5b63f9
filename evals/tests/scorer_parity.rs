//! DETR and CLIP against transformers' outputs on the tiny random checkpoints in
//! `assets/tiny-eval/` (made by `scripts/make_eval_fixtures.sh`). Tiny-weight outputs mean
//! nothing; these tests check that the ports compute what transformers computes.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use janus_evals::clip::{self, Clip};
use janus_evals::detector::{self, Detr, COCO80_IDS};
use janus_evals::rules::{ColorClassifier, Colour, Detector};
use serde_json::Value;

fn assets() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/tiny-eval")
}

fn golden(name: &str) -> Value {
    serde_json::from_slice(&std::fs::read(assets().join(name)).unwrap()).unwrap()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let (i, d) = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs() / (1.0 + b.abs()))
        .enumerate()
        .fold((0, 0f32), |m, (i, d)| if d > m.1 { (i, d) } else { m });
    assert!(d <= tol, "{what}: max relative error {d} at {i} (got {}, want {})", got[i], want[i]);
}

fn image() -> image::RgbImage {
    image::open(assets().join("image.png")).unwrap().to_rgb8()
}

fn detr() -> Detr {
    Detr::open(assets().join("detr-tiny").to_str().unwrap(), &Device::Cpu).unwrap()
}

fn tiny_clip() -> Clip {
    Clip::open(assets().join("clip-tiny").to_str().unwrap(), &Device::Cpu).unwrap()
}

#[test]
fn detr_preprocessing_matches_the_image_processor() {
    let g = golden("detr.json");
    let px = detector::preprocess(&image(), &Device::Cpu).unwrap();
    let shape: Vec<usize> = g["pixel_shape"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
    assert_eq!(&px.dims()[1..], &shape[..]);
    let step = g["pixel_sample_step"].as_u64().unwrap() as usize;
    let sample: Vec<f32> = flat(&px).into_iter().step_by(step).collect();
    assert_close("pixel sample", &sample, &floats(&g["pixel_sample"]), 1e-5);
    // Means in f64: a long f32 sum drifts by ~1e-4.
    let all = flat(&px);
    let plane = all.len() / 3;
    let means: Vec<f32> = (0..3)
        .map(|c| (all[c * plane..(c + 1) * plane].iter().map(|&v| v as f64).sum::<f64>() / plane as f64) as f32)
        .collect();
    assert_close("pixel means", &means, &floats(&g["pixel_mean"]), 1e-5);
}

#[test]
fn detr_logits_boxes_and_detections_match_transformers() {
    let g = golden("detr.json");
    let d = detr();
    let px = detector::preprocess(&image(), &Device::Cpu).unwrap();
    let out = d.forward(&px).unwrap();
    assert_close("logits", &flat(&out.logits), &floats(&g["logits"]), 1e-4);
    assert_close("pred_boxes", &flat(&out.pred_boxes), &floats(&g["pred_boxes"]), 1e-4);

    // post_process_object_detection(threshold=0): one row per query, DETR label ids; ours
    // keeps the queries whose label is a COCO category, mapped to GenEval's class index.
    let img = image();
    let dets = d.try_detect(&img).unwrap();
    let want: Vec<&Value> = g["detections"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| COCO80_IDS.contains(&(r["label"].as_u64().unwrap() as usize)))
        .collect();
    assert_eq!(dets.len(), want.len());
    assert!(!dets.is_empty());
    let names = janus_evals::data::object_names();
    for (got, w) in dets.iter().zip(want) {
        let id = w["label"].as_u64().unwrap() as usize;
        let ci = COCO80_IDS.iter().position(|&x| x == id).unwrap();
        assert_eq!(got.class, ci, "label {id} → {}", names[ci]);
        assert!((got.score - w["score"].as_f64().unwrap() as f32).abs() < 1e-4);
        assert_close("box", &got.bbox, &floats(&w["box"]), 1e-4);
        assert!(got.mask.is_none());
    }
    assert_eq!(Detector::name(&d), format!("DETR ResNet-50 ({})", assets().join("detr-tiny").display()));
}

#[test]
fn geneval_names_follow_coco_ids_not_strings() {
    // DETR says "motorcycle"/"couch"/"tv"/"mouse"/"dining table"; GenEval's list is in COCO order.
    let names = janus_evals::data::object_names();
    let cfg = detector::DetrConfig::from_file(&assets().join("detr-tiny/config.json")).unwrap();
    let label = |ci: usize| cfg.id2label[&COCO80_IDS[ci].to_string()].clone();
    assert_eq!((names[0], label(0).as_str()), ("person", "person"));
    let i = names.iter().position(|n| *n == "computer mouse").unwrap();
    assert_eq!(label(i), "mouse");
    let i = names.iter().position(|n| *n == "toothbrush").unwrap();
    assert_eq!((i, label(i).as_str()), (79, "toothbrush"));
}

#[test]
fn detector_errors_are_one_clear_line() {
    let e = Detr::open("/nonexistent/detr", &Device::Cpu).err().unwrap().to_string();
    assert!(e.contains("no such directory"), "{e}");
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("config.json"), "{}").unwrap();
    std::fs::write(tmp.path().join("model.safetensors"), b"nope").unwrap();
    let e = format!("{:#}", Detr::open(tmp.path().to_str().unwrap(), &Device::Cpu).err().unwrap());
    assert!(e.contains("not a DETR config.json"), "{e}");
}

#[test]
fn clip_tokens_match_the_tokenizer() {
    let g = golden("clip.json");
    let c = tiny_clip();
    for (p, ids) in g["prompts"].as_array().unwrap().iter().zip(g["token_ids"].as_array().unwrap()) {
        let want: Vec<u32> = ids.as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        assert_eq!(c.tokenize(p.as_str().unwrap()).unwrap(), want, "{p}");
    }
}

#[test]
fn clip_text_embeddings_and_classifier_match_transformers() {
    let g = golden("clip.json");
    let c = tiny_clip();
    let prompts: Vec<String> =
        g["prompts"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_string()).collect();
    // The prompts are exactly the classifier's (colour order, three templates each).
    let class = g["class"].as_str().unwrap();
    let ours: Vec<String> = Colour::ALL.iter().flat_map(|col| col.clip_prompts(class)).collect();
    assert_eq!(ours, prompts);
    let t = c.text_features(&prompts).unwrap();
    let norm = t.sqr().unwrap().sum_keepdim(1).unwrap().sqrt().unwrap();
    let t = t.broadcast_div(&norm).unwrap();
    assert_close("text embeddings", &flat(&t), &floats(&g["text_embeds"]), 1e-4);
    let w = c.colour_classifier(class).unwrap();
    assert_close("classifier", &flat(&w), &floats(&g["classifier"]), 1e-4);
}

#[test]
fn clip_images_and_colours_match_transformers() {
    let g = golden("clip.json");
    let c = tiny_clip();
    let img = image();
    let crops: Vec<image::RgbImage> = g["crops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            let b: Vec<u32> = b.as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
            image::imageops::crop_imm(&img, b[0], b[1], b[2] - b[0], b[3] - b[1]).to_image()
        })
        .collect();
    let px: Vec<Tensor> = crops.iter().map(|cr| clip::preprocess(cr, 224, &Device::Cpu).unwrap()).collect();
    let px = Tensor::stack(&px, 0).unwrap();
    let step = g["pixel_sample_step"].as_u64().unwrap() as usize;
    let sample: Vec<f32> = flat(&px).into_iter().step_by(step).collect();
    assert_close("pixel sample", &sample, &floats(&g["pixel_sample"]), 1e-5);
    let e = c.image_features(&px).unwrap();
    let e = e.broadcast_div(&e.sqr().unwrap().sum_keepdim(1).unwrap().sqrt().unwrap()).unwrap();
    assert_close("image embeddings", &flat(&e), &floats(&g["image_embeds"]), 1e-4);
    let class = g["class"].as_str().unwrap();
    let logits = c.colour_logits(&crops, class).unwrap();
    assert_close("logits", &flat(&logits), &floats(&g["logits"]), 1e-3);
    let got: Vec<usize> = c.classify(&crops, class).iter().map(|col| *col as usize).collect();
    let want: Vec<usize> = g["argmax"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
    assert_eq!(got, want);
    assert!(c.take_error().is_none());
    // A degenerate crop does not panic.
    assert_eq!(c.classify(&[image::RgbImage::new(0, 5)], class).len(), 1);
}
