//! Every request limit and default, defined once. The library validates with them
//! ([`crate::request`]); the HTTP layer, the CLI's clap defaults and the evals read them from
//! here.

/// The reference's classifier-free guidance weight (`generation_inference.py`).
pub const DEFAULT_CFG_WEIGHT: f32 = 5.0;
/// Largest CFG weight accepted.
pub const MAX_CFG_WEIGHT: f32 = 100.0;
/// The reference's image-token temperature.
pub const DEFAULT_IMAGE_TEMPERATURE: f32 = 1.0;
/// Largest image-token temperature accepted.
pub const MAX_IMAGE_TEMPERATURE: f32 = 10.0;
/// Text answers are greedy by default, as the reference's `do_sample=False`.
pub const DEFAULT_TEXT_TEMPERATURE: f32 = 0.0;
/// Largest text temperature accepted (OpenAI's limit).
pub const MAX_TEXT_TEMPERATURE: f32 = 2.0;
/// Temperatures below this are greedy: the argmax, which is what sampling tends to as the
/// temperature goes to 0, and logits / T could overflow to infinity below it (1e-40 would).
pub const GREEDY_BELOW_TEMPERATURE: f32 = 1e-5;

/// Longest image prompt in characters (OpenAI's GPT-image limit); tokens are checked against the
/// model's context as well.
pub const MAX_PROMPT_CHARS: usize = 32_000;
/// Most images one request asks for (`n`), and the default `--max-batch-images` (which may be
/// set up to 256, to batch more requests together; `n` stays at most this).
pub const MAX_IMAGES_PER_REQUEST: usize = 16;
/// Most images one `janus generate` run makes (one batch).
pub const MAX_IMAGES_PER_RUN: usize = 64;
/// Most previews per image while streaming (as OpenAI).
pub const MAX_PARTIAL_IMAGES: usize = 3;
/// Most images in one conversation (each takes 578 positions of the 4096-position context);
/// `--max-images-per-request`.
pub const MAX_CHAT_IMAGES: usize = 8;
/// Most messages in one conversation (OpenAI's limit); `--max-messages`.
pub const MAX_MESSAGES: usize = 2048;
/// Most characters in one message's text (every part together); `--max-message-chars`. Janus's
/// 4096-position context holds far fewer, so this only bounds the work of finding out.
pub const MAX_MESSAGE_CHARS: usize = 65_536;
/// Most characters of text in one request (the system prompt and every message);
/// `--max-request-chars`.
pub const MAX_REQUEST_CHARS: usize = 262_144;
/// Most pixels of one image in a request, read from its header before it is decoded (a 64
/// megapixel photo; 8192 × 8192); `--max-image-pixels`. No side may exceed 16384 pixels.
pub const DEFAULT_MAX_IMAGE_PIXELS: u64 = 64 * 1024 * 1024;
/// Text tokens generated when the request sets no limit (the reference's `max_new_tokens`;
/// fewer when the context is fuller).
pub const DEFAULT_MAX_NEW_TOKENS: usize = 512;
/// Most text answers the serving engine decodes together when `--max-text-sessions` is not given
/// (fewer when the memory budget holds fewer; see `engine/budget.rs`).
pub const MAX_TEXT_SESSIONS: usize = 16;
/// Prompt positions of shared prefixes (system prompts, conversations up to their last question)
/// whose keys and values a model keeps (`--prefix-cache-positions`; 0 turns prefix caching off):
/// the reference's system prompt (about 40 tokens with the released tokenizer) and two or three
/// conversations about an image (576 positions each).
pub const DEFAULT_PREFIX_CACHE_POSITIONS: usize = 2048;
/// Images decoded at once by the VQ decoder (`--decode-chunk`).
pub const DEFAULT_DECODE_CHUNK: usize = 4;
/// The question `janus describe` and `/v1/images/describe` ask when none is given.
pub const DEFAULT_QUESTION: &str = "Describe this image in detail.";

/// Most stop sequences one text request gives (OpenAI's limit).
pub const MAX_STOP_SEQUENCES: usize = 4;
/// Longest stop sequence, in characters (the hold-back while streaming is at most this).
pub const MAX_STOP_CHARS: usize = 256;
/// Most alternatives `top_logprobs` asks for at each token (OpenAI's limit).
pub const MAX_TOP_LOGPROBS: usize = 20;
/// Most answers one chat request asks for (`n`); they decode together.
pub const MAX_TEXT_ANSWERS: usize = 8;
/// `frequency_penalty` and `presence_penalty` lie in [-this, this] (OpenAI's range).
pub const MAX_OPENAI_PENALTY: f32 = 2.0;
/// `repetition_penalty` lies in (0, this] (1 is neutral, as transformers').
pub const MAX_REPETITION_PENALTY: f32 = 10.0;
/// Most tokens of the description a variation, or an edit without a mask, is drawn from (the
/// model's own answer to [`DEFAULT_QUESTION`], greedy).
pub const CAPTION_MAX_TOKENS: usize = 120;
