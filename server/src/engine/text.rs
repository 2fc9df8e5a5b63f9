//! Text answers in the engine: one [`TextSession`] per chat request, one token per turn.

use janus::{Janus, TextSession};
use tokio::sync::mpsc;

use super::error::guarded;
use super::{ChatEvent, ChatRequest};

pub(super) struct TextAnswer<'m> {
    session: TextSession<'m>,
    tx: mpsc::Sender<ChatEvent>,
}

/// Where an answer stands after a turn.
pub(super) enum TextTurn {
    Running,
    /// Finished, failed or abandoned: the request is over.
    Over,
}

impl<'m> TextAnswer<'m> {
    /// Tokenizes and embeds the conversation and sends `Started`; on failure sends `Failed`.
    pub fn start(model: &'m Janus, req: &ChatRequest, tx: mpsc::Sender<ChatEvent>) -> Option<Self> {
        match guarded(|| TextSession::new(model, &req.conversation, &req.params)) {
            Ok(session) => {
                let _ = tx.try_send(ChatEvent::Started { prompt_tokens: session.prompt_tokens() });
                Some(Self { session, tx })
            }
            Err(e) => {
                let _ = tx.try_send(ChatEvent::Failed(e));
                None
            }
        }
    }

    /// One token (the prefill on the first turn); sends the new text, and `Done` at the end.
    pub fn step(&mut self) -> TextTurn {
        if self.tx.is_closed() {
            return TextTurn::Over;
        }
        match guarded(|| self.session.step()) {
            Ok(Some(piece)) => {
                let _ = self.tx.try_send(ChatEvent::Delta(piece));
            }
            Ok(None) => {}
            Err(e) => {
                let _ = self.tx.try_send(ChatEvent::Failed(e));
                return TextTurn::Over;
            }
        }
        if !self.session.is_done() {
            return TextTurn::Running;
        }
        let _ = self.tx.try_send(ChatEvent::Done {
            completion_tokens: self.session.completion_tokens(),
            finish_reason: self.session.finish_reason(),
        });
        TextTurn::Over
    }
}
