//! Structured outputs: an answer held to a JSON schema, a regular expression, a Lark grammar or a
//! list of choices, by masking at each step the logits of every token the grammar does not allow
//! next. The engine is [llguidance] (the one llama.cpp, vLLM and SGLang use): an Earley parser over
//! lexemes matched by derivatives of regular expressions, walking the tokenizer's byte trie for
//! each mask (tens of microseconds a step for a 100k vocabulary).
//!
//! Two types, two lifetimes: [`Grammars`] is built once per model from its `tokenizer.json` (the
//! bytes of every token in a trie; seconds' worth of work not to repeat) and compiles specs;
//! [`Constraint`] is one answer's parser state, cloned into independent copies for the n answers
//! of one request.
//!
//! Choices made here, and why:
//! - **Which tokens a grammar may ever pick.** Only the tokenizer's ordinary tokens: its BPE
//!   vocabulary and any added token not flagged `special`. Special tokens (`<|User|>`,
//!   `<image_placeholder>`, BOS...) would end the answer or start an image mid-text; they are left
//!   out of the trie (so a Lark grammar naming one, `<|User|>`, does not compile) and masked out
//!   again after every mask (so a Lark token range, `<[405]>`, cannot reach them either). LM-head
//!   rows past the tokenizer's ids (Janus-Pro: 102,400 rows for about 100,015 ids) have no bytes
//!   and are never allowed.
//! - **EOS.** Allowed exactly where the grammar accepts (llguidance adds it to the mask then; we
//!   re-add it after the special-token filter for the same condition), and nowhere else. Where the
//!   grammar can take nothing more (a regex `[0-9]{3}` after three digits, a closed top-level JSON
//!   object) the constraint is [`Constraint::is_stopped`] and the caller ends the answer without
//!   drawing; a mask asked for then allows EOS alone, so no mask is ever all `-inf` while the
//!   answer may still end.
//! - **Whitespace in JSON.** llguidance's default lets any run of whitespace stand between JSON
//!   tokens, and a model that is not trained for it (Janus-Pro is not) can loop on newlines and
//!   spaces until `max_tokens`. We compile JSON with `whitespace_flexible: false` and the separators
//!   `", "` and `": "`: one line, the layout of Python's `json.dumps`, the most common in training
//!   text, with no room for runaway whitespace. A schema's own `x-guidance` options are replaced.
//! - **Tokenization.** The token environment is llguidance's approximate one (greedy, flagged
//!   non-canonical), so llguidance never forces a tokenization of grammar-forced bytes: the mask
//!   allows every token consistent with them and the model picks. (Forcing needs the model's own
//!   BPE behind the trie; not worth a second tokenizer here.)
//! - **Copies.** Cloning deep-copies llguidance's lexer cache, so answers stepped on different
//!   threads share no lock.
//!
//! [llguidance]: https://github.com/guidance-ai/llguidance

use std::sync::Arc;

use llguidance::api::{StopReason, TopLevelGrammar};
use llguidance::toktrie::{ApproximateTokEnv, TokEnv, TokRxInfo, TokTrie};
use llguidance::{JsonCompileOptions, Matcher, ParserFactory};
use serde_json::Value;

/// What an answer must match.
#[derive(Debug, Clone, PartialEq)]
pub enum ConstraintSpec {
    /// Any JSON object (OpenAI `response_format: {"type": "json_object"}`).
    JsonObject,
    /// A JSON schema (OpenAI `json_schema.schema`).
    JsonSchema(Value),
    /// A regular expression the whole answer matches.
    Regex(String),
    /// A Lark grammar (llguidance's dialect).
    Lark(String),
    /// Exactly one of these strings (vLLM `structured_outputs.choice`).
    Choice(Vec<String>),
}

/// Why a constraint could not be built or advanced.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConstraintError {
    /// The input is at fault: a spec that does not compile (bad schema, regex or grammar, empty
    /// choice list; llguidance's message), or a `tokenizer.json` / vocabulary size that
    /// [`Grammars::new`] cannot use.
    #[error("invalid constraint: {0}")]
    Invalid(String),
    /// The matcher failed at run time (a token it did not allow, a grammar too complex for its
    /// limits, a dead end where no token fits); the answer cannot go on under its constraint.
    #[error("constraint failure: {0}")]
    Internal(String),
}

/// The model's grammar compiler: built once per model from its tokenizer.json, shared (Clone is
/// cheap: Arc inside), Send + Sync.
#[derive(Clone)]
pub struct Grammars {
    inner: Arc<Shared>,
}

impl std::fmt::Debug for Grammars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grammars")
            .field("vocab_size", &self.inner.vocab_size)
            .field("eos", &self.inner.eos)
            .finish_non_exhaustive()
    }
}

/// What every constraint of one model shares.
struct Shared {
    factory: ParserFactory,
    /// One bit per LM-head row: set for the tokens a grammar may ever pick (not EOS, which is
    /// allowed by its own rule).
    ordinary: Arc<[u32]>,
    vocab_size: usize,
    eos: u32,
}

impl Grammars {
    /// `tokenizer_json`: the text of tokenizer.json; `vocab_size`: the LM head's rows (Janus-Pro:
    /// 102,400, more than the tokenizer's ids; rows with no token are always masked out); `eos`:
    /// the end-of-sentence id (the answer may end only where the grammar accepts).
    pub fn new(tokenizer_json: &str, vocab_size: usize, eos: u32) -> Result<Self, ConstraintError> {
        let json: Value = serde_json::from_str(tokenizer_json)
            .map_err(|e| ConstraintError::Invalid(format!("tokenizer.json does not parse: {e}")))?;
        let vocab_len = u32::try_from(vocab_size)
            .map_err(|_| ConstraintError::Invalid(format!("a vocabulary of {vocab_size} rows is too large")))?;
        if eos >= vocab_len {
            return Err(ConstraintError::Invalid(format!("EOS id {eos} is past the {vocab_size} rows of the LM head")));
        }
        // llguidance's reader asserts and unwraps on some malformed vocabularies: caught here.
        let mut words = llguidance::panic_utils::catch_unwind(|| llguidance::token_bytes_from_tokenizer_json(&json))
            .map_err(|e| ConstraintError::Invalid(format!("tokenizer.json: {e}")))?;
        if let Some(last) = words.iter().rposition(|w| !w.is_empty()) {
            if last >= vocab_size {
                let why = format!("the tokenizer has id {last}, past the {vocab_size} rows of the LM head");
                return Err(ConstraintError::Invalid(why));
            }
        }
        words.resize(vocab_size, Vec::new());
        // Special tokens and EOS get no bytes: out of the trie, no grammar can produce them.
        for id in special_ids(&json).into_iter().chain([eos as usize]) {
            if let Some(w) = words.get_mut(id) {
                w.clear();
            }
        }
        let mut ordinary = vec![0u32; vocab_size.div_ceil(32)];
        for (id, _) in words.iter().enumerate().filter(|(_, w)| !w.is_empty()) {
            ordinary[id / 32] |= 1 << (id % 32);
        }
        let info = TokRxInfo::new(vocab_len, eos);
        let trie = llguidance::panic_utils::catch_unwind(|| Ok(TokTrie::from(&info, &words)))
            .map_err(|e| ConstraintError::Invalid(format!("the token trie: {e}")))?;
        let env: TokEnv = Arc::new(ApproximateTokEnv::new(trie));
        let mut factory = ParserFactory::new_simple(&env).map_err(|e| ConstraintError::Internal(e.to_string()))?;
        // Warnings go to the grammar's own log, not to our stderr.
        factory.quiet();
        Ok(Self { inner: Arc::new(Shared { factory, ordinary: ordinary.into(), vocab_size, eos }) })
    }

    /// Compiles a spec; a spec that cannot compile (bad schema, bad regex, bad grammar, empty
    /// choice list) is `ConstraintError::Invalid(String)` with llguidance's message.
    pub fn compile(&self, spec: &ConstraintSpec) -> Result<Constraint, ConstraintError> {
        let grammar = match spec {
            ConstraintSpec::JsonObject => json_grammar(&serde_json::json!({ "type": "object" }))?,
            ConstraintSpec::JsonSchema(schema) => json_grammar(schema)?,
            ConstraintSpec::Regex(rx) => TopLevelGrammar::from_regex(rx),
            ConstraintSpec::Lark(lark) => TopLevelGrammar::from_lark(lark.clone()),
            ConstraintSpec::Choice(choices) => {
                if choices.is_empty() {
                    return Err(ConstraintError::Invalid("the choice list is empty".into()));
                }
                let alternatives: Vec<String> = choices.iter().map(|c| lark_literal(c)).collect();
                TopLevelGrammar::from_lark(format!("start: {}", alternatives.join(" | ")))
            }
        };
        let parser = self.inner.factory.create_parser(grammar).map_err(|e| ConstraintError::Invalid(e.to_string()))?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(ConstraintError::Invalid(e));
        }
        Ok(Constraint {
            matcher: Box::new(matcher),
            ordinary: self.inner.ordinary.clone(),
            vocab_size: self.inner.vocab_size,
            eos: self.inner.eos,
        })
    }
}

/// The ids of `added_tokens` flagged `special`.
fn special_ids(tokenizer: &Value) -> Vec<usize> {
    let Some(added) = tokenizer["added_tokens"].as_array() else { return Vec::new() };
    added
        .iter()
        .filter(|t| t["special"].as_bool() == Some(true))
        .filter_map(|t| t["id"].as_u64().and_then(|id| usize::try_from(id).ok()))
        .collect()
}

/// How JSON is laid out (see the module doc): one line, fixed separators, no free whitespace.
fn json_options() -> JsonCompileOptions {
    JsonCompileOptions {
        item_separator: ", ".into(),
        key_separator: ": ".into(),
        whitespace_flexible: false,
        ..JsonCompileOptions::default()
    }
}

/// A schema with our JSON options in its `x-guidance` (how llguidance takes options for a schema).
fn json_grammar(schema: &Value) -> Result<TopLevelGrammar, ConstraintError> {
    let mut schema = match schema {
        Value::Object(map) => map.clone(),
        // `true` is the schema that accepts anything, as `{}` does.
        Value::Bool(true) => serde_json::Map::new(),
        Value::Bool(false) => return Err(ConstraintError::Invalid("the schema `false` accepts nothing".into())),
        other => return Err(ConstraintError::Invalid(format!("a JSON schema is an object or a boolean, not {other}"))),
    };
    let options = serde_json::to_value(json_options()).map_err(|e| ConstraintError::Internal(e.to_string()))?;
    schema.insert("x-guidance".into(), options);
    Ok(TopLevelGrammar::from_json_schema(Value::Object(schema)))
}

/// A Lark string literal matching `s` exactly (JSON string syntax, with DEL escaped too, which
/// llguidance's Lark lexer does not take raw).
fn lark_literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// One answer's constraint state. `Send`; `Clone` gives a fresh, independent copy (its own parser
/// and lexer cache), so that n answers of one request each get their own state from one compile.
pub struct Constraint {
    /// Boxed: the parser state is nearly 2 kB, and requests carrying a constraint are moved
    /// through queues.
    matcher: Box<Matcher>,
    ordinary: Arc<[u32]>,
    vocab_size: usize,
    eos: u32,
}

/// The parser state is llguidance's and has no useful print: where the answer stands instead.
impl std::fmt::Debug for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Constraint").field("stop_reason", &self.matcher.stop_reason()).finish_non_exhaustive()
    }
}

impl Clone for Constraint {
    fn clone(&self) -> Self {
        Self {
            matcher: Box::new(self.matcher.deep_clone()),
            ordinary: self.ordinary.clone(),
            vocab_size: self.vocab_size,
            eos: self.eos,
        }
    }
}

impl Constraint {
    /// Sets every logit the grammar does not allow next to -inf (EOS allowed only where the answer
    /// may end). Never leaves all logits at -inf while the grammar can still go on: a grammar left
    /// with no token it may take is an `Internal` error, and the logits are then untouched.
    pub fn mask(&mut self, logits: &mut [f32]) -> Result<(), ConstraintError> {
        if logits.len() != self.vocab_size {
            let why = format!("{} logits for a vocabulary of {}", logits.len(), self.vocab_size);
            return Err(ConstraintError::Internal(why));
        }
        // Stopped: the EOS set alone (the caller should have ended the answer).
        let allowed = self.matcher.compute_mask_or_eos().map_err(internal)?;
        let eos_ok = self.may_end()?;
        let (eos_word, eos_bit) = (self.eos as usize / 32, 1u32 << (self.eos % 32));
        let allowed = allowed.as_slice();
        let word = |i: usize| {
            let bits = allowed.get(i).copied().unwrap_or(0) & self.ordinary[i];
            if eos_ok && i == eos_word {
                bits | eos_bit
            } else {
                bits
            }
        };
        if (0..self.ordinary.len()).all(|i| word(i) == 0) {
            return Err(ConstraintError::Internal("the grammar allows no token of the vocabulary here".into()));
        }
        for (i, chunk) in logits.chunks_mut(32).enumerate() {
            match word(i) {
                u32::MAX => {}
                0 => chunk.fill(f32::NEG_INFINITY),
                bits => {
                    for (b, logit) in chunk.iter_mut().enumerate() {
                        if bits & (1 << b) == 0 {
                            *logit = f32::NEG_INFINITY;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Advances past the picked token (EOS included). A token the constraint does not allow now
    /// (a special token, a row past the tokenizer, EOS where the grammar cannot end, anything after
    /// the grammar stopped but EOS) is an `Internal` error.
    pub fn consume(&mut self, token: u32) -> Result<(), ConstraintError> {
        if token == self.eos {
            if !self.may_end()? {
                return Err(ConstraintError::Internal("EOS where the grammar cannot end".into()));
            }
            if self.is_stopped() {
                return Ok(());
            }
        } else {
            let id = token as usize;
            let ordinary = id < self.vocab_size && self.ordinary[id / 32] & (1 << (id % 32)) != 0;
            if !ordinary {
                return Err(ConstraintError::Internal(format!("token {token} is never allowed by a grammar")));
            }
            if self.is_stopped() {
                return Err(ConstraintError::Internal(format!("token {token} after the grammar ended")));
            }
        }
        self.matcher.consume_token(token).map_err(internal)
    }

    /// Whether the grammar can take nothing more (the answer must end now: the caller then
    /// finishes it with finish reason "stop").
    pub fn is_stopped(&self) -> bool {
        let reason = self.matcher.stop_reason();
        reason != StopReason::NotStopped && reason.is_ok()
    }

    /// Whether EOS may come now: the grammar accepts what it has, or has ended.
    fn may_end(&mut self) -> Result<bool, ConstraintError> {
        Ok(self.is_stopped() || self.matcher.is_accepting().map_err(internal)?)
    }
}

fn internal(e: impl std::fmt::Display) -> ConstraintError {
    ConstraintError::Internal(e.to_string())
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::path::{Path, PathBuf};
    use std::time::{Duration, Instant};

    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use serde_json::json;
    use tokenizers::Tokenizer;

    use super::*;

    /// Rows of the LM head in these tests: more than the fixture's 414 ids.
    const VOCAB: usize = 512;

    fn fixture_path() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/tiny/janus-pro-tiny/tokenizer.json")
    }

    /// The fixture: its text, its tokenizer, its EOS and its special ids.
    struct Fixture {
        json: String,
        tokenizer: Tokenizer,
        eos: u32,
        specials: Vec<u32>,
        /// Ids the tokenizer has (ordinary and added).
        len: usize,
    }

    fn fixture() -> Fixture {
        let json = std::fs::read_to_string(fixture_path()).unwrap();
        let tokenizer = Tokenizer::from_file(fixture_path()).unwrap();
        let value: Value = serde_json::from_str(&json).unwrap();
        let added = value["added_tokens"].as_array().unwrap();
        let id_of = |t: &Value| t["id"].as_u64().unwrap() as u32;
        let eos = added.iter().find(|t| t["content"] == "<｜end▁of▁sentence｜>").map(id_of).unwrap();
        let specials: Vec<u32> = added.iter().filter(|t| t["special"] == true).map(id_of).collect();
        let len = tokenizer.get_vocab_size(true);
        assert_eq!(len, 414);
        Fixture { json, tokenizer, eos, specials, len }
    }

    fn grammars(f: &Fixture) -> Grammars {
        Grammars::new(&f.json, VOCAB, f.eos).unwrap()
    }

    /// How a walk ended.
    #[derive(Debug, PartialEq)]
    enum End {
        Eos,
        Stopped,
        Limit,
    }

    /// A random answer under `c`: random logits, the mask, a uniform pick among what is left
    /// (EOS taken with probability 0.8 when allowed; with probability 0.6 a token from `closers`
    /// when one is allowed, so that JSON closes). Checks at each step that special
    /// tokens (but EOS) and rows past the tokenizer are masked.
    fn walk(
        c: &mut Constraint,
        f: &Fixture,
        rng: &mut ChaCha8Rng,
        closers: &[bool],
        max_steps: usize,
    ) -> (Vec<u32>, End) {
        let mut tokens = Vec::new();
        for _ in 0..max_steps {
            if c.is_stopped() {
                return (tokens, End::Stopped);
            }
            let mut logits: Vec<f32> = (0..VOCAB).map(|_| rng.random_range(-5.0..5.0)).collect();
            c.mask(&mut logits).unwrap();
            for &s in f.specials.iter().filter(|&&s| s != f.eos) {
                assert_eq!(logits[s as usize], f32::NEG_INFINITY, "special token {s} allowed");
            }
            assert!(logits[f.len..].iter().all(|&l| l == f32::NEG_INFINITY), "a row past the tokenizer allowed");
            let allowed: Vec<u32> = (0..VOCAB as u32).filter(|&t| logits[t as usize].is_finite()).collect();
            assert!(!allowed.is_empty());
            let others: Vec<u32> = allowed.iter().copied().filter(|&t| t != f.eos).collect();
            if allowed.contains(&f.eos) && (others.is_empty() || rng.random_bool(0.8)) {
                c.consume(f.eos).unwrap();
                return (tokens, End::Eos);
            }
            let close: Vec<u32> = others.iter().copied().filter(|&t| closers[t as usize]).collect();
            let from = if !close.is_empty() && rng.random_bool(0.6) { &close } else { &others };
            let t = from[rng.random_range(0..from.len())];
            c.consume(t).unwrap();
            tokens.push(t);
        }
        (tokens, End::Limit)
    }

    /// Tokens whose text has a character that closes a JSON value or moves past one.
    fn json_closers(f: &Fixture) -> Vec<bool> {
        (0..VOCAB as u32)
            .map(|t| f.tokenizer.id_to_token(t).is_some_and(|s| s.contains(['"', '}', ']', ','])))
            .collect()
    }

    /// Whether JSON text has whitespace outside its strings only as one space after `,` and `:`.
    fn one_line(text: &str) -> bool {
        let (mut in_string, mut escaped, mut prev) = (false, false, ' ');
        for c in text.chars() {
            if in_string {
                (in_string, escaped) = (escaped || c != '"', !escaped && c == '\\');
            } else if c == '"' {
                in_string = true;
            } else if c.is_whitespace() && !(c == ' ' && matches!(prev, ',' | ':')) {
                return false;
            }
            prev = c;
        }
        true
    }

    fn decode(f: &Fixture, tokens: &[u32]) -> String {
        f.tokenizer.decode(tokens, false).unwrap()
    }

    #[test]
    fn json_object_walks_parse_as_objects() {
        let f = fixture();
        let compiled = grammars(&f).compile(&ConstraintSpec::JsonObject).unwrap();
        // No whitespace before the object nor after its `{`.
        let mut c = compiled.clone();
        for step in 0..2 {
            let mut logits = vec![0.0f32; VOCAB];
            c.mask(&mut logits).unwrap();
            let allowed: Vec<u32> = (0..VOCAB as u32).filter(|&t| logits[t as usize].is_finite()).collect();
            for &t in &allowed {
                assert!(!decode(&f, &[t]).starts_with(char::is_whitespace), "step {step}: {:?}", decode(&f, &[t]));
            }
            if step == 0 {
                c.consume(f.tokenizer.token_to_id("{").unwrap()).unwrap();
            }
        }
        let closers = json_closers(&f);
        for seed in 0..12 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut c = compiled.clone();
            let (tokens, end) = walk(&mut c, &f, &mut rng, &closers, 400);
            let text = decode(&f, &tokens);
            assert_ne!(end, End::Limit, "seed {seed}: {text:?}");
            let value: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("seed {seed}: {e}: {text:?}"));
            assert!(value.is_object(), "{text:?}");
            assert!(one_line(&text), "free whitespace: {text:?}");
        }
    }

    #[test]
    fn json_schema_walks_have_its_fields() {
        let f = fixture();
        let schema = json!({
            "type": "object",
            "properties": {"colour": {"enum": ["red", "green"]}, "count": {"type": "integer"}},
            "required": ["colour", "count"],
            "additionalProperties": false
        });
        let compiled = grammars(&f).compile(&ConstraintSpec::JsonSchema(schema)).unwrap();
        let closers = json_closers(&f);
        let mut colours = HashSet::new();
        for seed in 0..12 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut c = compiled.clone();
            let (tokens, end) = walk(&mut c, &f, &mut rng, &closers, 400);
            let text = decode(&f, &tokens);
            assert_ne!(end, End::Limit, "seed {seed}: {text:?}");
            let value: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("seed {seed}: {e}: {text:?}"));
            let object = value.as_object().unwrap();
            assert_eq!(object.len(), 2, "{text:?}");
            let colour = object["colour"].as_str().unwrap();
            assert!(["red", "green"].contains(&colour), "{text:?}");
            assert!(object["count"].is_i64() || object["count"].is_u64(), "{text:?}");
            colours.insert(colour.to_string());
        }
        assert_eq!(colours.len(), 2, "both colours drawn in 12 walks");
    }

    #[test]
    fn regex_walks_give_three_digits() {
        let f = fixture();
        let compiled = grammars(&f).compile(&ConstraintSpec::Regex("[0-9]{3}".into())).unwrap();
        let none = vec![false; VOCAB];
        for seed in 0..8 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut c = compiled.clone();
            let (tokens, end) = walk(&mut c, &f, &mut rng, &none, 10);
            let text = decode(&f, &tokens);
            assert_eq!(end, End::Stopped, "{text:?}");
            assert!(text.len() == 3 && text.bytes().all(|b| b.is_ascii_digit()), "{text:?}");
        }
    }

    #[test]
    fn choice_walks_give_one_choice() {
        let f = fixture();
        let spec = ConstraintSpec::Choice(vec!["yes".into(), "no".into()]);
        let compiled = grammars(&f).compile(&spec).unwrap();
        let none = vec![false; VOCAB];
        let mut seen = HashSet::new();
        for seed in 0..16 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut c = compiled.clone();
            let (tokens, end) = walk(&mut c, &f, &mut rng, &none, 10);
            let text = decode(&f, &tokens);
            assert_ne!(end, End::Limit);
            assert!(text == "yes" || text == "no", "{text:?}");
            seen.insert(text);
        }
        assert_eq!(seen.len(), 2);
    }

    #[test]
    fn choice_strings_are_taken_literally() {
        let f = fixture();
        let odd = "a\"b\\c|d\u{7f}";
        let compiled = grammars(&f).compile(&ConstraintSpec::Choice(vec![odd.into()])).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let (tokens, end) = walk(&mut compiled.clone(), &f, &mut rng, &vec![false; VOCAB], 20);
        assert_ne!(end, End::Limit);
        assert_eq!(decode(&f, &tokens), odd);
    }

    #[test]
    fn lark_walks_match_the_grammar() {
        let f = fixture();
        let lark = "start: \"(\" NUMBER (\",\" NUMBER)* \")\"\nNUMBER: /[0-9]{1,3}/\n";
        let compiled = grammars(&f).compile(&ConstraintSpec::Lark(lark.into())).unwrap();
        let closers: Vec<bool> =
            (0..VOCAB as u32).map(|t| f.tokenizer.id_to_token(t).is_some_and(|s| s.contains(')'))).collect();
        for seed in 0..8 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let (tokens, end) = walk(&mut compiled.clone(), &f, &mut rng, &closers, 100);
            let text = decode(&f, &tokens);
            assert_ne!(end, End::Limit, "{text:?}");
            let inner = text.strip_prefix('(').and_then(|t| t.strip_suffix(')')).unwrap_or_else(|| panic!("{text:?}"));
            for n in inner.split(',') {
                assert!((1..=3).contains(&n.len()) && n.bytes().all(|b| b.is_ascii_digit()), "{text:?}");
            }
        }
    }

    /// EOS is allowed exactly where the grammar accepts: `[0-9]+` after one digit or more.
    #[test]
    fn eos_only_where_the_grammar_accepts() {
        let f = fixture();
        let mut c = grammars(&f).compile(&ConstraintSpec::Regex("[0-9]+".into())).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for step in 0..20 {
            let mut logits = vec![0.0f32; VOCAB];
            c.mask(&mut logits).unwrap();
            assert_eq!(logits[f.eos as usize].is_finite(), step > 0, "step {step}");
            let digits: Vec<u32> = (0..VOCAB as u32)
                .filter(|&t| logits[t as usize].is_finite() && t != f.eos)
                .inspect(|&t| assert!(decode(&f, &[t]).bytes().all(|b| b.is_ascii_digit())))
                .collect();
            assert!(!digits.is_empty());
            c.consume(digits[rng.random_range(0..digits.len())]).unwrap();
        }
        c.consume(f.eos).unwrap();
        assert!(c.is_stopped());
        // After the end only EOS, never an all -inf mask.
        let mut logits = vec![0.0f32; VOCAB];
        c.mask(&mut logits).unwrap();
        let finite: Vec<usize> = (0..VOCAB).filter(|&t| logits[t].is_finite()).collect();
        assert_eq!(finite, vec![f.eos as usize]);

        // EOS before the grammar may end is refused.
        let mut c = grammars(&f).compile(&ConstraintSpec::Regex("[0-9]+".into())).unwrap();
        assert!(matches!(c.consume(f.eos), Err(ConstraintError::Internal(_))));
    }

    #[test]
    fn bad_specs_are_invalid() {
        let f = fixture();
        let g = grammars(&f);
        let bad = [
            ConstraintSpec::Regex("[0-9".into()),
            ConstraintSpec::Regex("(ab".into()),
            ConstraintSpec::Lark("start: ((".into()),
            ConstraintSpec::Lark("start: undefined_rule".into()),
            ConstraintSpec::Choice(vec![]),
            ConstraintSpec::JsonSchema(json!({"type": 5})),
            ConstraintSpec::JsonSchema(json!({"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}})),
            ConstraintSpec::JsonSchema(json!(5)),
            ConstraintSpec::JsonSchema(json!(false)),
        ];
        for spec in bad {
            match g.compile(&spec) {
                Err(ConstraintError::Invalid(msg)) => assert!(!msg.is_empty()),
                Err(e) => panic!("{spec:?}: {e:?}"),
                Ok(_) => panic!("{spec:?} compiled"),
            }
        }
        assert!(g.compile(&ConstraintSpec::JsonSchema(json!(true))).is_ok());
    }

    /// Special tokens are out of every grammar: a Lark grammar cannot name them, and a token
    /// range reaching them (`<[...]>`) is filtered; rows past the tokenizer likewise.
    #[test]
    fn special_tokens_and_empty_rows_never_allowed() {
        let f = fixture();
        let g = grammars(&f);
        for name in ["<|User|>", "<image_placeholder>", "<｜end▁of▁sentence｜>"] {
            let spec = ConstraintSpec::Lark(format!("start: \"a\" {name}"));
            assert!(matches!(g.compile(&spec), Err(ConstraintError::Invalid(_))), "{name}");
        }
        // Any token: only the tokenizer's ordinary ones come through.
        let mut c = g.compile(&ConstraintSpec::Lark("start: <[*]>".into())).unwrap();
        let mut logits = vec![0.0f32; VOCAB];
        c.mask(&mut logits).unwrap();
        let finite: Vec<usize> = (0..VOCAB).filter(|&t| logits[t].is_finite()).collect();
        assert_eq!(finite, (0..400).collect::<Vec<_>>());
        assert!(matches!(c.consume(405), Err(ConstraintError::Internal(_))));
        assert!(matches!(c.consume(450), Err(ConstraintError::Internal(_))));
        // A grammar that demands a special token: an error, never an all -inf mask.
        let mut c = g.compile(&ConstraintSpec::Lark("start: <[405]>".into())).unwrap();
        let mut logits = vec![0.0f32; VOCAB];
        assert!(matches!(c.mask(&mut logits), Err(ConstraintError::Internal(_))));
        assert!(logits.iter().all(|&l| l == 0.0), "logits touched by a failed mask");
        // A wrong logits length.
        let mut c = g.compile(&ConstraintSpec::JsonObject).unwrap();
        assert!(matches!(c.mask(&mut [0.0; 100]), Err(ConstraintError::Internal(_))));
    }

    #[test]
    fn grammars_refuse_bad_inputs() {
        let f = fixture();
        assert!(matches!(Grammars::new("{", VOCAB, f.eos), Err(ConstraintError::Invalid(_))));
        assert!(matches!(Grammars::new(&f.json, VOCAB, VOCAB as u32), Err(ConstraintError::Invalid(_))));
        assert!(matches!(Grammars::new(&f.json, 300, 10), Err(ConstraintError::Invalid(_))));
        assert!(matches!(Grammars::new("{\"decoder\": null}", VOCAB, 1), Err(ConstraintError::Invalid(_))));
    }

    #[test]
    fn copies_are_independent() {
        let f = fixture();
        let id = |s: &str| f.tokenizer.token_to_id(s).unwrap();
        let (y, e, s, n, o) = (id("y"), id("e"), id("s"), id("n"), id("o"));
        let spec = ConstraintSpec::Choice(vec!["yes".into(), "no".into()]);
        let mut a = grammars(&f).compile(&spec).unwrap();
        let mut b = a.clone();
        let allowed = |c: &mut Constraint| {
            let mut logits = vec![0.0f32; VOCAB];
            c.mask(&mut logits).unwrap();
            logits
        };
        a.consume(y).unwrap();
        let after_y = allowed(&mut a);
        assert!(after_y[e as usize].is_finite() && !after_y[n as usize].is_finite());
        let fresh = allowed(&mut b);
        assert!(fresh[y as usize].is_finite() && fresh[n as usize].is_finite() && !fresh[e as usize].is_finite());
        b.consume(n).unwrap();
        b.consume(o).unwrap();
        assert!(b.is_stopped());
        assert!(!a.is_stopped());
        assert!(matches!(a.consume(o), Err(ConstraintError::Internal(_))), "b's path is not a's");
        let mut c = grammars(&f).compile(&spec).unwrap();
        c.consume(y).unwrap();
        c.consume(e).unwrap();
        c.consume(s).unwrap();
        assert!(c.is_stopped());
    }

    #[test]
    fn shared_across_threads() {
        fn send_sync<T: Send + Sync>() {}
        fn send<T: Send>() {}
        send_sync::<Grammars>();
        send::<Constraint>();
        send_sync::<ConstraintError>();
    }

    /// The byte → char map of byte-level BPE (GPT-2's), for writing a synthetic vocabulary.
    fn byte_level_chars() -> Vec<char> {
        let mut k = 0x100u32;
        (0..=255u8)
            .map(|b| {
                let c = b as char;
                if matches!(c, '!'..='~' | '\u{a1}'..='\u{ac}' | '\u{ae}'..='\u{ff}') {
                    c
                } else {
                    k += 1;
                    char::from_u32(k - 1).unwrap()
                }
            })
            .collect()
    }

    /// Times `mask` per step on a synthetic byte-level vocabulary of 100,000 tokens (the 256
    /// bytes, then random words of letters, digits and JSON punctuation, half with a leading
    /// space) in a 102,400-row LM head, over random walks of 200 masks for `json_object` and for
    /// a small schema. `cargo test --release -p janus-model mask_time -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn mask_time_on_a_100k_vocabulary() {
        const TOKENS: usize = 100_000;
        const ROWS: usize = 102_400;
        let f = fixture();
        let chars = byte_level_chars();
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let alphabet: Vec<char> =
            "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123456789{}[]\":,.-_"
                .chars()
                .collect();
        let mut seen: HashSet<String> = chars.iter().map(|c| c.to_string()).collect();
        let mut vocab: Vec<String> = chars.iter().map(|c| c.to_string()).collect();
        while vocab.len() < TOKENS {
            let len = rng.random_range(2..=8);
            let mut word = if rng.random_bool(0.5) { String::from('Ġ') } else { String::new() };
            word.extend((0..len).map(|_| alphabet[rng.random_range(0..alphabet.len())]));
            if seen.insert(word.clone()) {
                vocab.push(word);
            }
        }
        let mut json: Value = serde_json::from_str(&f.json).unwrap();
        json["model"]["vocab"] = Value::Object(vocab.iter().enumerate().map(|(i, w)| (w.clone(), json!(i))).collect());
        json["model"]["merges"] = json!([]);
        let mut eos = 0;
        for (i, t) in json["added_tokens"].as_array_mut().unwrap().iter_mut().enumerate() {
            t["id"] = json!(TOKENS + i);
            if t["content"] == "<｜end▁of▁sentence｜>" {
                eos = (TOKENS + i) as u32;
            }
        }
        let text = serde_json::to_string(&json).unwrap();
        let start = Instant::now();
        let g = Grammars::new(&text, ROWS, eos).unwrap();
        println!("Grammars::new on {TOKENS} tokens: {:.0} ms", start.elapsed().as_secs_f64() * 1e3);
        let closers: Vec<bool> =
            (0..ROWS).map(|t| vocab.get(t).is_some_and(|w| w.contains(['"', '}', ']', ',']))).collect();

        let schema = json!({
            "type": "object",
            "properties": {"colour": {"enum": ["red", "green"]}, "count": {"type": "integer"}},
            "required": ["colour", "count"],
            "additionalProperties": false
        });
        for (name, spec) in
            [("json_object", ConstraintSpec::JsonObject), ("json_schema", ConstraintSpec::JsonSchema(schema))]
        {
            let start = Instant::now();
            let compiled = g.compile(&spec).unwrap();
            let compile = start.elapsed();
            let mut times: Vec<Duration> = Vec::new();
            let mut answers = 0;
            let mut logits = vec![0.0f32; ROWS];
            while times.len() < 200 {
                let mut c = compiled.clone();
                answers += 1;
                while times.len() < 200 && !c.is_stopped() {
                    logits.iter_mut().for_each(|l| *l = 0.0);
                    let start = Instant::now();
                    c.mask(&mut logits).unwrap();
                    times.push(start.elapsed());
                    let allowed: Vec<u32> = (0..ROWS as u32).filter(|&t| logits[t as usize].is_finite()).collect();
                    if allowed.contains(&eos) {
                        break;
                    }
                    let close: Vec<u32> = allowed.iter().copied().filter(|&t| closers[t as usize]).collect();
                    let from = if !close.is_empty() && rng.random_bool(0.5) { &close } else { &allowed };
                    c.consume(from[rng.random_range(0..from.len())]).unwrap();
                }
            }
            let ms = |d: Duration| d.as_secs_f64() * 1e3;
            let mean = times.iter().map(|&d| ms(d)).sum::<f64>() / times.len() as f64;
            let max = times.iter().map(|&d| ms(d)).fold(0.0, f64::max);
            println!(
                "{name}: compile {:.2} ms; mask over {} steps ({answers} answers): mean {mean:.3} ms, max {max:.3} ms",
                ms(compile),
                times.len()
            );
        }
    }
}
