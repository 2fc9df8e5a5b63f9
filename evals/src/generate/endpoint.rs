//! [`Endpoint`]: an [`ImageBackend`] on an OpenAI-compatible `POST /v1/images/generations`
//! endpoint, with its quirks (`n=1` only, `response_format` refused, `url` answers, retries).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine as _;
use serde_json::{json, Value};

use super::backend::{sample_seed, ImageBackend};

/// An OpenAI-compatible `POST /v1/images/generations` endpoint (janus serve, OpenAI, ...).
pub struct Endpoint {
    base: String,
    api_key: Option<String>,
    model: Option<String>,
    cfg: Option<f32>,
    temperature: Option<f32>,
    extensions: bool,
    agent: ureq::Agent,
    retries: u32,
    /// The most images one request asks for (`--endpoint-max-n`); `None`: a prompt's samples at once.
    max_n: Option<usize>,
    /// Whether `response_format: b64_json` is sent at all (`--endpoint-no-response-format`).
    response_format: bool,
    /// Learned: the server answered 400 about `n`, so one image per request from now on.
    learned_single: AtomicBool,
    /// Learned: the server refused `response_format`, so it is no longer sent.
    learned_no_response_format: AtomicBool,
    /// The models that answered (the response's `model`, else the requested one).
    served_models: Mutex<BTreeSet<String>>,
}

/// Why a request failed.
enum Failure {
    /// A 4xx about `n` (the server takes fewer images per request).
    N(String),
    /// A 4xx about `response_format` (the server refuses the field).
    ResponseFormat(String),
    /// Anything else; `true` when worth retrying (429, 5xx, transport).
    Other(bool, String),
}

/// The `error.message` and `error.param` of an OpenAI error envelope (also accepts a plain
/// `{"message"}` or `{"error": "text"}`).
fn error_fields(text: &str) -> (Option<String>, Option<String>) {
    let Ok(v) = serde_json::from_str::<Value>(text) else { return (None, None) };
    let e = if v["error"].is_null() { &v } else { &v["error"] };
    let message = e["message"].as_str().or(e.as_str()).or(v["detail"].as_str()).map(String::from);
    (message, e["param"].as_str().map(String::from))
}

/// Whether `text` names the parameter `word` as a whole token (`'n'`, `` `n` ``, `n must`, ...).
fn mentions(text: &str, word: &str) -> bool {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).any(|t| t == word)
}

/// One line: whitespace collapsed, at most `max` characters.
fn one_line(text: &str, max: usize) -> String {
    let s = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if s.chars().count() > max {
        format!("{}…", s.chars().take(max).collect::<String>())
    } else {
        s
    }
}

impl Endpoint {
    /// `base` is the server root (`http://host:port`; a trailing `/v1` is accepted). Without
    /// `extensions` only OpenAI's own fields are sent (no seed, guidance_scale, temperature).
    pub fn new(
        base: &str,
        api_key: Option<String>,
        model: Option<String>,
        cfg: Option<f32>,
        temperature: Option<f32>,
        extensions: bool,
    ) -> Self {
        let base = base.trim_end_matches('/');
        let base = base.strip_suffix("/v1").unwrap_or(base).to_string();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(900)))
            .http_status_as_error(false)
            .build()
            .into();
        Self {
            base,
            api_key,
            model,
            cfg,
            temperature,
            extensions,
            agent,
            retries: 3,
            max_n: None,
            response_format: true,
            learned_single: AtomicBool::new(false),
            learned_no_response_format: AtomicBool::new(false),
            served_models: Mutex::new(BTreeSet::new()),
        }
    }

    /// At most `n` images per request (DALL·E 3 takes 1): a prompt's samples are split into
    /// several requests, sample `i` of a prompt seeded with [`sample_seed`]`(seed, i)`.
    pub fn with_max_n(mut self, n: Option<usize>) -> Self {
        self.max_n = n.map(|n| n.max(1));
        self
    }

    /// Whether to send `response_format: b64_json` (gpt-image-1 refuses the field and always
    /// answers with `b64_json`).
    pub fn with_response_format(mut self, send: bool) -> Self {
        self.response_format = send;
        self
    }

    /// Retries of a request answered 429, 5xx or not at all (default 3, backing off 2, 4, 8 s).
    pub fn with_retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    pub fn url(&self) -> String {
        format!("{}/v1/images/generations", self.base)
    }

    fn sends_response_format(&self) -> bool {
        self.response_format && !self.learned_no_response_format.load(Ordering::Relaxed)
    }

    /// The most images the next request may ask for.
    fn per_request(&self) -> usize {
        if self.learned_single.load(Ordering::Relaxed) {
            1
        } else {
            self.max_n.unwrap_or(usize::MAX)
        }
    }

    /// The request body for `n` images of a prompt.
    pub fn body(&self, prompt: &str, n: usize, seed: u64) -> Value {
        let mut b = json!({ "prompt": prompt, "n": n });
        if self.sends_response_format() {
            b["response_format"] = json!("b64_json");
        }
        if let Some(m) = &self.model {
            b["model"] = json!(m);
        }
        if self.extensions {
            b["seed"] = json!(seed);
            if let Some(c) = self.cfg {
                b["guidance_scale"] = json!(c);
            }
            if let Some(t) = self.temperature {
                b["temperature"] = json!(t);
            }
        }
        b
    }

    fn post_once(&self, body: &str) -> std::result::Result<String, Failure> {
        let mut req = self.agent.post(self.url()).header("content-type", "application/json");
        if let Some(k) = &self.api_key {
            req = req.header("authorization", format!("Bearer {k}"));
        }
        let mut resp = req.send(body).map_err(|e| Failure::Other(true, format!("{}: {e}", self.url())))?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .with_config()
            .limit(512 << 20)
            .read_to_string()
            .map_err(|e| Failure::Other(true, format!("{}: reading the answer: {e}", self.url())))?;
        if (200..300).contains(&status) {
            return Ok(text);
        }
        let (message, param) = error_fields(&text);
        let msg = format!("{} answered {status}: {}", self.url(), one_line(message.as_deref().unwrap_or(&text), 300));
        if (400..500).contains(&status) && status != 429 {
            let about =
                |word: &str| param.as_deref() == Some(word) || message.as_deref().is_some_and(|m| mentions(m, word));
            if about("response_format") {
                return Err(Failure::ResponseFormat(msg));
            }
            if about("n") {
                return Err(Failure::N(msg));
            }
        }
        Err(Failure::Other(status == 429 || status >= 500, msg))
    }

    /// One request for `n` images, retried on 429/5xx/transport errors.
    fn request(&self, prompt: &str, n: usize, seed: u64) -> std::result::Result<Vec<Vec<u8>>, Failure> {
        let body = self.body(prompt, n, seed).to_string();
        let mut attempt = 0;
        let text = loop {
            match self.post_once(&body) {
                Ok(t) => break t,
                Err(Failure::Other(true, msg)) if attempt < self.retries => {
                    attempt += 1;
                    eprintln!("{msg}; retrying ({attempt}/{})", self.retries);
                    std::thread::sleep(Duration::from_secs(2u64.pow(attempt)));
                }
                Err(f) => return Err(f),
            }
        };
        let fatal = |e: anyhow::Error| Failure::Other(false, format!("{}: {e:#}", self.url()));
        let v: Value = serde_json::from_str(&text).map_err(|_| fatal(anyhow!("the answer is not JSON")))?;
        let data = v["data"].as_array().ok_or_else(|| fatal(anyhow!("the answer has no `data` list")))?;
        let served = v["model"].as_str().map(String::from).or_else(|| self.model.clone());
        if let Some(m) = served {
            self.served_models.lock().unwrap_or_else(|e| e.into_inner()).insert(m);
        }
        data.iter().map(|d| self.image(d).map_err(fatal)).collect()
    }

    /// The PNG bytes of one `data` entry: `b64_json`, or `url` downloaded (`data:` URLs decoded).
    fn image(&self, d: &Value) -> Result<Vec<u8>> {
        if let Some(b64) = d["b64_json"].as_str() {
            return to_png(base64::engine::general_purpose::STANDARD.decode(b64).context("bad base64 in `b64_json`")?);
        }
        let url = d["url"].as_str().ok_or_else(|| anyhow!("an image with neither `b64_json` nor `url`"))?;
        if let Some(rest) = url.strip_prefix("data:") {
            let (_, b64) = rest.split_once(";base64,").ok_or_else(|| anyhow!("a `data:` url that is not base64"))?;
            return to_png(
                base64::engine::general_purpose::STANDARD.decode(b64).context("bad base64 in a `data:` url")?,
            );
        }
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            bail!("an image url that is neither http(s) nor data: {}", one_line(url, 100));
        }
        let short = one_line(url.split('?').next().unwrap_or(url), 100);
        let mut resp = self.agent.get(url).call().map_err(|e| anyhow!("downloading {short}: {e}"))?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            bail!("downloading {short}: answered {status}");
        }
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(256 << 20)
            .read_to_vec()
            .map_err(|e| anyhow!("downloading {short}: {e}"))?;
        to_png(bytes)
    }
}

/// PNG bytes as they are, anything else the image crate reads converted to PNG.
fn to_png(bytes: Vec<u8>) -> Result<Vec<u8>> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        return Ok(bytes);
    }
    let img = image::load_from_memory(&bytes).context("the endpoint returned an image that cannot be decoded")?;
    Ok(janus::image::png_bytes(&img.to_rgb8())?)
}

impl ImageBackend for Endpoint {
    /// `n` images, in requests of at most [`Endpoint::with_max_n`] images; a 400 about `n` turns
    /// to one image per request, a 400 about `response_format` drops the field, for this prompt
    /// and the rest of the run.
    fn generate(&self, prompt: &str, n: usize, seed: u64) -> Result<Vec<Vec<u8>>> {
        let mut images = Vec::with_capacity(n);
        while images.len() < n {
            let i = images.len();
            let k = (n - i).min(self.per_request());
            match self.request(prompt, k, sample_seed(seed, i)) {
                Ok(got) if got.len() == k => images.extend(got),
                Ok(got) => bail!("{} returned {} image(s) for n={k}", self.url(), got.len()),
                Err(Failure::N(msg)) if k > 1 => {
                    if !self.learned_single.swap(true, Ordering::Relaxed) {
                        eprintln!("{msg}; asking one image per request from now on");
                    }
                }
                Err(Failure::ResponseFormat(msg)) if self.sends_response_format() => {
                    if !self.learned_no_response_format.swap(true, Ordering::Relaxed) {
                        eprintln!("{msg}; no longer sending response_format");
                    }
                }
                Err(Failure::N(msg) | Failure::ResponseFormat(msg) | Failure::Other(_, msg)) => bail!(msg),
            }
        }
        Ok(images)
    }

    fn describe(&self) -> Value {
        json!({
            "kind": "endpoint",
            "endpoint": self.url(),
            "model": self.model,
            "extensions": self.extensions,
            "guidance_scale": self.cfg,
            "temperature": self.temperature,
            "max_n": self.max_n,
            "response_format": if self.response_format { "b64_json" } else { "omitted" },
            "seed_policy": "a prompt split into several requests seeds the request starting at sample i with seed + i * 0x9E3779B97F4A7C15 (wrapping; sample 0 keeps the seed)",
        })
    }

    fn served(&self) -> Value {
        let mut notes = Vec::new();
        if self.learned_single.load(Ordering::Relaxed) {
            notes.push("the server refused n > 1: one image per request");
        }
        if self.learned_no_response_format.load(Ordering::Relaxed) {
            notes.push("the server refused response_format: not sent");
        }
        let models = self.served_models.lock().unwrap_or_else(|e| e.into_inner()).clone();
        json!({ "models": models, "notes": notes })
    }
}
