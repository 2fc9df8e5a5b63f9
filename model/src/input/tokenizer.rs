//! The DeepSeek-LLM tokenizer (`tokenizer.json`) and Janus prompt templates.
//!
//! References: deepseek-ai/Janus `janus/models/processing_vlm.py` (`VLChatProcessor`: special
//! tokens looked up by string, placeholder expansion) and `janus/utils/conversation.py` (the
//! "deepseek" template). Special-token ids differ between Janus-Pro-1B and -7B (pad is 100002
//! vs 100015), so every one is resolved by its string from the model's own tokenizer.
//!
//! [`DecodeStream`] turns a growing answer into text pieces incrementally, as TGI's and vLLM's
//! incremental detokenizers do (`decode(context + new) − decode(context)`).

use std::path::Path;

use tokenizers::Tokenizer;

use crate::error::{Error, Result};

pub const BOS: &str = "<｜begin▁of▁sentence｜>";
pub const EOS: &str = "<｜end▁of▁sentence｜>";
pub const PAD: &str = "<｜▁pad▁｜>";
pub const BEGIN_OF_IMAGE: &str = "<begin_of_image>";
pub const END_OF_IMAGE: &str = "<end_of_image>";
pub const IMAGE_PLACEHOLDER: &str = "<image_placeholder>";
pub const USER: &str = "<|User|>";
pub const ASSISTANT: &str = "<|Assistant|>";

/// Ids of the special tokens, resolved from the tokenizer's vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialTokens {
    pub bos: u32,
    pub eos: u32,
    pub pad: u32,
    pub begin_of_image: u32,
    pub end_of_image: u32,
    pub image_placeholder: u32,
    /// The template's role markers (`<|User|>`, `<|Assistant|>`).
    pub user: u32,
    pub assistant: u32,
}

impl SpecialTokens {
    /// The id of one of the template's special strings ([`BOS`], [`EOS`], [`USER`], ...).
    pub fn id(&self, token: &str) -> Option<u32> {
        Some(match token {
            BOS => self.bos,
            EOS => self.eos,
            PAD => self.pad,
            BEGIN_OF_IMAGE => self.begin_of_image,
            END_OF_IMAGE => self.end_of_image,
            IMAGE_PLACEHOLDER => self.image_placeholder,
            USER => self.user,
            ASSISTANT => self.assistant,
            _ => return None,
        })
    }
}

pub struct JanusTokenizer {
    inner: Tokenizer,
    /// The same tokenizer without its added tokens: text in which a special token's string is
    /// plain text ([`JanusTokenizer::encode_text`]).
    plain: Tokenizer,
    pub special: SpecialTokens,
}

impl JanusTokenizer {
    pub fn from_file(path: &Path) -> Result<Self> {
        let inner = Tokenizer::from_file(path).map_err(|e| Error::Tokenizer(format!("{}: {e}", path.display())))?;
        Self::new(inner, path)
    }

    pub fn new(inner: Tokenizer, path: &Path) -> Result<Self> {
        let id = |s: &str| {
            inner.token_to_id(s).ok_or_else(|| {
                Error::Tokenizer(format!("{}: special token {s} is not in the vocabulary", path.display()))
            })
        };
        let special = SpecialTokens {
            bos: id(BOS)?,
            eos: id(EOS)?,
            pad: id(PAD)?,
            begin_of_image: id(BEGIN_OF_IMAGE)?,
            end_of_image: id(END_OF_IMAGE)?,
            image_placeholder: id(IMAGE_PLACEHOLDER)?,
            user: id(USER)?,
            assistant: id(ASSISTANT)?,
        };
        let plain = without_added_tokens(&inner).map_err(|e| Error::Tokenizer(format!("{}: {e}", path.display())))?;
        Ok(Self { inner, plain, special })
    }

    /// Tokenizes `text` with exactly one leading BOS, whether or not the tokenizer's
    /// post-processor adds one (special-token strings inside `text` map to their ids).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, false).map_err(|e| Error::Tokenizer(e.to_string()))?;
        let mut ids = Vec::with_capacity(enc.len() + 1);
        ids.push(self.special.bos);
        ids.extend_from_slice(enc.get_ids());
        Ok(ids)
    }

    /// Tokenizes `text` as plain text: no BOS, and the string of a special token (`<|User|>`,
    /// `<image_placeholder>`...) is text like any other, so that what a user writes can never
    /// become a turn or an image slot. Text without such strings gets the ids the whole prompt
    /// gives it: the tokenizer splits a prompt at its special tokens and tokenizes the pieces
    /// between them each on its own, which is what the template's pieces are
    /// ([`crate::text::conversation`]).
    pub fn encode_text(&self, text: &str) -> Result<Vec<u32>> {
        #[cfg(test)]
        ENCODED_BYTES.set(ENCODED_BYTES.get() + text.len());
        let enc = self.plain.encode(text, false).map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Decodes ids to text, dropping special tokens.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, true).map_err(|e| Error::Tokenizer(e.to_string()))
    }

    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }

    /// The bytes token `id` stands for (OpenAI's `logprobs[].bytes`): a special token's string,
    /// or a byte-level BPE token's bytes, which may be part of a character; empty for an id the
    /// tokenizer does not have.
    pub fn token_bytes(&self, id: u32) -> Vec<u8> {
        let Some(token) = self.inner.id_to_token(id) else {
            return Vec::new();
        };
        if self.inner.get_added_vocabulary().is_special_token(&token) {
            return token.into_bytes();
        }
        let mut out = Vec::with_capacity(token.len());
        for c in token.chars() {
            match byte_level_byte(c) {
                Some(b) => out.push(b),
                None => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
            }
        }
        out
    }

    /// The prompt ids of the conditional row for text-to-image generation: [`t2i_prompt`], the
    /// prompt's text plain ([`JanusTokenizer::encode_text`]).
    pub fn t2i_prompt_ids(&self, prompt: &str) -> Result<Vec<u32>> {
        let sp = self.special;
        let mut ids = vec![sp.bos, sp.user];
        ids.extend(self.encode_text(&format!(": {}\n\n", prompt.trim()))?);
        ids.push(sp.assistant);
        ids.extend(self.encode_text(":")?);
        ids.push(sp.begin_of_image);
        Ok(ids)
    }

    /// The unconditional CFG row: same length as `cond`, BOS and `<begin_of_image>` kept at the
    /// ends, everything in between replaced by the pad token (the reference's layout).
    pub fn uncond_ids(&self, cond: &[u32]) -> Vec<u32> {
        let n = cond.len();
        (0..n).map(|i| if i == 0 || i + 1 == n { cond[i] } else { self.special.pad }).collect()
    }
}

/// The byte a byte-level BPE character stands for (GPT-2's `bytes_to_unicode`: printable
/// Latin-1 bytes are themselves, the other 68 are U+0100 onwards in byte order).
fn byte_level_byte(c: char) -> Option<u8> {
    let printable = |b: u32| (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b);
    let c = c as u32;
    if printable(c) {
        return Some(c as u8);
    }
    let shifted = c.checked_sub(0x100)?;
    (0..=255u32).filter(|&b| !printable(b)).nth(shifted as usize).map(|b| b as u8)
}

/// Streams the text of an answer token by token, decoding only a window each step: the tokens
/// of the last piece returned (left context, so that a decoder's handling of a sequence's start
/// does not leak into the middle of the text) and those pushed since. A new piece is
/// `decode(window) − decode(context)`, returned once it does not end in U+FFFD (an incomplete
/// UTF-8 sequence, e.g. the first bytes of a character split over byte tokens); then the window
/// moves on. Concatenated, the pieces are `decode(all tokens)` for a decoder whose output for a
/// sequence starts with its output for every prefix (the byte-level decoder of the DeepSeek
/// tokenizer); any other is reported as an [`Error::Tokenizer`].
#[derive(Debug, Clone, Default)]
pub struct DecodeStream {
    /// The window: context tokens, then the pending ones.
    ids: Vec<u32>,
    /// Where the pending tokens start in `ids`.
    read: usize,
    /// `decode(ids[..read])`.
    context_text: String,
}

impl DecodeStream {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a token; returns the text it completes, if any.
    pub fn push(&mut self, tokenizer: &JanusTokenizer, id: u32) -> Result<Option<String>> {
        self.push_with(id, |ids| tokenizer.decode(ids))
    }

    /// The text of the pending tokens, complete or not (at the end of an answer); the stream is
    /// empty afterwards.
    pub fn finish(&mut self, tokenizer: &JanusTokenizer) -> Result<Option<String>> {
        self.finish_with(|ids| tokenizer.decode(ids))
    }

    fn push_with(&mut self, id: u32, decode: impl Fn(&[u32]) -> Result<String>) -> Result<Option<String>> {
        self.ids.push(id);
        let text = decode(&self.ids)?;
        if text.len() <= self.context_text.len() || text.ends_with('\u{FFFD}') {
            return Ok(None);
        }
        let piece = self.piece(&text)?;
        self.ids.drain(..self.read);
        self.read = self.ids.len();
        self.context_text = decode(&self.ids)?;
        Ok(Some(piece))
    }

    fn finish_with(&mut self, decode: impl Fn(&[u32]) -> Result<String>) -> Result<Option<String>> {
        let text = if self.read < self.ids.len() { decode(&self.ids)? } else { String::new() };
        let piece = if text.len() > self.context_text.len() { Some(self.piece(&text)?) } else { None };
        *self = Self::default();
        Ok(piece)
    }

    /// What `text` (the window's) adds to the context's text.
    fn piece(&self, text: &str) -> Result<String> {
        match text.strip_prefix(self.context_text.as_str()) {
            Some(piece) => Ok(piece.to_string()),
            None => Err(Error::Tokenizer(format!(
                "the decoder rewrote earlier text ({:?} became {text:?}), so it cannot be streamed",
                self.context_text
            ))),
        }
    }
}

#[cfg(test)]
thread_local! {
    /// Bytes [`JanusTokenizer::encode_text`] has tokenized on this thread (tests count them).
    pub(crate) static ENCODED_BYTES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// `tokenizer` without its added tokens (its model, normalizer and pre-tokenizer as they are).
fn without_added_tokens(tokenizer: &Tokenizer) -> std::result::Result<Tokenizer, String> {
    let json = tokenizer.to_string(false).map_err(|e| e.to_string())?;
    let mut value: serde_json::Value = serde_json::from_str(&json).map_err(|e| e.to_string())?;
    value["added_tokens"] = serde_json::Value::Array(Vec::new());
    value.to_string().parse::<Tokenizer>().map_err(|e| e.to_string())
}

/// The "deepseek" SFT template with an empty system prompt, a user turn and an empty assistant
/// turn, followed by the image start tag: `<|User|>: {prompt}\n\n<|Assistant|>:<begin_of_image>`.
pub fn t2i_prompt(prompt: &str) -> String {
    format!("{USER}: {}\n\n{ASSISTANT}:{BEGIN_OF_IMAGE}", prompt.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_matches_reference() {
        assert_eq!(t2i_prompt("  a cat "), "<|User|>: a cat\n\n<|Assistant|>:<begin_of_image>");
    }

    fn tiny() -> JanusTokenizer {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/tiny/janus-pro-tiny/tokenizer.json");
        JanusTokenizer::from_file(&path).unwrap()
    }

    #[test]
    fn token_bytes_are_what_decoding_gives() {
        let tok = tiny();
        // Every byte-level table entry maps back to its byte.
        let mut seen: Vec<u8> = (0..=0x323u32).filter_map(char::from_u32).filter_map(byte_level_byte).collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..=255).collect::<Vec<u8>>());
        let ids = tok.encode_text("héllo, wörld!\n").unwrap();
        let bytes: Vec<u8> = ids.iter().flat_map(|&t| tok.token_bytes(t)).collect();
        assert_eq!(String::from_utf8(bytes).unwrap(), "héllo, wörld!\n");
        assert_eq!(tok.token_bytes(tok.special.eos), EOS.as_bytes());
        assert!(tok.token_bytes(1 << 30).is_empty());
    }

    /// Streams `ids` and returns the pieces, checking each against `decode` of everything so far.
    fn stream(tok: &JanusTokenizer, ids: &[u32]) -> Vec<String> {
        let mut s = DecodeStream::new();
        let mut pieces: Vec<String> = ids.iter().filter_map(|&id| s.push(tok, id).unwrap()).collect();
        pieces.extend(s.finish(tok).unwrap());
        pieces
    }

    /// The tiny tokenizer is byte-level (ids 0..256 are the bytes, no merges across them for
    /// non-ASCII text), so multi-byte characters arrive split over byte tokens.
    #[test]
    fn streamed_pieces_add_up_to_the_decoded_text() {
        let tok = tiny();
        let text = "naïve café — 日本語 🎉 ok, ünïcödé!\n二 x";
        let ids = tok.encode(text).unwrap()[1..].to_vec();
        assert!(ids.len() > text.chars().count(), "characters split over several tokens");
        let pieces = stream(&tok, &ids);
        assert_eq!(pieces.concat(), text);
        assert_eq!(tok.decode(&ids).unwrap(), text);
        assert!(pieces.iter().all(|p| !p.contains('\u{FFFD}')), "no split character is shown half: {pieces:?}");
        assert!(pieces.len() < ids.len(), "pieces wait for the rest of their character");
    }

    /// Arbitrary ids: stray continuation bytes, truncated characters, special tokens (dropped),
    /// ids the tokenizer does not know (dropped, as `tokenizers` does).
    #[test]
    fn streamed_pieces_of_any_ids_add_up_to_the_decoded_text() {
        let tok = tiny();
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for len in [1usize, 2, 3, 5, 17, 64, 200] {
            for _ in 0..20 {
                let ids: Vec<u32> = (0..len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        // mostly byte tokens, the non-ASCII ones (ids 94..256) above all
                        match x % 10 {
                            0 => (x >> 8) as u32 % 512,
                            1..=6 => 94 + (x >> 8) as u32 % 162,
                            _ => (x >> 8) as u32 % 94,
                        }
                    })
                    .collect();
                assert_eq!(stream(&tok, &ids).concat(), tok.decode(&ids).unwrap(), "{ids:?}");
            }
        }
    }

    /// Each step decodes a window of a few tokens, not the whole answer: an answer of n tokens
    /// costs O(n) decoded tokens.
    #[test]
    fn each_step_decodes_a_window_not_the_answer() {
        let tok = tiny();
        let text = "a red square on a blue ground, ünïcödé and 日本語 — ".repeat(20);
        let ids = tok.encode(&text).unwrap()[1..].to_vec();
        let decoded = std::cell::Cell::new(0usize);
        let counting = |w: &[u32]| {
            decoded.set(decoded.get() + w.len());
            tok.decode(w)
        };
        let mut s = DecodeStream::new();
        let mut out = String::new();
        for &id in &ids {
            out.extend(s.push_with(id, counting).unwrap());
        }
        out.extend(s.finish_with(counting).unwrap());
        assert_eq!(out, text);
        let n = ids.len();
        assert!(decoded.get() <= 8 * n, "{} tokens decoded for an answer of {n}", decoded.get());
    }

    /// A decoder failure is an error, not a missing piece, while streaming and at the end; a
    /// decoder that rewrites earlier text is refused rather than streamed wrongly.
    #[test]
    fn decoder_failures_are_tokenizer_errors() {
        let tok = &tiny();
        let fail_from =
            |n: usize| move |w: &[u32]| if w.len() >= n { Err(Error::Tokenizer("boom".into())) } else { tok.decode(w) };
        let mut s = DecodeStream::new();
        assert!(matches!(s.push_with(64, fail_from(1)), Err(Error::Tokenizer(_))));
        let mut s = DecodeStream::new();
        s.push_with(127, fail_from(3)).unwrap(); // 'Ã': the first byte of a two-byte character, held
        assert!(matches!(s.finish_with(fail_from(1)), Err(Error::Tokenizer(_))));
        let mut s = DecodeStream::new();
        let rewriting = |w: &[u32]| Ok(w.iter().rev().map(|t| t.to_string()).collect::<Vec<_>>().join(" "));
        s.push_with(1, rewriting).unwrap();
        assert!(matches!(s.push_with(2, rewriting), Err(Error::Tokenizer(_))));
    }
}
