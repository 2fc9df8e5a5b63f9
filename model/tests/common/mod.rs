//! Shared helpers for tests on the tiny checkpoints in `assets/tiny/` and the goldens in
//! `assets/golden/` (made by `scripts/make-goldens.sh` with transformers' Janus).
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use janus::{DType, Device, Janus, LoadOptions, ModelFiles, Tensor};

/// The four on-disk variants of the same tiny weights.
pub const TINY_VARIANTS: [&str; 4] = [
    "janus-pro-tiny",         // original names, bf16 pytorch_model.bin
    "janus-pro-tiny-sharded", // original names, f32 safetensors shards + index
    "janus-pro-tiny-hf",      // transformers names, f32 model.safetensors
    "janus-pro-tiny-hf-bin",  // transformers names, f32 pickle shards + index
];

/// A smaller transformers-format checkpoint whose vision patch (8) differs from the VQ's
/// upsampling (2): its generation grid is 4×4 tokens, its images 8 pixels.
pub const GRID_VARIANT: &str = "janus-pro-tiny-grid-hf";

pub fn assets() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../assets")
}

pub fn tiny_dir(variant: &str) -> PathBuf {
    assets().join("tiny").join(variant)
}

pub fn load_tiny_with(variant: &str, dtype: DType) -> Janus {
    let dir = tiny_dir(variant);
    let files = ModelFiles::from_dir(&dir, variant).expect("tiny model files");
    let opts = LoadOptions {
        device: Device::Cpu,
        dtype,
        vq_dtype: DType::F32,
        quant: janus::Quant::None,
        parts: janus::Parts::All,
    };
    Janus::load(&files, &opts).unwrap_or_else(|e| panic!("loading {variant}: {e}"))
}

pub fn load_tiny(variant: &str) -> Janus {
    load_tiny_with(variant, DType::F32)
}

pub struct Golden {
    pub json: serde_json::Value,
    pub tensors: HashMap<String, Tensor>,
}

impl Golden {
    pub fn load(name: &str) -> Self {
        let dir = assets().join("golden");
        let json = std::fs::read_to_string(dir.join(format!("{name}.json"))).expect("golden json");
        let tensors = candle_core::safetensors::load(dir.join(format!("{name}.safetensors")), &Device::Cpu)
            .expect("golden tensors");
        Self { json: serde_json::from_str(&json).unwrap(), tensors }
    }

    pub fn t(&self, name: &str) -> &Tensor {
        self.tensors.get(name).unwrap_or_else(|| panic!("golden tensor {name} missing"))
    }
}

pub fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().expect("array").iter().map(|x| x.as_u64().expect("id") as u32).collect()
}

pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    a.to_dtype(DType::F32)
        .unwrap()
        .sub(&b.to_dtype(DType::F32).unwrap())
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}
