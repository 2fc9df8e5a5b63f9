//! Stop sequences (OpenAI's `stop`): the answer ends before the first occurrence of any of them,
//! which is not part of it. Text is released as it is decoded, except for the shortest tail that
//! could still begin a stop sequence: so a sequence split across tokens is caught, and no
//! released text is ever taken back.

/// The stop sequences of one answer and the text held back while it could begin one.
#[derive(Debug, Clone, Default)]
pub struct StopStrings {
    stops: Vec<String>,
    held: String,
    /// A stop sequence was met: nothing more is released.
    met: bool,
}

/// What [`StopStrings::push`] releases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Released {
    /// Text that is final.
    pub text: String,
    /// Whether a stop sequence was met (the answer ends; `text` is what came before it).
    pub stopped: bool,
}

impl StopStrings {
    /// Empty sequences are ignored.
    pub fn new(stops: &[String]) -> Self {
        Self { stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(), held: String::new(), met: false }
    }

    /// Takes new text: releases what can no longer be part of a stop sequence, or what comes
    /// before the first one met.
    pub fn push(&mut self, piece: &str) -> Released {
        if self.met {
            return Released { text: String::new(), stopped: true };
        }
        if self.stops.is_empty() {
            return Released { text: piece.to_string(), stopped: false };
        }
        self.held.push_str(piece);
        if let Some(at) = self.stops.iter().filter_map(|s| self.held.find(s.as_str())).min() {
            self.held.truncate(at);
            self.met = true;
            return Released { text: std::mem::take(&mut self.held), stopped: true };
        }
        let keep = self.longest_open_tail();
        let text = self.held[..self.held.len() - keep].to_string();
        self.held.drain(..self.held.len() - keep);
        Released { text, stopped: false }
    }

    /// The answer ended: what was held back is final (nothing once a stop sequence was met).
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    /// Bytes at the end of the held text that begin some stop sequence (on a character boundary).
    fn longest_open_tail(&self) -> usize {
        let held = &self.held;
        (held.char_indices())
            .map(|(i, _)| i)
            .find(|&i| self.stops.iter().any(|s| s.starts_with(&held[i..])))
            .map_or(0, |i| held.len() - i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (Vec<String>, bool, String) {
        let mut s = StopStrings::new(&stops.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let mut out = Vec::new();
        for p in pieces {
            let r = s.push(p);
            out.push(r.text);
            if r.stopped {
                return (out, true, String::new());
            }
        }
        (out, false, s.finish())
    }

    #[test]
    fn a_sequence_split_across_pieces_is_caught_and_not_released() {
        let (out, stopped, _) = run(&["END"], &["Hello E", "N", "D and more"]);
        assert_eq!(out, vec!["Hello ", "", ""]);
        assert!(stopped);
        let mut s = StopStrings::new(&["END".to_string()]);
        assert!(s.push("xENDy").stopped);
        assert_eq!((s.push("more END"), s.finish()), (Released { text: String::new(), stopped: true }, String::new()));
    }

    #[test]
    fn only_a_possible_beginning_is_held() {
        let (out, stopped, rest) = run(&["\n\n", "STOP"], &["ab\n", "c S", "T", "x"]);
        assert_eq!(out, vec!["ab", "\nc ", "", "STx"]);
        assert!(!stopped);
        assert_eq!(rest, "");
        let (out, stopped, rest) = run(&["xyz"], &["a x", "y"]);
        assert_eq!((out.concat(), stopped, rest), ("a ".to_string(), false, "xy".to_string()));
    }

    #[test]
    fn the_earliest_sequence_wins_and_characters_stay_whole() {
        let (out, stopped, _) = run(&["cd", "b"], &["abcd"]);
        assert_eq!((out.concat(), stopped), ("a".to_string(), true));
        let (out, _, rest) = run(&["é!"], &["café"]);
        assert_eq!((out.concat(), rest), ("caf".to_string(), "é".to_string()));
        let (out, stopped, _) = run(&[], &["any", "thing"]);
        assert_eq!((out.concat(), stopped), ("anything".to_string(), false));
    }
}
