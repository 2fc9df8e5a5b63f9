//! Text answers in the engine: one [`TextSession`] per chat request. A turn runs one prefill
//! chunk for each answer still reading its prompt, all in one pass ([`Janus::prefill_texts`]),
//! and one batched step ([`Janus::step_texts`]) that gives every other answer its next token.
//! A step taken together that fails is taken again by each answer alone (a failed step leaves
//! nothing behind), so only an answer that fails alone fails. A request for `n` answers starts
//! its first; the others start once it has read the prompt ([`TextAnswer::take_followers`]),
//! so they find the prompt in the prefix cache.

use std::time::Instant;

use janus::text::batch::TextPieces;
use janus::{Janus, TextRequest, TextSession};
use tokio::sync::mpsc;

use super::error::{guarded, EngineError};
use super::{ChatEvent, ChatRequest};

/// An answer about to start.
pub(super) struct Starting {
    text: TextRequest,
    index: usize,
    /// The request's other answers, which start after this one has read the prompt.
    followers: Vec<(usize, TextRequest)>,
    tx: mpsc::Sender<ChatEvent>,
    accepted: Instant,
}

impl Starting {
    /// The first answer of `req`, the others its followers (each on its own seed stream). The
    /// request's image memory is given back here: the followers' prompts share its pixels.
    pub fn new(req: ChatRequest, tx: mpsc::Sender<ChatEvent>, accepted: Instant) -> Self {
        let ChatRequest { text, hold: _, n } = req;
        let followers = (1..n).map(|i| (i, TextRequest { params: text.params.answer(i), ..text.clone() })).collect();
        Self { text, index: 0, followers, tx, accepted }
    }

    /// Answers still to start, this one included.
    pub fn answers(&self) -> usize {
        1 + self.followers.len()
    }
}

pub(super) struct TextAnswer<'m> {
    session: TextSession<'m>,
    /// Which answer of its request it is.
    index: usize,
    followers: Vec<(usize, TextRequest)>,
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
    /// Embeds the answers starting together (their images encoded in one batch) and sends each
    /// request's first `Started`, or `Failed` to those that cannot start. The requests (their
    /// pixels) are dropped once read. Returns the answers started and how many answers did not
    /// start (those failed, and their followers).
    pub fn start_many(model: &'m Janus, starting: Vec<Starting>) -> (Vec<Self>, usize) {
        let texts: Vec<_> = starting.iter().map(|s| &s.text).collect();
        let started = guarded(|| model.text_sessions(&texts));
        let results: Vec<Result<TextSession<'m>, EngineError>> = match started {
            Ok(sessions) => sessions.into_iter().map(|s| s.map_err(EngineError::from)).collect(),
            Err(e) => starting.iter().map(|_| Err(e.clone())).collect(),
        };
        let mut failed = 0;
        let answers = (starting.into_iter().zip(results))
            .filter_map(|(s, r)| match r {
                Ok(session) => {
                    if s.index == 0 {
                        let _ = s.tx.try_send(ChatEvent::Started { prompt_tokens: session.prompt_tokens() });
                    }
                    let (index, followers, tx, accepted) = (s.index, s.followers, s.tx, s.accepted);
                    Some(Self { session, index, followers, tx, accepted, last_token: None, sent_tokens: 0 })
                }
                Err(e) => {
                    failed += s.answers();
                    let _ = s.tx.try_send(ChatEvent::Failed(e));
                    None
                }
            })
            .collect();
        (answers, failed)
    }

    /// Answers waiting for this one to read the prompt, counted as running.
    pub fn waiting_followers(&self) -> usize {
        self.followers.len()
    }

    /// Once this answer has read its prompt (the prefix cache then holds it), the request's
    /// other answers, to start now.
    pub fn take_followers(&mut self) -> Vec<Starting> {
        if self.followers.is_empty() || self.session.is_prefilling() {
            return Vec::new();
        }
        let (tx, accepted) = (&self.tx, self.accepted);
        (std::mem::take(&mut self.followers).into_iter())
            .map(|(index, text)| Starting { text, index, followers: Vec::new(), tx: tx.clone(), accepted })
            .collect()
    }

    pub fn is_gone(&self) -> bool {
        self.tx.is_closed()
    }

    /// Whether it ended with its answer complete (not failed, not abandoned).
    pub fn is_finished(&self) -> bool {
        self.session.is_done()
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
                let logprobs = self.session.take_logprobs();
                let new_token = tokens > self.sent_tokens;
                if new_token {
                    self.sent_tokens = tokens;
                    self.record_token();
                }
                // One event per token, text or not (a token may complete no character yet), and
                // one for text without a token (what an ending releases) or the EOS's logprobs.
                if new_token || piece.is_some() || !logprobs.is_empty() {
                    let text = piece.unwrap_or_default();
                    let _ = self.tx.try_send(ChatEvent::Delta { index: self.index, text, logprobs });
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
            index: self.index,
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
