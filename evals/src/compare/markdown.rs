//! The Markdown report (`report.md`, also printed): runs, their scores, published rows.

use std::fmt::Write as _;

use crate::published::{Published, OFFICIAL_SCORER};

use super::load::Run;
use super::table::{f2, score_cells, scorer_text, warnings, TASK_HEADERS};

fn md_cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

pub(super) fn markdown(runs: &[Run], published: &[&Published]) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "# GenEval comparison\n");
    for w in warnings(runs) {
        let _ = writeln!(o, "> **Warning:** {}\n", md_cell(&w.text));
    }
    let _ = writeln!(o, "## Runs\n");
    let _ = writeln!(o, "| Run | Model | Made with | Images | Detector | Colour classifier | Scorer |");
    let _ = writeln!(o, "| --- | --- | --- | --- | --- | --- | --- |");
    for r in runs {
        let (det, cls) = r.scores.as_ref().map_or(("–", "–"), |s| (s.detector(), s.classifier()));
        let _ = writeln!(
            o,
            "| {} | {}{} | {} | {} images, {} prompts | {} | {} | {} |",
            md_cell(&r.label),
            md_cell(&r.model),
            if r.tiny { " (tiny random test model)" } else { "" },
            md_cell(&r.setup),
            r.image_count(),
            r.images.len(),
            md_cell(det),
            md_cell(cls),
            md_cell(&scorer_text(r)),
        );
    }
    for r in runs.iter().filter(|r| !r.notes.is_empty()) {
        let _ = writeln!(o, "\n{}: {}", md_cell(&r.label), md_cell(&r.notes.join("; ")));
    }

    let _ = writeln!(o, "\n## Scores of these runs\n");
    let _ = writeln!(o, "Image-level accuracy per task (correct/images); overall = mean of the six tasks.\n");
    let _ = writeln!(o, "| Run | Scorer | {} | Overall |", TASK_HEADERS.join(" | "));
    let _ = writeln!(o, "| --- | --- |{} --- |", " --- |".repeat(6));
    let mut partial = false;
    for r in runs {
        let Some(s) = &r.scores else {
            let _ = writeln!(o, "| {} | not scored |{} – |", md_cell(&r.label), " – |".repeat(6));
            continue;
        };
        let c = score_cells(&s.summary);
        let tasks: Vec<String> =
            c.tasks.iter().map(|t| t.map_or("–".to_string(), |(x, k, n)| format!("{} ({k}/{n})", f2(x)))).collect();
        partial |= !c.complete && !c.overall.is_nan();
        let overall = if c.complete || c.overall.is_nan() { f2(c.overall) } else { format!("{}\\*", f2(c.overall)) };
        let _ = writeln!(o, "| {} | {} | {} | {overall} |", md_cell(&r.label), s.kind(), tasks.join(" | "));
    }
    if partial {
        let _ = writeln!(o, "\n\\* mean over the tasks scored only: not a GenEval overall, which needs all six.");
    }

    if !published.is_empty() {
        let _ = writeln!(o, "\n## Published numbers\n");
        let _ = writeln!(
            o,
            "As published, scored with the {OFFICIAL_SCORER}; DPG = DPG-Bench overall. \
             Comparable only with runs of the same scorer.\n"
        );
        let _ = writeln!(o, "| Model | {} | Overall | DPG | Source |", TASK_HEADERS.join(" | "));
        let _ = writeln!(o, "| --- |{} --- | --- | --- |", " --- |".repeat(6));
        for p in published {
            let tasks: Vec<String> = p.tasks.iter().map(|t| t.map_or("–".to_string(), f2)).collect();
            let mut source = p.source.to_string();
            if !p.note.is_empty() {
                let _ = write!(source, "; {}", p.note);
            }
            let _ = writeln!(
                o,
                "| {}{} (published) | {} | {} | {} | {} |",
                md_cell(p.model),
                if p.rewritten { " †" } else { "" },
                tasks.join(" | "),
                f2(p.overall),
                p.dpg.map_or("–".to_string(), |d| format!("{d:.2}")),
                md_cell(&source),
            );
        }
        if published.iter().any(|p| p.rewritten) {
            let _ = writeln!(o, "\n† evaluated with LLM-rewritten prompts: not comparable with plain GenEval.");
        }
    }
    o
}
