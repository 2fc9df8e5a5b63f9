//! [`InProcess`]: an [`ImageBackend`] on a Janus model loaded in this process.

use std::sync::Mutex;

use anyhow::{Context, Result};
use serde_json::{json, Value};

use super::backend::ImageBackend;

/// In-process generation on a loaded Janus model (one prompt at a time; its samples form one
/// CFG batch).
pub struct InProcess {
    model: Mutex<janus::Janus>,
    model_id: String,
    params: janus::SamplingParams,
    decode_chunk: usize,
}

impl InProcess {
    pub fn open(
        model: &str,
        device: &str,
        dtype: Option<&str>,
        quant: janus::Quant,
        params: janus::SamplingParams,
        decode_chunk: usize,
    ) -> Result<Self> {
        params.validate()?;
        let m = janus::Janus::open_parts(model, device, dtype, quant, janus::Parts::Generation)
            .with_context(|| format!("loading {model}"))?;
        Ok(Self { model: Mutex::new(m), model_id: model.to_string(), params, decode_chunk: decode_chunk.max(1) })
    }
}

impl ImageBackend for InProcess {
    fn generate(&self, prompt: &str, n: usize, seed: u64) -> Result<Vec<Vec<u8>>> {
        let m = self.model.lock().unwrap_or_else(|e| e.into_inner());
        let jobs = m.t2i_jobs(prompt, n, seed, self.params)?;
        let tokens = m.generate_tokens(jobs, |_, _| {})?;
        let images = m.decode_images(&tokens, self.decode_chunk)?;
        images.iter().map(|img| Ok(janus::image::png_bytes(img)?)).collect()
    }

    fn describe(&self) -> Value {
        let m = self.model.lock().unwrap_or_else(|e| e.into_inner());
        json!({
            "kind": "in-process",
            "model": self.model_id,
            "device": format!("{:?}", m.device()),
            "dtype": format!("{:?}", m.dtype()),
            "quant": m.quant().name(),
            "image_size": m.image_size(),
        })
    }
}
