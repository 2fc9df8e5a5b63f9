//! The DeepSeek-LLM tokenizer (`tokenizer.json`) and Janus prompt templates.
//!
//! References: deepseek-ai/Janus `janus/models/processing_vlm.py` (`VLChatProcessor`: special
//! tokens looked up by string, placeholder expansion) and `janus/utils/conversation.py` (the
//! "deepseek" template). Special-token ids differ between Janus-Pro-1B and -7B (pad is 100002
//! vs 100015), so every one is resolved by its string from the model's own tokenizer.

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
}

pub struct JanusTokenizer {
    inner: Tokenizer,
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
        };
        Ok(Self { inner, special })
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

    /// Decodes ids to text, dropping special tokens.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, true).map_err(|e| Error::Tokenizer(e.to_string()))
    }

    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }

    /// The prompt ids of the conditional row for text-to-image generation.
    pub fn t2i_prompt_ids(&self, prompt: &str) -> Result<Vec<u32>> {
        self.encode(&t2i_prompt(prompt))
    }

    /// The unconditional CFG row: same length as `cond`, BOS and `<begin_of_image>` kept at the
    /// ends, everything in between replaced by the pad token (the reference's layout).
    pub fn uncond_ids(&self, cond: &[u32]) -> Vec<u32> {
        let n = cond.len();
        (0..n).map(|i| if i == 0 || i + 1 == n { cond[i] } else { self.special.pad }).collect()
    }
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
}
