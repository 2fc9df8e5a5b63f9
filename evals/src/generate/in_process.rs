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
    /// CFG weight and temperature, as given to every request.
    sampling: (f32, f32),
    decode_chunk: usize,
}

impl InProcess {
    pub fn open(
        model: &str,
        device: &str,
        dtype: Option<&str>,
        quant: janus::Quant,
        sampling: (f32, f32),
        decode_chunk: usize,
    ) -> Result<Self> {
        // Checked now, so a bad value fails before the model loads (and again per request).
        let (cfg_weight, temperature) = sampling;
        janus::SamplingParams { cfg_weight, temperature, ..Default::default() }.validate()?;
        let m = janus::Janus::open_parts(model, device, dtype, quant, janus::Parts::Generation)
            .with_context(|| format!("loading {model}"))?;
        Ok(Self { model: Mutex::new(m), model_id: model.to_string(), sampling, decode_chunk: decode_chunk.max(1) })
    }
}

impl ImageBackend for InProcess {
    fn generate(&self, prompt: &str, n: usize, seed: u64) -> Result<Vec<Vec<u8>>> {
        // The same validation as a request to `janus serve` or `janus generate`.
        let ask = janus::ImageAsk {
            prompt: prompt.to_string(),
            n: Some(n as i64),
            seed: Some(seed),
            cfg_weight: Some(self.sampling.0),
            temperature: Some(self.sampling.1),
            ..Default::default()
        };
        let req = ask.validate(janus::limits::MAX_IMAGES_PER_RUN)?;
        let m = self.model.lock().unwrap_or_else(|e| e.into_inner());
        let jobs = m.t2i_jobs(&req.prompt, req.n, req.seed, req.params)?;
        let tokens = m.generate_tokens(jobs, |_, _| {})?;
        let images = m.decode_images(&tokens, self.decode_chunk)?;
        images.iter().map(|img| Ok(janus::input::image::png_bytes(img)?)).collect()
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
