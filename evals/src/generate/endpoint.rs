//! [`Endpoint`]: an [`ImageBackend`] on one or several OpenAI-compatible
//! `POST /v1/images/generations` endpoints (replicas of one server, or a load balancer), with their
//! quirks (`n=1` only, `response_format` refused, `url` answers) and retries.
//!
//! Several endpoints: each request goes to the endpoint with the fewest requests in flight from
//! this process (ties in turn), among those not cooling down. A failure worth retrying
//! ([`EndpointError::retriable`]: no complete answer, 429, 502, 503, 504) cools that endpoint
//! down for the server's `Retry-After` (delta-seconds), else for the backoff (`base × 2^k`, capped),
//! and the request is sent again at once to another endpoint that is not cooling down, or, when
//! there is none, to the first one whose cooldown ends. A request's images are used only once it
//! has fully succeeded, so a retry never leaves half a prompt behind, and the seed travels with
//! the request, so whichever replica answers, the images are the same.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Result;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};

use super::backend::{sample_seed, ImageBackend};

/// The longest `Retry-After` honoured as given (longer values are cut to this).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// The parameter a server's error names as its cause (the envelope's `param`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Param {
    /// `n`: the server takes fewer images per request.
    N,
    /// `response_format`: the server refuses the field.
    ResponseFormat,
}

impl Param {
    /// The parameter an error's `param` names, when it is one the endpoint can adapt to.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "n" => Some(Param::N),
            "response_format" => Some(Param::ResponseFormat),
            _ => None,
        }
    }
}

/// The body of OpenAI's error envelope `{"error": {"message", "type", "param", "code"}}`, as
/// OpenAI and janus serve answer a refused request.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ApiError {
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// The request field the error is about, when it is about one.
    #[serde(default)]
    pub param: Option<String>,
    #[serde(default)]
    pub code: Option<Value>,
}

/// An error answer's JSON body: OpenAI's envelope, or the shapes other servers use (only their
/// text is kept).
#[derive(Deserialize)]
#[serde(untagged)]
enum ErrorBody {
    Envelope { error: ApiError },
    Text { error: String },
    Detail { detail: String },
    Bare(ApiError),
}

/// Why a request to an endpoint failed. Callers decide by the variant, the status and the
/// parsed error envelope, never by the text.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EndpointError {
    /// No complete answer: the connection was refused, reset or timed out, or the answer was cut
    /// off while being read.
    #[error("{url}: {detail}")]
    Transport { url: String, detail: String },
    /// An HTTP error status, with the server's message on one line.
    #[error("{url} answered {status}: {message}")]
    Status {
        url: String,
        status: u16,
        message: String,
        /// The server's `Retry-After`, when it gave one in seconds.
        retry_after: Option<Duration>,
        /// The error envelope, when the body was one (`{"error": {...}}`, or its fields bare).
        error: Option<Box<ApiError>>,
    },
    /// A 2xx answer that holds no usable images (not JSON, no `data`, an undecodable image, a
    /// `url` that fails to download).
    #[error("{url}: {detail}")]
    Answer { url: String, detail: String },
    /// The endpoint(s) answered the wrong number of images.
    #[error("{url} returned {got} image(s) for n={asked}")]
    Count { url: String, got: usize, asked: usize },
    /// A retriable failure, still there after every retry.
    #[error("{last} (gave up after {attempts} attempt(s))")]
    GaveUp { attempts: u32, last: Box<EndpointError> },
}

impl EndpointError {
    /// Whether sending the same request again (elsewhere, or later) may succeed: no complete
    /// answer, 429 (busy), 502/504 (a gateway lost or timed out on its upstream), 503 (loading,
    /// draining, out of memory).
    pub fn retriable(&self) -> bool {
        match self {
            EndpointError::Transport { .. } => true,
            EndpointError::Status { status, .. } => matches!(status, 429 | 502 | 503 | 504),
            _ => false,
        }
    }

    /// The HTTP status, if the server answered with an error status.
    pub fn status(&self) -> Option<u16> {
        match self {
            EndpointError::Status { status, .. } => Some(*status),
            EndpointError::GaveUp { last, .. } => last.status(),
            _ => None,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            EndpointError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The parameter a refusal (a 4xx other than 429) names in its envelope's `param`.
    fn about(&self) -> Option<Param> {
        match self {
            EndpointError::Status { status, error: Some(e), .. } if (400..500).contains(status) && *status != 429 => {
                e.param.as_deref().and_then(Param::from_name)
            }
            _ => None,
        }
    }
}

/// How failed requests are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub retries: u32,
    /// The first backoff; each further one doubles, up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { retries: 5, backoff: Duration::from_secs(1), max_backoff: Duration::from_secs(30) }
    }
}

impl RetryPolicy {
    /// The wait before retry `k` (0-based) when the server named none.
    pub fn backoff(&self, k: u32) -> Duration {
        self.backoff.saturating_mul(1u32 << k.min(16)).min(self.max_backoff)
    }
}

/// Requests and failures seen at one endpoint.
#[derive(Debug, Default, Clone)]
struct Traffic {
    requests: u64,
    ok: u64,
    /// Failures by kind: `transport`, or the status code.
    failed: BTreeMap<String, u64>,
}

/// One endpoint of the pool.
struct Replica {
    base: String,
    in_flight: AtomicUsize,
    /// Not chosen before this instant while another endpoint is available.
    cool_until: Mutex<Option<Instant>>,
    traffic: Mutex<Traffic>,
}

impl Replica {
    fn url(&self) -> String {
        format!("{}/v1/images/generations", self.base)
    }

    fn cooling_until(&self, now: Instant) -> Option<Instant> {
        self.cool_until.lock().unwrap_or_else(|e| e.into_inner()).filter(|t| *t > now)
    }

    fn cool_for(&self, wait: Duration) {
        let until = Instant::now() + wait;
        let mut slot = self.cool_until.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none_or(|t| t < until) {
            *slot = Some(until);
        }
    }

    fn record(&self, outcome: std::result::Result<(), &EndpointError>) {
        let mut t = self.traffic.lock().unwrap_or_else(|e| e.into_inner());
        t.requests += 1;
        match outcome {
            Ok(()) => t.ok += 1,
            Err(e) => {
                let kind = match e {
                    EndpointError::Transport { .. } => "transport".to_string(),
                    EndpointError::Status { status, .. } => status.to_string(),
                    _ => "answer".to_string(),
                };
                *t.failed.entry(kind).or_default() += 1;
            }
        }
    }
}

/// Holds a replica's in-flight count for the length of one request.
struct InFlight<'a>(&'a Replica);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One or several OpenAI-compatible `POST /v1/images/generations` endpoints (janus serve replicas,
/// a load balancer, OpenAI, ...).
pub struct Endpoint {
    replicas: Vec<Replica>,
    /// Where ties between equally busy endpoints start (turns round).
    turn: AtomicUsize,
    api_key: Option<String>,
    model: Option<String>,
    cfg: Option<f32>,
    temperature: Option<f32>,
    extensions: bool,
    agent: ureq::Agent,
    retry: RetryPolicy,
    /// Requests sent again after a retriable failure.
    retried: AtomicU64,
    /// The most images one request asks for (`--endpoint-max-n`); `None`: a prompt's samples at once.
    max_n: Option<usize>,
    /// Whether `response_format: b64_json` is sent at all (`--endpoint-no-response-format`).
    response_format: bool,
    /// Learned: the server answered 400 with `param: "n"`, so one image per request from now on.
    learned_single: AtomicBool,
    /// Learned: the server refused `response_format`, so it is no longer sent.
    learned_no_response_format: AtomicBool,
    /// The models that answered (the response's `model`, else the requested one).
    served_models: Mutex<BTreeSet<String>>,
}

/// An error answer's message and envelope (`None`s when the body is not JSON of a known shape).
fn parse_error(text: &str) -> (Option<String>, Option<ApiError>) {
    match serde_json::from_str::<ErrorBody>(text) {
        Ok(ErrorBody::Envelope { error }) | Ok(ErrorBody::Bare(error)) => (error.message.clone(), Some(error)),
        Ok(ErrorBody::Text { error }) => (Some(error), None),
        Ok(ErrorBody::Detail { detail }) => (Some(detail), None),
        Err(_) => (None, None),
    }
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

/// `Retry-After` as delta-seconds (an HTTP-date counts as absent), at most [`MAX_RETRY_AFTER`].
fn retry_after(value: Option<&str>) -> Option<Duration> {
    let secs: u64 = value?.trim().parse().ok()?;
    Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER))
}

/// A server root: `http://host:port` (a trailing `/` or `/v1` is dropped).
fn server_root(base: &str) -> String {
    let base = base.trim().trim_end_matches('/');
    base.strip_suffix("/v1").unwrap_or(base).to_string()
}

impl Endpoint {
    /// One endpoint. `base` is the server root (`http://host:port`; a trailing `/v1` is accepted).
    /// Without `extensions` only OpenAI's own fields are sent (no seed, guidance_scale,
    /// temperature).
    pub fn new(
        base: &str,
        api_key: Option<String>,
        model: Option<String>,
        cfg: Option<f32>,
        temperature: Option<f32>,
        extensions: bool,
    ) -> Self {
        Self::pool(&[base], api_key, model, cfg, temperature, extensions)
    }

    /// Several endpoints serving the same model (replicas): requests are spread over them and
    /// retried on another one. Duplicates are dropped; `bases` must not be empty.
    pub fn pool<S: AsRef<str>>(
        bases: &[S],
        api_key: Option<String>,
        model: Option<String>,
        cfg: Option<f32>,
        temperature: Option<f32>,
        extensions: bool,
    ) -> Self {
        let mut seen = BTreeSet::new();
        let replicas: Vec<Replica> = bases
            .iter()
            .map(|b| server_root(b.as_ref()))
            .filter(|b| !b.is_empty() && seen.insert(b.clone()))
            .map(|base| Replica {
                base,
                in_flight: AtomicUsize::new(0),
                cool_until: Mutex::new(None),
                traffic: Mutex::new(Traffic::default()),
            })
            .collect();
        assert!(!replicas.is_empty(), "Endpoint::pool needs at least one endpoint");
        Self {
            replicas,
            turn: AtomicUsize::new(0),
            api_key,
            model,
            cfg,
            temperature,
            extensions,
            agent: Self::agent(Duration::from_secs(900)),
            retry: RetryPolicy::default(),
            retried: AtomicU64::new(0),
            max_n: None,
            response_format: true,
            learned_single: AtomicBool::new(false),
            learned_no_response_format: AtomicBool::new(false),
            served_models: Mutex::new(BTreeSet::new()),
        }
    }

    fn agent(timeout: Duration) -> ureq::Agent {
        ureq::Agent::config_builder().timeout_global(Some(timeout)).http_status_as_error(false).build().into()
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

    /// Retries of a request that failed in a retriable way (default 5).
    pub fn with_retries(mut self, retries: u32) -> Self {
        self.retry.retries = retries;
        self
    }

    /// The retry policy (count and backoff).
    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The longest a request (sending, generating, reading the answer) may take before it counts
    /// as a transport failure (default 900 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.agent = Self::agent(timeout);
        self
    }

    /// The generation URL of the first endpoint.
    pub fn url(&self) -> String {
        self.replicas[0].url()
    }

    /// Every endpoint's generation URL, in the order given.
    pub fn urls(&self) -> Vec<String> {
        self.replicas.iter().map(Replica::url).collect()
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

    /// The endpoint for the next attempt: the least busy of those not cooling down (ties in turn),
    /// `avoid` (the one that just failed) only when no other is available; when every endpoint is
    /// cooling down, waits for the first to come back.
    fn choose(&self, avoid: Option<usize>) -> InFlight<'_> {
        loop {
            let now = Instant::now();
            let n = self.replicas.len();
            let start = self.turn.fetch_add(1, Ordering::Relaxed) % n;
            let mut best: Option<(bool, usize, usize)> = None; // (is avoided, in flight, index)
            let mut soonest: Option<Instant> = None;
            for k in 0..n {
                let i = (start + k) % n;
                let r = &self.replicas[i];
                if let Some(t) = r.cooling_until(now) {
                    soonest = Some(soonest.map_or(t, |s| s.min(t)));
                    continue;
                }
                let key = (avoid == Some(i), r.in_flight.load(Ordering::Relaxed), i);
                if best.is_none_or(|b| (key.0, key.1) < (b.0, b.1)) {
                    best = Some(key);
                }
            }
            if let Some((_, _, i)) = best {
                let r = &self.replicas[i];
                r.in_flight.fetch_add(1, Ordering::Relaxed);
                return InFlight(r);
            }
            let wake = soonest.unwrap_or(now);
            std::thread::sleep(wake.saturating_duration_since(now).max(Duration::from_millis(1)));
        }
    }

    fn index_of(&self, r: &Replica) -> usize {
        self.replicas.iter().position(|x| std::ptr::eq(x, r)).unwrap_or(0)
    }

    /// One attempt at one endpoint: the answer's text, or why there is none.
    fn post_once(&self, r: &Replica, body: &str) -> std::result::Result<String, EndpointError> {
        let url = r.url();
        let transport = |detail: String| EndpointError::Transport { url: url.clone(), detail };
        let mut req = self.agent.post(&url).header("content-type", "application/json");
        if let Some(k) = &self.api_key {
            req = req.header("authorization", format!("Bearer {k}"));
        }
        let mut resp = req.send(body).map_err(|e| transport(e.to_string()))?;
        let status = resp.status().as_u16();
        let retry_after = retry_after(resp.headers().get("retry-after").and_then(|v| v.to_str().ok()));
        let text = resp
            .body_mut()
            .with_config()
            .limit(512 << 20)
            .read_to_string()
            .map_err(|e| transport(format!("reading the answer: {e}")))?;
        if (200..300).contains(&status) {
            return Ok(text);
        }
        let (message, error) = parse_error(&text);
        Err(EndpointError::Status {
            url,
            status,
            message: one_line(message.as_deref().unwrap_or(&text), 300),
            retry_after,
            error: error.map(Box::new),
        })
    }

    /// One request for `n` images, retried (elsewhere when possible) on retriable failures.
    fn request(&self, prompt: &str, n: usize, seed: u64) -> std::result::Result<Vec<Vec<u8>>, EndpointError> {
        let body = self.body(prompt, n, seed).to_string();
        let mut attempt = 0;
        let mut avoid = None;
        loop {
            let held = self.choose(avoid);
            let r = held.0;
            let result = self.post_once(r, &body).and_then(|text| self.images(r, &text));
            drop(held);
            r.record(result.as_ref().map(|_| ()));
            match result {
                Ok(images) => return Ok(images),
                Err(e) if e.retriable() => {
                    let wait = e.retry_after().unwrap_or_else(|| self.retry.backoff(attempt));
                    r.cool_for(wait);
                    if attempt >= self.retry.retries {
                        return Err(EndpointError::GaveUp { attempts: attempt + 1, last: Box::new(e) });
                    }
                    attempt += 1;
                    self.retried.fetch_add(1, Ordering::Relaxed);
                    let i = self.index_of(r);
                    let elsewhere = self.replicas.len() > 1;
                    eprintln!(
                        "{e}; retrying ({attempt}/{}){}",
                        self.retry.retries,
                        if elsewhere {
                            " on another endpoint if one is up".to_string()
                        } else {
                            format!(" in {wait:.1?}")
                        }
                    );
                    avoid = Some(i);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The PNGs of a 2xx answer; records the model that answered.
    fn images(&self, r: &Replica, text: &str) -> std::result::Result<Vec<Vec<u8>>, EndpointError> {
        let bad = |detail: String| EndpointError::Answer { url: r.url(), detail };
        let v: Value = serde_json::from_str(text).map_err(|_| bad("the answer is not JSON".into()))?;
        let data = v["data"].as_array().ok_or_else(|| bad("the answer has no `data` list".into()))?;
        let images = data.iter().map(|d| self.image(d).map_err(&bad)).collect::<std::result::Result<Vec<_>, _>>()?;
        let served = v["model"].as_str().map(String::from).or_else(|| self.model.clone());
        if let Some(m) = served {
            self.served_models.lock().unwrap_or_else(|e| e.into_inner()).insert(m);
        }
        Ok(images)
    }

    /// The PNG bytes of one `data` entry: `b64_json`, or `url` downloaded (`data:` URLs decoded).
    fn image(&self, d: &Value) -> std::result::Result<Vec<u8>, String> {
        let b64 = |s: &str, what: &str| {
            base64::engine::general_purpose::STANDARD.decode(s).map_err(|e| format!("bad base64 in {what}: {e}"))
        };
        if let Some(s) = d["b64_json"].as_str() {
            return to_png(b64(s, "`b64_json`")?);
        }
        let url = d["url"].as_str().ok_or("an image with neither `b64_json` nor `url`")?;
        if let Some(rest) = url.strip_prefix("data:") {
            let (_, s) = rest.split_once(";base64,").ok_or("a `data:` url that is not base64")?;
            return to_png(b64(s, "a `data:` url")?);
        }
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!("an image url that is neither http(s) nor data: {}", one_line(url, 100)));
        }
        let short = one_line(url.split('?').next().unwrap_or(url), 100);
        let mut resp = self.agent.get(url).call().map_err(|e| format!("downloading {short}: {e}"))?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            return Err(format!("downloading {short}: answered {status}"));
        }
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(256 << 20)
            .read_to_vec()
            .map_err(|e| format!("downloading {short}: {e}"))?;
        to_png(bytes)
    }

    /// Requests and retries so far: `{"requests", "retries", "endpoints": {url: {requests, ok,
    /// failed: {kind: count}}}}`.
    pub fn traffic_report(&self) -> Value {
        let mut endpoints = serde_json::Map::new();
        let mut total = 0;
        for r in &self.replicas {
            let t = r.traffic.lock().unwrap_or_else(|e| e.into_inner()).clone();
            total += t.requests;
            endpoints.insert(r.url(), json!({ "requests": t.requests, "ok": t.ok, "failed": t.failed }));
        }
        json!({ "requests": total, "retries": self.retried.load(Ordering::Relaxed), "endpoints": endpoints })
    }
}

/// PNG bytes as they are, anything else the image crate reads converted to PNG.
fn to_png(bytes: Vec<u8>) -> std::result::Result<Vec<u8>, String> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        return Ok(bytes);
    }
    let img = image::load_from_memory(&bytes)
        .map_err(|e| format!("the endpoint returned an image that cannot be decoded: {e}"))?;
    janus::input::image::png_bytes(&img.to_rgb8()).map_err(|e| e.to_string())
}

impl ImageBackend for Endpoint {
    /// `n` images, in requests of at most [`Endpoint::with_max_n`] images; a 400 whose envelope
    /// names `param: "n"` turns to one image per request, one naming `response_format` drops the
    /// field, for this prompt and the rest of the run (a refusal without `param` is an error).
    /// Errors are [`EndpointError`]s.
    fn generate(&self, prompt: &str, n: usize, seed: u64) -> Result<Vec<Vec<u8>>> {
        let mut images = Vec::with_capacity(n);
        while images.len() < n {
            let i = images.len();
            let k = (n - i).min(self.per_request());
            match self.request(prompt, k, sample_seed(seed, i)) {
                Ok(got) if got.len() == k => images.extend(got),
                Ok(got) => return Err(EndpointError::Count { url: self.url(), got: got.len(), asked: k }.into()),
                Err(e) if e.about() == Some(Param::N) && k > 1 => {
                    if !self.learned_single.swap(true, Ordering::Relaxed) {
                        eprintln!("{e}; asking one image per request from now on");
                    }
                }
                Err(e) if e.about() == Some(Param::ResponseFormat) && self.sends_response_format() => {
                    if !self.learned_no_response_format.swap(true, Ordering::Relaxed) {
                        eprintln!("{e}; no longer sending response_format");
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(images)
    }

    fn describe(&self) -> Value {
        let mut d = json!({
            "kind": "endpoint",
            "endpoint": self.urls().join(", "),
            "model": self.model,
            "extensions": self.extensions,
            "guidance_scale": self.cfg,
            "temperature": self.temperature,
            "max_n": self.max_n,
            "response_format": if self.response_format { "b64_json" } else { "omitted" },
            "seed_policy": "a prompt split into several requests seeds the request starting at sample i with seed + i * 0x9E3779B97F4A7C15 (wrapping; sample 0 keeps the seed)",
        });
        if self.replicas.len() > 1 {
            let mut all = self.urls();
            all.sort();
            d["endpoint"] = json!(all.join(", "));
            d["endpoints"] = json!(all);
        }
        d
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

    fn traffic(&self) -> Value {
        self.traffic_report()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(status: u16, body: &str) -> EndpointError {
        let (message, error) = parse_error(body);
        EndpointError::Status {
            url: "u".into(),
            status,
            message: message.unwrap_or_else(|| body.into()),
            retry_after: None,
            error: error.map(Box::new),
        }
    }

    #[test]
    fn the_envelope_param_decides_and_the_message_does_not() {
        let openai =
            r#"{"error": {"message": "Invalid 'n'.", "type": "invalid_request_error", "param": "n", "code": null}}"#;
        assert_eq!(refusal(400, openai).about(), Some(Param::N));
        let rf =
            r#"{"error": {"message": "Unknown parameter.", "param": "response_format", "code": "unknown_parameter"}}"#;
        assert_eq!(refusal(400, rf).about(), Some(Param::ResponseFormat));
        // bare fields (no `error` wrapper) are an envelope too
        assert_eq!(refusal(400, r#"{"message": "m", "param": "n"}"#).about(), Some(Param::N));
        // a message that names `n` without `param` is not about `n`
        let e = refusal(400, r#"{"error": {"message": "n must be 1", "param": null}}"#);
        assert_eq!((e.about(), e.to_string()), (None, "u answered 400: n must be 1".to_string()));
        assert_eq!(refusal(400, r#"{"error": "n must be 1"}"#).about(), None);
        assert_eq!(refusal(400, r#"{"detail": "n must be 1"}"#).to_string(), "u answered 400: n must be 1");
        // other params, statuses and bodies name nothing
        assert_eq!(refusal(400, r#"{"error": {"message": "m", "param": "size"}}"#).about(), None);
        assert_eq!(refusal(429, openai).about(), None);
        assert_eq!(refusal(500, openai).about(), None);
        assert_eq!(refusal(400, "<html>n</html>").about(), None);
    }
}
