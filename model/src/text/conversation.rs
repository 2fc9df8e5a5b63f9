//! A conversation to answer, and the reference's chat template over it, as pieces: the template's
//! special tokens, text, image slots, and where each section ends (the system prompt, each
//! message), so that it is tokenized in one pass ([`crate::text::prompt`]).
//!
//! Reference: deepseek-ai/Janus `janus/models/processing_vlm.py` (`VLChatProcessor`: the
//! "deepseek" template with the default system prompt) and `janus/utils/conversation.py` (a
//! message renders as `role + ": " + content + sep`, `sep` being `\n\n` after a user turn and
//! `<｜end▁of▁sentence｜>` after an assistant turn; an empty message renders as `role + ":"`;
//! content is stripped). The conversation's images are of any type `I`: decoded images
//! ([`DynamicImage`], the default), or what a server holds before it decodes them.

use image::DynamicImage;

use crate::error::{Field, Invalid};
use crate::input::tokenizer::{ASSISTANT, EOS, IMAGE_PLACEHOLDER, USER};

/// `VLChatProcessor.system_prompt` of the released processor.
pub const DEFAULT_SYSTEM_PROMPT: &str = "You are a helpful language and vision assistant. You are able to understand the visual content that the user provides, and assist the user with a variety of tasks using natural language.";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    User,
    Assistant,
}

/// One piece of a message: text, or an image (rendered as `<image_placeholder>`).
#[derive(Debug, Clone)]
pub enum Part<I = DynamicImage> {
    Text(String),
    Image(I),
}

#[derive(Debug, Clone)]
pub struct Message<I = DynamicImage> {
    pub role: Role,
    pub parts: Vec<Part<I>>,
}

impl<I> Message<I> {
    pub fn user(parts: Vec<Part<I>>) -> Self {
        Self { role: Role::User, parts }
    }

    pub fn assistant(text: impl Into<String>) -> Self {
        Self { role: Role::Assistant, parts: vec![Part::Text(text.into())] }
    }
}

/// A conversation to answer: the system prompt (the reference's by default) and the turns.
#[derive(Debug, Clone)]
pub struct Conversation<I = DynamicImage> {
    pub system: String,
    pub messages: Vec<Message<I>>,
}

/// One piece of a rendered prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// One of the template's special tokens ([`USER`], [`ASSISTANT`], [`EOS`]).
    Special(&'static str),
    /// Text: the template's own and what the conversation says, plain (a special token's string
    /// in it is text).
    Text(String),
    /// The slot of the conversation's next image.
    Image,
    /// The end of a section (the system prompt, a message): a prefix later answers may share.
    /// A special token always follows it.
    End,
}

impl Conversation {
    /// One user turn: the image, then the question (the reference's layout).
    pub fn single(image: DynamicImage, question: &str) -> Self {
        Self::new(vec![Message::user(vec![Part::Image(image), Part::Text(question.to_string())])])
    }
}

impl<I> Conversation<I> {
    pub fn new(messages: Vec<Message<I>>) -> Self {
        Self { system: DEFAULT_SYSTEM_PROMPT.to_string(), messages }
    }

    /// The images, in the order of their slots.
    pub fn images(&self) -> impl Iterator<Item = &I> {
        self.messages.iter().flat_map(|m| &m.parts).filter_map(|p| match p {
            Part::Image(i) => Some(i),
            Part::Text(_) => None,
        })
    }

    /// The images, in the order of their slots, taken out.
    pub fn into_images(self) -> impl Iterator<Item = I> {
        self.messages.into_iter().flat_map(|m| m.parts).filter_map(|p| match p {
            Part::Image(i) => Some(i),
            Part::Text(_) => None,
        })
    }

    /// The same conversation with each image replaced by `f(image)`, in order; the first error
    /// stops it.
    pub fn try_map_images<J, E>(self, mut f: impl FnMut(I) -> Result<J, E>) -> Result<Conversation<J>, E> {
        let mut messages = Vec::with_capacity(self.messages.len());
        for m in self.messages {
            let parts = (m.parts.into_iter())
                .map(|p| match p {
                    Part::Text(t) => Ok(Part::Text(t)),
                    Part::Image(i) => f(i).map(Part::Image),
                })
                .collect::<Result<_, E>>()?;
            messages.push(Message { role: m.role, parts });
        }
        Ok(Conversation { system: self.system, messages })
    }

    /// The template's pieces: the system prompt (when not blank) and `\n\n`, each message, and
    /// the `<|Assistant|>:` the answer follows, with the end of each section marked. Refused
    /// when the last message is not the user's.
    pub fn pieces(&self) -> Result<Vec<Piece>, Invalid> {
        if self.messages.last().map(|m| m.role) != Some(Role::User) {
            return Err(Invalid::new(Field::Messages, "the last message must be from the user"));
        }
        let mut out = Vec::new();
        let system = self.system.trim();
        if !system.is_empty() {
            out.extend([Piece::Text(format!("{system}\n\n")), Piece::End]);
        }
        for m in &self.messages {
            let role = match m.role {
                Role::User => USER,
                Role::Assistant => ASSISTANT,
            };
            out.push(Piece::Special(role));
            let content = content_pieces(&m.parts);
            if content.is_empty() {
                out.push(Piece::Text(":".into()));
            } else {
                push_text(&mut out, ": ");
                for p in content {
                    match p {
                        Piece::Text(t) => push_text(&mut out, &t),
                        other => out.push(other),
                    }
                }
                match m.role {
                    Role::User => push_text(&mut out, "\n\n"),
                    Role::Assistant => out.push(Piece::Special(EOS)),
                }
            }
            out.push(Piece::End);
        }
        out.extend([Piece::Special(ASSISTANT), Piece::Text(":".into())]);
        Ok(out)
    }

    /// The prompt as text, images as `<image_placeholder>` (what the reference's processor
    /// renders; [`crate::text::prompt::Prompter`] tokenizes the pieces instead).
    pub fn render(&self) -> Result<String, Invalid> {
        Ok(self
            .pieces()?
            .iter()
            .map(|p| match p {
                Piece::Special(s) => s,
                Piece::Text(t) => t.as_str(),
                Piece::Image => IMAGE_PLACEHOLDER,
                Piece::End => "",
            })
            .collect())
    }
}

/// Appends text to the last piece when it is text, else as a new piece.
fn push_text(out: &mut Vec<Piece>, text: &str) {
    match out.last_mut() {
        Some(Piece::Text(t)) => t.push_str(text),
        _ => out.push(Piece::Text(text.to_string())),
    }
}

/// A message's content: its parts joined by `\n`, stripped (as the reference strips the
/// joined text: whitespace before the first image and after the last one goes); empty when
/// nothing is left.
fn content_pieces<I>(parts: &[Part<I>]) -> Vec<Piece> {
    let mut out = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            push_text(&mut out, "\n");
        }
        match p {
            Part::Text(t) => push_text(&mut out, t),
            Part::Image(_) => out.push(Piece::Image),
        }
    }
    if let Some(Piece::Text(t)) = out.first_mut() {
        *t = t.trim_start().to_string();
    }
    if let Some(Piece::Text(t)) = out.last_mut() {
        *t = t.trim_end().to_string();
    }
    out.retain(|p| !matches!(p, Piece::Text(t) if t.is_empty()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_reference_template() {
        let img = DynamicImage::new_rgb8(2, 2);
        let c = Conversation::single(img.clone(), "What is this?");
        assert_eq!(
            c.render().unwrap(),
            format!("{DEFAULT_SYSTEM_PROMPT}\n\n<|User|>: <image_placeholder>\nWhat is this?\n\n<|Assistant|>:")
        );
        assert_eq!(c.images().count(), 1);

        let c = Conversation::new(vec![
            Message::user(vec![Part::Image(img.clone()), Part::Text("Describe it.".into())]),
            Message::assistant("A square."),
            Message::user(vec![Part::Text("And the colour?".into()), Part::Image(img)]),
        ]);
        let text = c.render().unwrap();
        assert!(text.ends_with(
            "<|User|>: <image_placeholder>\nDescribe it.\n\n<|Assistant|>: A square.<｜end▁of▁sentence｜><|User|>: And the colour?\n<image_placeholder>\n\n<|Assistant|>:"
        ), "{text}");
        assert_eq!(c.images().count(), 2);
    }

    /// Content is stripped as a whole; an empty message renders as `role:` (the reference's
    /// rule), so an assistant turn left empty after a tool call, or a user turn with no text, is
    /// a prompt like any other.
    #[test]
    fn empty_messages_render_as_the_role_alone() {
        let c: Conversation<()> = Conversation {
            system: "  ".into(),
            messages: vec![
                Message::user(vec![Part::Text(" \n ".into())]),
                Message::assistant(""),
                Message::user(vec![Part::Text("  hi ".into()), Part::Text(" there\n".into())]),
            ],
        };
        assert_eq!(c.render().unwrap(), "<|User|>:<|Assistant|>:<|User|>: hi \n there\n\n<|Assistant|>:");
        let ends = c.pieces().unwrap().iter().filter(|p| **p == Piece::End).count();
        assert_eq!(ends, 3, "each message ends a section; a blank system prompt is none");
        // Whitespace around images goes with the text before the first and after the last.
        let c: Conversation<u8> = Conversation::new(vec![Message::user(vec![
            Part::Text("  ".into()),
            Part::Image(1),
            Part::Text(" x ".into()),
        ])]);
        assert!(c.render().unwrap().ends_with("<|User|>: <image_placeholder>\n x\n\n<|Assistant|>:"));
    }

    /// Every section end is followed by a special token, so a prompt's tokens split there.
    #[test]
    fn a_special_token_follows_every_section_end() {
        let c: Conversation<u8> = Conversation::new(vec![
            Message::user(vec![Part::Image(1)]),
            Message::assistant("ok"),
            Message::user(vec![Part::Text("".into())]),
        ]);
        let pieces = c.pieces().unwrap();
        for w in pieces.windows(2) {
            if w[0] == Piece::End {
                assert!(matches!(w[1], Piece::Special(_)), "{pieces:?}");
            }
        }
    }

    #[test]
    fn refuses_conversations_not_ending_with_the_user() {
        let c: Conversation = Conversation::new(vec![Message::assistant("hi")]);
        assert_eq!(c.render().unwrap_err().field, Field::Messages);
        let c: Conversation = Conversation::new(vec![]);
        assert_eq!(c.render().unwrap_err().field, Field::Messages);
    }
}
