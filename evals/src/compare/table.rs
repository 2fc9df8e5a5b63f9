//! The content both renderers share: the six task columns, a summary's cells, the warnings
//! (tiny test models, GenEval-style scorers), the scorer text and number formatting.

use crate::published::OFFICIAL_SCORER;
use crate::rules::{Summary, TAGS};

use super::load::Run;

/// Short column names of the six tasks, in [`TAGS`] order.
pub const TASK_HEADERS: [&str; 6] = ["Single", "Two", "Count", "Colors", "Position", "ColorAttr"];

/// The per-task and overall cells of one summary.
pub(super) struct ScoreCells {
    pub(super) tasks: [Option<(f64, usize, usize)>; 6],
    pub(super) overall: f64,
    /// All six tasks present (otherwise the overall is a partial mean).
    pub(super) complete: bool,
}

pub(super) fn score_cells(s: &Summary) -> ScoreCells {
    let mut tasks = [None; 6];
    for (i, tag) in TAGS.iter().enumerate() {
        tasks[i] = s.tasks.iter().find(|t| t.tag == *tag).map(|t| (t.score, t.correct, t.images));
    }
    ScoreCells { tasks, overall: s.overall, complete: tasks.iter().all(Option::is_some) }
}

/// The runs' labels, grouped by a key (in first-seen order).
fn grouped<'a>(runs: &'a [Run], key: impl Fn(&'a Run) -> Option<String>) -> Vec<(String, Vec<&'a str>)> {
    let mut groups: Vec<(String, Vec<&str>)> = Vec::new();
    for r in runs {
        let Some(k) = key(r) else { continue };
        match groups.iter_mut().find(|g| g.0 == k) {
            Some(g) => g.1.push(&r.label),
            None => groups.push((k, vec![&r.label])),
        }
    }
    groups
}

/// A caution printed above the tables.
pub(super) struct Warning {
    /// About tiny random test models (the HTML report shows these in their own colour).
    pub tiny: bool,
    pub text: String,
}

pub(super) fn warnings(runs: &[Run]) -> Vec<Warning> {
    let mut w = Vec::new();
    let mut push = |tiny: bool, text: String| w.push(Warning { tiny, text });
    for (model, labels) in grouped(runs, |r| r.tiny.then(|| r.model.clone())) {
        push(
            true,
            format!(
                "{}: {model} is a tiny random test model. Its images are noise and its numbers are meaningless; \
             it only shows that the pipeline runs.",
                labels.join(", ")
            ),
        );
    }
    let tiny_scorer = |r: &Run| {
        let s = r.scores.as_ref()?;
        s.test_models().then(|| format!("{}; {}", s.detector(), s.classifier()))
    };
    for (models, labels) in grouped(runs, tiny_scorer) {
        push(
            true,
            format!(
                "{}: scored with tiny random-weight test models ({models}): the verdicts mean nothing.",
                labels.join(", ")
            ),
        );
    }
    let style: Vec<&str> =
        runs.iter().filter(|r| r.scores.as_ref().is_some_and(|s| !s.official())).map(|r| r.label.as_str()).collect();
    if !style.is_empty() {
        push(
            false,
            format!(
                "GenEval-style: {} scored with another detector / colour classifier (named below) than the \
             {OFFICIAL_SCORER}. Those numbers are not comparable with published GenEval numbers.",
                style.join(", "),
            ),
        );
    }
    w
}

pub(super) fn scorer_text(r: &Run) -> String {
    match &r.scores {
        None => "not scored".to_string(),
        Some(s) => match &s.manifest {
            Some(m) => format!("{} ({})", s.kind(), m.scorer),
            None => s.kind().to_string(),
        },
    }
}

pub(super) fn f2(x: f64) -> String {
    if x.is_nan() {
        "–".to_string()
    } else {
        format!("{x:.2}")
    }
}
