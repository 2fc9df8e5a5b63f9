//! Model-directory loading: both formats, and clear errors for broken checkpoints.

mod common;

use std::path::Path;

use candle_core::{Device, Tensor};
use common::*;
use janus::{CheckpointFormat, DType, Janus, LoadOptions, ModelFiles};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

fn load_err(dir: &Path) -> String {
    let files = match ModelFiles::from_dir(dir, "broken") {
        Ok(f) => f,
        Err(e) => return e.to_string(),
    };
    match Janus::load(&files, &LoadOptions::for_device(Device::Cpu)) {
        Ok(_) => panic!("loading {} should fail", dir.display()),
        Err(e) => e.to_string(),
    }
}

/// Rewrites shard 1 of the sharded tiny model through `edit`.
fn edit_shard(dir: &Path, edit: impl FnOnce(&mut std::collections::HashMap<String, Tensor>)) {
    let shard = dir.join("model-00001-of-00002.safetensors");
    let mut ts = candle_core::safetensors::load(&shard, &Device::Cpu).unwrap();
    edit(&mut ts);
    candle_core::safetensors::save(&ts, &shard).unwrap();
}

/// Tensors the model loads (the VQ encoder, SigLIP's attention pool and the codebook-usage
/// buffer are ignored).
fn is_loaded(name: &str) -> bool {
    ["language_model.", "gen_head.", "gen_embed.", "gen_aligner.", "gen_vision_model.decoder."]
        .iter()
        .any(|p| name.starts_with(p))
}

#[test]
fn detects_both_formats() {
    assert_eq!(load_tiny("janus-pro-tiny").format, CheckpointFormat::Original);
    assert_eq!(load_tiny("janus-pro-tiny-sharded").format, CheckpointFormat::Original);
    assert_eq!(load_tiny("janus-pro-tiny-hf").format, CheckpointFormat::Transformers);
    assert_eq!(load_tiny("janus-pro-tiny-hf-bin").format, CheckpointFormat::Transformers);
}

#[test]
fn both_formats_give_the_same_config() {
    let a = load_tiny("janus-pro-tiny");
    let b = load_tiny("janus-pro-tiny-hf");
    assert_eq!(a.cfg.llm, b.cfg.llm);
    assert_eq!(a.cfg.gen, b.cfg.gen);
    assert_eq!(a.cfg.gen_aligner, b.cfg.gen_aligner);
    assert_eq!(a.vq_cfg, b.vq_cfg);
    let grid = |m: &Janus| (m.num_image_tokens(), m.grid_size(), m.image_size());
    assert_eq!(grid(&a), grid(&b));
    assert_eq!(grid(&a), (64, 8, 32));
    assert_eq!(a.tokenizer.special, b.tokenizer.special);
}

#[test]
fn missing_tensor_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&tiny_dir("janus-pro-tiny-sharded"), tmp.path());
    let mut removed = String::new();
    edit_shard(tmp.path(), |ts| {
        removed = ts.keys().filter(|k| is_loaded(k)).min().expect("a loaded tensor in shard 1").clone();
        ts.remove(&removed);
    });
    let e = load_err(tmp.path());
    assert!(e.contains(&removed) && e.contains("missing"), "{e}");
}

#[test]
fn wrong_shape_names_tensor_file_and_shapes() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&tiny_dir("janus-pro-tiny-sharded"), tmp.path());
    let mut name = String::new();
    edit_shard(tmp.path(), |ts| {
        name = ts
            .iter()
            .filter(|(k, t)| is_loaded(k) && t.rank() == 2)
            .map(|(k, _)| k.clone())
            .min()
            .expect("a loaded matrix in shard 1");
        ts.insert(name.clone(), Tensor::zeros((3, 5), DType::F32, &Device::Cpu).unwrap());
    });
    let e = load_err(tmp.path());
    assert!(e.contains(&name) && e.contains("[3, 5]") && e.contains("model-00001-of-00002"), "{e}");
}

/// Only SigLIP's `pos_embed` may differ from the expected shape by a size-1 axis (it is `[N, C]`
/// in the transformers format); any other tensor with an extra size-1 axis is refused, naming
/// the file, the tensor and both shapes.
#[test]
fn extra_size_one_axis_is_refused() {
    for (at, name) in [
        (1, "gen_head.vision_head.weight"),
        (0, "language_model.model.norm.weight"),
        (1, "gen_vision_model.decoder.conv_out.bias"),
        (0, "vision_model.vision_tower.patch_embed.proj.weight"),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        copy_dir(&tiny_dir("janus-pro-tiny-sharded"), tmp.path());
        let (file, found) = edit_tensor(tmp.path(), name, |t| t.unsqueeze(at).unwrap());
        let mut expected = found.clone();
        expected.remove(at);
        let names = |e: &str| {
            e.contains(name)
                && e.contains(&file)
                && e.contains(&format!("{found:?}"))
                && e.contains(&format!("{expected:?}"))
        };
        // The checkpoint refuses the tensor, as a weights error...
        let files = ModelFiles::from_dir(tmp.path(), "broken").unwrap();
        let ckpt = janus::load::checkpoint::Checkpoint::open(&files.weights).unwrap();
        let err = ckpt.load(name, &candle_core::Shape::from(expected.clone()), DType::F32, &Device::Cpu).unwrap_err();
        assert!(matches!(err, janus::Error::Weights(_)), "{name}: {err:?}");
        assert!(names(&err.to_string()), "{name}: {err}");
        // ...and so does loading the model.
        let e = load_err(tmp.path());
        assert!(names(&e), "{name}: {e}");
    }
}

/// Rewrites tensor `name` of the sharded tiny model through `edit`; returns the shard's file
/// name and the new shape.
fn edit_tensor(dir: &Path, name: &str, edit: impl FnOnce(&Tensor) -> Tensor) -> (String, Vec<usize>) {
    for shard in ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"] {
        let path = dir.join(shard);
        let mut ts = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
        if let Some(t) = ts.get(name) {
            let t = edit(t);
            let dims = t.dims().to_vec();
            ts.insert(name.to_string(), t);
            candle_core::safetensors::save(&ts, &path).unwrap();
            return (shard.to_string(), dims);
        }
    }
    panic!("{name} is in neither shard");
}

#[test]
fn transformers_pos_embed_has_no_batch_axis() {
    // The transformers checkpoint stores SigLIP's position embedding as [N, C]; it loads as the
    // original's [1, N, C], and gives the same vision features as the original checkpoint.
    let names =
        janus::load::checkpoint::Checkpoint::open(&[tiny_dir("janus-pro-tiny-hf").join("model.safetensors")]).unwrap();
    assert_eq!(names.shape_of("vision_model.vision_tower.pos_embed").unwrap().len(), 2);
    let (a, b) = (load_tiny("janus-pro-tiny-hf"), load_tiny("janus-pro-tiny-sharded"));
    let pixels = Tensor::ones((1, 3, 32, 32), DType::F32, &Device::Cpu).unwrap();
    let d = max_abs_diff(&a.vision_features(&pixels).unwrap(), &b.vision_features(&pixels).unwrap());
    assert!(d < 1e-5, "vision features differ by {d}");
}

#[test]
fn missing_shard_and_truncated_file_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&tiny_dir("janus-pro-tiny-sharded"), tmp.path());
    std::fs::remove_file(tmp.path().join("model-00002-of-00002.safetensors")).unwrap();
    let e = load_err(tmp.path());
    assert!(e.contains("model-00002-of-00002.safetensors"), "{e}");

    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&tiny_dir("janus-pro-tiny-sharded"), tmp.path());
    let shard = tmp.path().join("model-00002-of-00002.safetensors");
    let len = std::fs::metadata(&shard).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&shard).unwrap().set_len(len / 2).unwrap();
    let e = load_err(tmp.path());
    assert!(e.contains("model-00002-of-00002.safetensors"), "{e}");

    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&tiny_dir("janus-pro-tiny"), tmp.path());
    let bin = tmp.path().join("pytorch_model.bin");
    let len = std::fs::metadata(&bin).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&bin).unwrap().set_len(len / 2).unwrap();
    let e = load_err(tmp.path());
    assert!(e.contains("pytorch_model.bin"), "{e}");
}

#[test]
fn missing_files_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&tiny_dir("janus-pro-tiny"), tmp.path());
    std::fs::remove_file(tmp.path().join("tokenizer.json")).unwrap();
    assert!(load_err(tmp.path()).contains("tokenizer.json"));
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&tiny_dir("janus-pro-tiny"), tmp.path());
    std::fs::remove_file(tmp.path().join("pytorch_model.bin")).unwrap();
    assert!(load_err(tmp.path()).contains("no weights"));
}

#[test]
fn special_tokens_are_resolved_by_string() {
    // Janus-Pro-7B's tokenizer has 13 more added tokens ahead of pad than 1B's (pad 100015 vs
    // 100002). Mimic that: insert extra tokens before the specials, shifting their ids.
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&tiny_dir("janus-pro-tiny"), tmp.path());
    let path = tmp.path().join("tokenizer.json");
    let mut tok: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let added = tok["added_tokens"].as_array_mut().unwrap();
    let first = added[0]["id"].as_u64().unwrap();
    for t in added.iter_mut() {
        t["id"] = (t["id"].as_u64().unwrap() + 3).into();
    }
    for i in 0..3 {
        let mut extra = added[0].clone();
        extra["id"] = (first + i).into();
        extra["content"] = format!("<extra_{i}>").into();
        added.insert(i as usize, extra);
    }
    let pad_id = added.iter().find(|t| t["content"] == janus::input::tokenizer::PAD).unwrap()["id"].as_u64().unwrap();
    std::fs::write(&path, serde_json::to_string(&tok).unwrap()).unwrap();

    let shifted = janus::input::tokenizer::JanusTokenizer::from_file(&path).unwrap();
    let original = load_tiny("janus-pro-tiny").tokenizer;
    assert_eq!(shifted.special.pad as u64, pad_id);
    assert_eq!(shifted.special.pad, original.special.pad + 3);
    assert_eq!(shifted.special.begin_of_image, original.special.begin_of_image + 3);
    let cond = shifted.t2i_prompt_ids("a cat").unwrap();
    assert_eq!(cond[0], shifted.special.bos);
    assert_eq!(*cond.last().unwrap(), shifted.special.begin_of_image);
    let uncond = shifted.uncond_ids(&cond);
    assert!(uncond[1..uncond.len() - 1].iter().all(|&x| x == shifted.special.pad));
}

#[test]
fn bos_appears_once_without_a_post_processor() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("tokenizer.json");
    let mut tok: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tiny_dir("janus-pro-tiny").join("tokenizer.json")).unwrap())
            .unwrap();
    tok["post_processor"] = serde_json::Value::Null;
    std::fs::write(&path, serde_json::to_string(&tok).unwrap()).unwrap();
    let plain = janus::input::tokenizer::JanusTokenizer::from_file(&path).unwrap();
    let model = load_tiny("janus-pro-tiny");
    let a = plain.t2i_prompt_ids("a cat").unwrap();
    assert_eq!(a, model.tokenizer.t2i_prompt_ids("a cat").unwrap());
    assert_eq!(a.iter().filter(|&&x| x == plain.special.bos).count(), 1);
}

#[test]
fn tied_lm_head_falls_back_to_the_embeddings() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&tiny_dir("janus-pro-tiny-hf"), tmp.path());
    let file = tmp.path().join("model.safetensors");
    let mut ts = candle_core::safetensors::load(&file, &Device::Cpu).unwrap();
    let embed = ts["model.language_model.embed_tokens.weight"].clone();
    assert!(ts.remove("lm_head.weight").is_some());
    candle_core::safetensors::save(&ts, &file).unwrap();
    let files = ModelFiles::from_dir(tmp.path(), "tied").unwrap();
    let model = Janus::load(&files, &LoadOptions::for_device(Device::Cpu)).unwrap();
    let h = Tensor::ones((1, embed.dim(1).unwrap()), DType::F32, &Device::Cpu).unwrap();
    let want = h.matmul(&embed.t().unwrap()).unwrap();
    assert!(max_abs_diff(&model.llm().lm_logits(&h).unwrap(), &want) < 1e-5);
}

#[test]
fn f16_checkpoints_load() {
    // Rewrite the sharded checkpoint in f16 and load it as f32: same model within f16 rounding.
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&tiny_dir("janus-pro-tiny-sharded"), tmp.path());
    for shard in ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"] {
        let path = tmp.path().join(shard);
        let ts = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
        let half: std::collections::HashMap<String, Tensor> =
            ts.into_iter().map(|(k, v)| (k, v.to_dtype(DType::F16).unwrap())).collect();
        candle_core::safetensors::save(&half, &path).unwrap();
    }
    let files = ModelFiles::from_dir(tmp.path(), "f16").unwrap();
    assert_eq!(janus::load::checkpoint::Checkpoint::open(&files.weights).unwrap().stored_dtype(), DType::F16);
    let model = Janus::load(&files, &LoadOptions::for_device(Device::Cpu)).unwrap();
    let reference = load_tiny("janus-pro-tiny-sharded");
    let ids = Tensor::new(&[[1u32, 2, 3]], &Device::Cpu).unwrap();
    let d = max_abs_diff(&model.llm().embed(&ids).unwrap(), &reference.llm().embed(&ids).unwrap());
    assert!(d < 1e-2, "f16 embeddings differ by {d}");
}
