//! Image understanding: a conversation with images → text, token by token.
//!
//! Reference: deepseek-ai/Janus `janus/models/processing_vlm.py` (`VLChatProcessor`: the
//! "deepseek" template with the default system prompt, each `<image_placeholder>` expanded to
//! `<begin_of_image>` + one placeholder per image token + `<end_of_image>`),
//! `modeling_vlm.py` (`prepare_inputs_embeds`: image embeddings written over the placeholder
//! positions) and `inference.py` (greedy decoding, stop at EOS). Multi-turn conversations and
//! several images per conversation are supported.

use candle_core::Tensor;

use crate::error::{Error, Result};
use crate::input::tokenizer::DecodeStream;
use crate::model::Janus;
use crate::modules::llm::{LlmCache, PrefixKv};
use crate::request::TextParams;
use crate::sampling::logprobs::TokenLogprobs;
use crate::text::conversation::Conversation;
use crate::text::picker::Picker;
use crate::text::prefix_cache::{Found, PrefixKey};
use crate::text::prompt::{PreparedPrompt, TextRequest};
use crate::text::stop::StopStrings;

/// Why decoding stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// The model produced EOS, the answer met a stop sequence, or its constraint was complete.
    Stop,
    /// `max_new_tokens` was reached.
    Length,
    /// The token callback asked to stop (e.g. the client went away).
    Cancelled,
}

/// Answer positions a text session's KV cache grows by at a time (it starts with the prompt and
/// one chunk, not with the whole `max_tokens`).
pub const TEXT_CACHE_CHUNK: usize = 128;

/// Prompt positions a text session's prefill runs at a time, so that a long prompt (576 image
/// positions and more) never holds the engine for longer than one chunk.
pub const TEXT_PREFILL_CHUNK: usize = 256;

#[derive(Debug, Clone)]
pub struct TextOutput {
    pub text: String,
    /// Generated ids, without the final EOS.
    pub token_ids: Vec<u32>,
    pub prompt_tokens: usize,
    /// Prompt tokens whose keys and values came from the prefix cache.
    pub cached_tokens: usize,
    pub finish_reason: FinishReason,
}

impl Janus {
    /// Tokenizes the conversation, expands the image placeholders and preprocesses the images
    /// ([`crate::text::prompt::Prompter::prompt`]).
    pub fn prepare(&self, conv: &Conversation) -> Result<PreparedPrompt> {
        self.prompter().prompt(conv)
    }

    /// SigLIP features `[n, N, C]` (after the final norm) for normalised pixels `[n, 3, S, S]`
    /// (on any device).
    pub fn vision_features(&self, pixels: &Tensor) -> Result<Tensor> {
        self.vision()?.vit.forward(&pixels.to_device(self.device())?.to_dtype(self.dtype())?)
    }

    /// Image embeddings `[n, N, D]` for normalised pixels `[n, 3, S, S]` (on any device).
    pub fn encode_images(&self, pixels: &Tensor) -> Result<Tensor> {
        self.vision()?.forward(&pixels.to_device(self.device())?.to_dtype(self.dtype())?)
    }

    /// LM input embeddings `[1, L, D]`: token embeddings with the image embeddings written over
    /// the placeholder positions, in order.
    pub fn prompt_embeds(&self, prompt: &PreparedPrompt) -> Result<Tensor> {
        let images = match prompt.pixels.len() {
            0 => None,
            _ => Some(self.encode_images(&Tensor::stack(&prompt.pixels, 0)?)?),
        };
        self.prompt_embeds_with(prompt, images)
    }

    /// As [`Janus::prompt_embeds`], with the prompt's image embeddings `[n, N, D]` already
    /// encoded (several prompts' images encoded together: [`Janus::text_sessions`]).
    pub fn prompt_embeds_with(&self, prompt: &PreparedPrompt, images: Option<Tensor>) -> Result<Tensor> {
        let dev = self.device();
        let len = prompt.ids.len();
        let ids = Tensor::from_vec(prompt.ids.clone(), (1, len), dev)?;
        let text = self.llm.embed(&ids)?.squeeze(0)?;
        let Some(images) = images else {
            return Ok(text.unsqueeze(0)?);
        };
        let (n, s, d) = images.dims3()?;
        let images = images.reshape((n * s, d))?;
        let table = Tensor::cat(&[&text, &images], 0)?;
        let ph = self.tokenizer.special.image_placeholder;
        let mut next_image_row = len as u32;
        let index: Vec<u32> = prompt
            .ids
            .iter()
            .enumerate()
            .map(|(i, &t)| {
                if t == ph {
                    next_image_row += 1;
                    next_image_row - 1
                } else {
                    i as u32
                }
            })
            .collect();
        let index = Tensor::from_vec(index, len, dev)?;
        Ok(table.index_select(&index, 0)?.unsqueeze(0)?)
    }

    /// Answers the conversation, calling `on_text` with each new piece of text as it is decoded;
    /// `on_text` returns false to stop early.
    pub fn answer(
        &self,
        conv: &Conversation,
        params: &TextParams,
        mut on_text: impl FnMut(&str) -> bool,
    ) -> Result<TextOutput> {
        let mut session = TextSession::new(self, conv, params)?;
        while !session.is_done() {
            if let Some(piece) = session.step()? {
                if !on_text(&piece) {
                    session.cancel();
                }
            }
        }
        session.into_output()
    }
}

/// One answer being decoded, a token per [`TextSession::step`] (so a scheduler can interleave
/// it with other work).
pub struct TextSession<'m> {
    model: &'m Janus,
    cache: LlmCache,
    picker: Picker,
    /// The stop sequences, and the text held back while it could begin one.
    stop: StopStrings,
    /// The prompt's embeddings `[1, P, D]` until the first token is picked (the cache's length
    /// says how many of its positions are in).
    prompt: Option<Tensor>,
    /// The prompt's prefixes up to the end of each of its messages (ascending): its prefill
    /// chunks end where they end, and each is kept in the model's prefix cache once computed.
    prefixes: Vec<PrefixKey>,
    /// The keys and values of the longest of them found in the prefix cache, until the first
    /// prefill step copies them.
    reused: Option<PrefixKv>,
    /// Prompt positions copied from the prefix cache instead of computed.
    cached_tokens: usize,
    /// Prompt positions read per step.
    prefill_chunk: usize,
    /// LM input for the next step once the prompt is in: the last token's embedding (kept until
    /// the step that reads it succeeds, so that a failed step can be retried).
    next: Option<Tensor>,
    ids: Vec<u32>,
    /// The answer's text, decoded incrementally.
    detok: DecodeStream,
    /// The pieces `step` returned, together (the answer, without a stop sequence met).
    text: String,
    max_new: usize,
    prompt_tokens: usize,
    finish: Option<FinishReason>,
    /// The logits of every token picked, when asked for ([`TextSession::keep_logits`]).
    kept_logits: Option<Vec<Vec<f32>>>,
}

impl<'m> TextSession<'m> {
    /// Validates, tokenizes and embeds the conversation (the prefill runs on the first step).
    pub fn new(model: &'m Janus, conv: &Conversation, params: &TextParams) -> Result<Self> {
        let request = model.prompter().text_request(conv, params)?;
        // The same start as conversations arriving together.
        model.text_sessions(&[&request])?.pop().unwrap_or_else(|| Err(Error::InvalidInput("no session".into())))
    }

    /// A session for `request`, its prompt's embeddings `[1, L, D]` (those of the positions
    /// `cached` covers are not read), its prefixes' keys ([`PreparedPrompt::prefix_keys`]), and
    /// the longest of them found in the prefix cache (its length, keys and values).
    pub(crate) fn with_embeds(
        model: &'m Janus,
        request: &TextRequest,
        embeds: Tensor,
        prefixes: Vec<PrefixKey>,
        cached: Option<Found>,
    ) -> Result<Self> {
        let (prompt_tokens, max_new) = (request.prompt.ids.len(), request.max_new);
        let cache = LlmCache::new(
            &model.cfg.llm,
            vec![0],
            prompt_tokens + max_new.min(TEXT_CACHE_CHUNK),
            model.dtype(),
            model.device(),
        )?;
        Ok(Self {
            model,
            cache,
            picker: Picker::new(&request.params, &request.prompt.ids, request.constraint.clone()),
            stop: StopStrings::new(&request.params.stop),
            prompt: Some(embeds),
            prefixes,
            reused: cached.map(|(_, kv)| kv),
            cached_tokens: 0,
            prefill_chunk: TEXT_PREFILL_CHUNK,
            next: None,
            ids: Vec::new(),
            detok: DecodeStream::new(),
            text: String::new(),
            max_new,
            prompt_tokens,
            finish: None,
            kept_logits: None,
        })
    }

    pub fn prompt_tokens(&self) -> usize {
        self.prompt_tokens
    }

    /// Prompt tokens whose keys and values came from the prefix cache (OpenAI's
    /// `prompt_tokens_details.cached_tokens`).
    pub fn cached_tokens(&self) -> usize {
        self.cached_tokens
    }

    pub fn is_done(&self) -> bool {
        self.finish.is_some()
    }

    /// Tokens generated so far (without the final EOS).
    pub fn completion_tokens(&self) -> usize {
        self.ids.len()
    }

    /// Why decoding stopped (`Cancelled` while it has not).
    pub fn finish_reason(&self) -> FinishReason {
        self.finish.unwrap_or(FinishReason::Cancelled)
    }

    /// Stops decoding (the caller went away or asked to stop).
    pub fn cancel(&mut self) {
        self.finish.get_or_insert(FinishReason::Cancelled);
        self.prompt = None;
        self.next = None;
    }

    /// Reads the prompt `n` positions per step (default [`TEXT_PREFILL_CHUNK`]).
    pub fn set_prefill_chunk(&mut self, n: usize) {
        self.prefill_chunk = n.max(1);
    }

    /// Whether the next step is one token (the prompt is in the cache), so that it can share a
    /// batched step with other answers ([`Janus::step_texts`]).
    pub fn is_decoding(&self) -> bool {
        !self.is_prefilling() && self.next.is_some()
    }

    /// One step: the next prefill chunk ([`TEXT_PREFILL_CHUNK`] positions; the last one also
    /// picks the first token), or one token. Returns the new text it completes, if any (an
    /// incomplete UTF-8 sequence is held back until a later token completes it, and flushed at
    /// the end). The text is decoded incrementally ([`DecodeStream`]): a step decodes a window of
    /// a few tokens, not the whole answer.
    pub fn step(&mut self) -> Result<Option<String>> {
        if self.is_decoding() {
            // The same batched step as answers decoded together, so that an answer's numbers do
            // not depend on having batch mates.
            let model = self.model;
            return model.step_texts(&mut [self])?.pop().unwrap_or(Ok(None));
        }
        if !self.is_prefilling() {
            return Ok(None); // over
        }
        // The same prefill as answers reading their prompts together.
        let model = self.model;
        model.prefill_texts(&mut [self])?.pop().unwrap_or(Ok(None))
    }

    /// Whether the prompt is still being read (the next step is a prefill chunk).
    pub fn is_prefilling(&self) -> bool {
        self.prompt.is_some() && self.cache.len() < self.prompt_tokens
    }

    /// Positions in the cache: where a failed step rewinds to ([`TextSession::rewind`]).
    pub(crate) fn cache_len(&self) -> usize {
        self.cache.len()
    }

    /// Undoes what a failed step wrote: the cache goes back to `len` positions (its input was
    /// not consumed, so the step can be taken again and gives what it would have).
    pub(crate) fn rewind(&mut self, len: usize) {
        self.cache.rewind(len);
    }

    /// The next prefill chunk `[1, S, D]` (after copying a cached shared prefix into the cache,
    /// on the first), with room made for it in the cache.
    pub(crate) fn prefill_input(&mut self) -> Result<Option<Tensor>> {
        if !self.is_prefilling() {
            return Ok(None);
        }
        self.reuse_prefix()?;
        self.take_input()
    }

    /// After a prefill chunk went through the LM: keeps the keys and values of the prefix that
    /// chunk ended if it is the first (the system prompt, which other conversations share) or the
    /// last (all but the `<|Assistant|>:` tail, which a follow-up question starts with). Returns
    /// whether the prompt is all in (the chunk's last position then gives the first token).
    pub(crate) fn prefilled(&mut self) -> Result<bool> {
        let len = self.cache.len();
        let kept = [self.prefixes.first(), self.prefixes.last()];
        if let Some(key) = kept.into_iter().flatten().find(|k| k.len() == len) {
            let cache = &self.cache;
            self.model.prefix_cache().insert_with(key, || cache.prefix(len))?;
        }
        Ok(len >= self.prompt_tokens)
    }

    /// Before the first prefill chunk: copies the cached prefix's keys and values, if one was
    /// found, so that the prefill starts after it.
    fn reuse_prefix(&mut self) -> Result<()> {
        let Some(kv) = self.reused.take() else {
            return Ok(());
        };
        self.cache.write_prefix(&kv)?;
        self.cached_tokens = self.cache.len();
        Ok(())
    }

    /// The LM input of this step, with room made for it in the cache: the next prefill chunk,
    /// else the last token's embedding; `None` when the answer is over. Nothing is consumed
    /// until the step succeeds (the cache's length says how much of the prompt is in, and the
    /// next token replaces the input), so a failed step can be taken again.
    pub(crate) fn take_input(&mut self) -> Result<Option<Tensor>> {
        let input = match &self.prompt {
            Some(embeds) if self.is_prefilling() => {
                // Chunks end where the prefixes end, so that each is computed alike whether it
                // is cached or not.
                let (total, done) = (embeds.dim(1)?, self.cache.len());
                let end = self.prefixes.iter().map(PrefixKey::len).find(|&b| b > done).unwrap_or(total);
                let n = (end - done).min(self.prefill_chunk);
                embeds.narrow(1, done, n)?
            }
            _ => match &self.next {
                Some(t) => t.clone(),
                None => return Ok(None),
            },
        };
        let needed = self.cache.len() + input.dim(1)?;
        if needed > self.cache.capacity() {
            let limit = self.prompt_tokens + self.max_new;
            self.cache.grow_to((self.cache.capacity() + TEXT_CACHE_CHUNK).clamp(needed, limit.max(needed)))?;
        }
        Ok(Some(input))
    }

    pub(crate) fn cache_mut(&mut self) -> &mut LlmCache {
        &mut self.cache
    }

    /// The next token, drawn from its logits with this answer's own RNG, penalties and
    /// constraint ([`Picker`]; host work only, so that a batch can draw its rows in parallel).
    pub(crate) fn pick(&mut self, logits: &[f32]) -> Result<u32> {
        if let Some(kept) = &mut self.kept_logits {
            kept.push(logits.to_vec());
        }
        self.picker.pick(logits)
    }

    /// The log-probabilities of the tokens taken since the last call (empty unless the request
    /// asked for them).
    pub fn take_logprobs(&mut self) -> Vec<TokenLogprobs> {
        self.picker.take_logprobs()
    }

    /// Keeps the logits of every token picked from now on ([`TextSession::logits`]): what
    /// compares two ways of computing an answer bit for bit.
    pub fn keep_logits(&mut self) {
        self.kept_logits.get_or_insert_with(Vec::new);
    }

    /// The logits kept since [`TextSession::keep_logits`], one row per picked token.
    pub fn logits(&self) -> &[Vec<f32>] {
        self.kept_logits.as_deref().unwrap_or_default()
    }

    /// Takes the picked token: the end, or its text and the next step's input. The text it
    /// returns is final: a stop sequence met ends the answer before it.
    pub(crate) fn accept_token(&mut self, t: u32) -> Result<Option<String>> {
        let tokenizer = &self.model.tokenizer;
        let complete = self.picker.accept(t, t == tokenizer.special.eos)?;
        (self.prompt, self.next) = (None, None);
        let mut released = String::new();
        if t == tokenizer.special.eos {
            self.finish = Some(FinishReason::Stop);
        } else {
            self.ids.push(t);
            if let Some(piece) = self.detok.push(tokenizer, t)? {
                let r = self.stop.push(&piece);
                released = r.text;
                if r.stopped {
                    self.finish = Some(FinishReason::Stop);
                }
            }
            if self.is_done() {
                // met a stop sequence
            } else if complete {
                self.finish = Some(FinishReason::Stop);
            } else if self.ids.len() == self.max_new {
                self.finish = Some(FinishReason::Length);
            } else {
                self.next = Some(self.model.llm.embed(&Tensor::new(&[[t]], self.model.device())?)?);
            }
        }
        if self.is_done() {
            released.push_str(&self.flush()?);
        }
        self.text.push_str(&released);
        Ok((!released.is_empty()).then_some(released))
    }

    /// At the end: the text still held back (an incomplete character, the possible beginning
    /// of a stop sequence), unless a stop sequence was met (what follows it is not the answer's).
    fn flush(&mut self) -> Result<String> {
        let rest = self.detok.finish(&self.model.tokenizer)?.unwrap_or_default();
        let mut text = self.stop.push(&rest).text;
        text.push_str(&self.stop.finish());
        Ok(text)
    }

    /// The answer so far (all of it once `is_done`): the pieces returned by `step`, and any text
    /// still held back (a cancelled answer's incomplete character). A tokenizer failure is an
    /// error, not a shorter text.
    pub fn into_output(mut self) -> Result<TextOutput> {
        let rest = self.flush()?;
        self.text.push_str(&rest);
        Ok(TextOutput {
            text: self.text,
            token_ids: self.ids,
            prompt_tokens: self.prompt_tokens,
            cached_tokens: self.cached_tokens,
            finish_reason: self.finish.unwrap_or(FinishReason::Cancelled),
        })
    }
}
