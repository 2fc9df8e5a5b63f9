//! Text answers in the engine: one [`TextSession`] per chat request. A turn runs one prefill
//! chunk for each answer still reading its prompt, all in one pass ([`Janus::prefill_texts`]),
//! and one batched step ([`Janus::step_texts`]) that gives every other answer its next token.
//! A step taken together that fails is taken again by each answer alone (a failed step leaves
//! nothing behind), so only an answer that fails alone fails.

use std::time::Instant;

use janus::text::batch::TextPieces;
use janus::{Janus, TextSession};
use tokio::sync::mpsc;

use super::error::{guarded, EngineError};
use super::{ChatEvent, ChatRequest};

pub(super) struct TextAnswer<'m> {
    session: TextSession<'m>,
    tx: mpsc::Sender<ChatEvent>,
    /// When the request was accepted, and when its last piece of text was sent.
    accepted: Instant,
    last_token: Option<Instant>,
    /// Tokens announced so far (one `Delta` each).
    sent_tokens: usize,
}

/// Where an answer stands after a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TextTurn {
    Running,
    /// Finished, failed or abandoned: the request is over.
    Over,
}

impl<'m> TextAnswer<'m> {
    /// Embeds the requests arriving together (their images encoded in one batch) and sends each
    /// `Started`, or `Failed` to those that cannot start. The requests (their pixels, and the
    /// image memory they hold) are dropped once read.
    pub fn start_many(model: &'m Janus, reqs: Vec<(ChatRequest, mpsc::Sender<ChatEvent>, Instant)>) -> Vec<Self> {
        let texts: Vec<_> = reqs.iter().map(|(r, _, _)| &r.text).collect();
        let started = guarded(|| model.text_sessions(&texts));
        let results: Vec<Result<TextSession<'m>, EngineError>> = match started {
            Ok(sessions) => sessions.into_iter().map(|s| s.map_err(EngineError::from)).collect(),
            Err(e) => reqs.iter().map(|_| Err(e.clone())).collect(),
        };
        (reqs.into_iter().zip(results))
            .filter_map(|((_, tx, accepted), r)| match r {
                Ok(session) => {
                    let _ = tx.try_send(ChatEvent::Started { prompt_tokens: session.prompt_tokens() });
                    Some(Self { session, tx, accepted, last_token: None, sent_tokens: 0 })
                }
                Err(e) => {
                    let _ = tx.try_send(ChatEvent::Failed(e));
                    None
                }
            })
            .collect()
    }

    pub fn is_gone(&self) -> bool {
        self.tx.is_closed()
    }

    /// Whether its next step is one token (it can join the batched step).
    pub fn is_decoding(&self) -> bool {
        self.session.is_decoding()
    }

    /// Sends what a step gave; `Done` at the end.
    pub fn deliver(&mut self, r: Result<Option<String>, EngineError>) -> TextTurn {
        match r {
            Ok(piece) => {
                let tokens = self.session.completion_tokens();
                if tokens > self.sent_tokens {
                    // One event per token, text or not (a token may complete no character yet).
                    self.sent_tokens = tokens;
                    self.record_token();
                    let _ = self.tx.try_send(ChatEvent::Delta(piece.unwrap_or_default()));
                } else if let Some(piece) = piece {
                    let _ = self.tx.try_send(ChatEvent::Delta(piece));
                }
            }
            Err(e) => {
                let _ = self.tx.try_send(ChatEvent::Failed(e));
                return TextTurn::Over;
            }
        }
        if !self.session.is_done() {
            return TextTurn::Running;
        }
        let (prompt, cached) = (self.session.prompt_tokens(), self.session.cached_tokens());
        metrics::counter!("janus_prompt_tokens_total").increment(prompt as u64);
        metrics::counter!("janus_cached_prompt_tokens_total").increment(cached as u64);
        let _ = self.tx.try_send(ChatEvent::Done {
            completion_tokens: self.session.completion_tokens(),
            cached_tokens: cached,
            finish_reason: self.session.finish_reason(),
        });
        TextTurn::Over
    }

    /// Time to first token and inter-token latency, as the engine sees them.
    fn record_token(&mut self) {
        let now = Instant::now();
        match self.last_token.replace(now) {
            None => metrics::histogram!("janus_time_to_first_token_seconds")
                .record(now.duration_since(self.accepted).as_secs_f64()),
            Some(prev) => {
                metrics::histogram!("janus_inter_token_seconds").record(now.duration_since(prev).as_secs_f64())
            }
        }
    }

    /// One token for each of `answers` (all decoding) in one batched step.
    pub fn step_together(model: &Janus, answers: &mut [&mut TextAnswer<'m>]) -> Vec<TextTurn> {
        Self::together_or_alone(answers, |sessions| model.step_texts(sessions))
    }

    /// The next prefill chunk of each of `answers` (all reading their prompt) in one pass over
    /// the weights; those whose prompt is then in get their first token.
    pub fn prefill_together(model: &Janus, answers: &mut [&mut TextAnswer<'m>]) -> Vec<TextTurn> {
        Self::together_or_alone(answers, |sessions| model.prefill_texts(sessions))
    }

    /// `step` for all `answers` together; if it fails, once more for each answer alone (so that
    /// one answer's fault, an out-of-memory batch say, fails no other).
    fn together_or_alone(
        answers: &mut [&mut TextAnswer<'m>],
        step: impl Fn(&mut [&mut TextSession<'m>]) -> janus::Result<TextPieces>,
    ) -> Vec<TextTurn> {
        match guarded(|| step(&mut Self::sessions(answers))) {
            Err(e) if answers.len() > 1 => {
                tracing::warn!(error = %e, answers = answers.len(), "a batched text step failed; each answer takes it alone");
                metrics::counter!("janus_text_steps_retried_alone_total").increment(answers.len() as u64);
                (answers.iter_mut())
                    .map(|a| {
                        let alone = guarded(|| step(&mut [&mut a.session]));
                        Self::deliver_all(&mut [&mut **a], alone).remove(0)
                    })
                    .collect()
            }
            stepped => Self::deliver_all(answers, stepped),
        }
    }

    /// The answers' sessions, for a step that takes them together.
    pub fn sessions<'a>(answers: &'a mut [&mut TextAnswer<'m>]) -> Vec<&'a mut TextSession<'m>> {
        answers.iter_mut().map(|a| &mut a.session).collect()
    }

    /// Sends what a step taken together gave each answer (or its shared failure).
    pub fn deliver_all(answers: &mut [&mut TextAnswer<'m>], stepped: Result<TextPieces, EngineError>) -> Vec<TextTurn> {
        match stepped {
            Ok(results) => {
                answers.iter_mut().zip(results).map(|(a, r)| a.deliver(r.map_err(EngineError::from))).collect()
            }
            Err(e) => answers.iter_mut().map(|a| a.deliver(Err(e.clone()))).collect(),
        }
    }
}
