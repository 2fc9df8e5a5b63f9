//! Image understanding, the text path: a conversation in, text out, token by token.
//!
//! | file | what |
//! | --- | --- |
//! | `conversation.rs` | the conversation and the reference's chat template, as pieces |
//! | `prompt.rs` | `Prompter`: a request tokenized in one pass and its images prepared, without the weights |
//! | `session.rs` | `TextSession`: one answer, a prefill chunk or a token per step |
//! | `constraint.rs` | `Grammars`, `Constraint`: structured outputs (JSON schema, regex, Lark, choice) as token masks |
//! | `picker.rs` | `Picker`: penalties, the constraint's mask, the draw and the log-probabilities of one answer |
//! | `stop.rs` | `StopStrings`: the answer ends before a stop sequence, held back while one may begin |
//! | `batch.rs` | answers arriving together, prefilled together, stepped together |
//! | `shared_step.rs` | image rows and text rows in one forward |
//! | `prefix_cache.rs` | the keys and values of prompt prefixes, shared across answers |

pub mod batch;
pub mod constraint;
pub mod conversation;
pub mod picker;
pub mod prefix_cache;
pub mod prompt;
pub mod session;
pub mod shared_step;
pub mod stop;
