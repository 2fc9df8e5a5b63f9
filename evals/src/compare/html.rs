//! The self-contained HTML report (`report.html`): the Markdown report's tables plus a contact
//! sheet of thumbnails with each run's verdicts; no external URL.

use std::fmt::Write as _;

use crate::published::{Published, OFFICIAL_SCORER};

use super::load::Run;
use super::sheet::thumbnail;
use super::table::{f2, score_cells, warnings, TASK_HEADERS};

/// Escapes text for HTML element content and quoted attributes.
fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            _ => o.push(c),
        }
    }
    o
}

const CSS: &str = "
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px;color:#1d1d1f;background:#fff}
h1{font-size:22px;margin:0 0 12px}h2{font-size:17px;margin:26px 0 8px}
table{border-collapse:collapse;margin:6px 0}th,td{border:1px solid #d6d6d6;padding:4px 8px;vertical-align:top}
th{background:#f3f3f3;text-align:left}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.warn{background:#fff4e5;border-left:4px solid #e67e00;padding:8px 12px;margin:8px 0}
.tiny{background:#fde8e8;border-left-color:#c62828;font-weight:600}
.muted{color:#666}.small{font-size:12px}
.kind{display:inline-block;padding:0 6px;border-radius:4px;font-size:12px;white-space:nowrap}
.style{background:#fff0c2}.official{background:#d9f2dc}.none{background:#eee}
.pub td:first-child{font-style:italic}
.sheet td.cell{min-width:120px}.sheet td.prompt{max-width:260px}
.thumbs{display:flex;flex-wrap:wrap;gap:6px}
figure{margin:0;position:relative}figure img{width:var(--t);height:var(--t);object-fit:contain;display:block;background:#eee;border-radius:3px}
img.px{image-rendering:pixelated}
.badge{position:absolute;top:3px;right:3px;border-radius:10px;padding:0 6px;font-size:12px;font-weight:700;color:#fff}
.ok{background:#2e7d32}.bad{background:#c62828}
figcaption{font-size:11px;color:#666;text-align:center}
";

fn kind_badge(r: &Run) -> String {
    match &r.scores {
        None => "<span class=\"kind none\">not scored</span>".to_string(),
        Some(s) if s.official() => "<span class=\"kind official\">official scorer</span>".to_string(),
        Some(_) => "<span class=\"kind style\">GenEval-style</span>".to_string(),
    }
}

pub(super) fn html(runs: &[Run], published: &[&Published], sampled: &[usize], thumb: u32) -> String {
    let mut o = String::new();
    let _ = write!(
        o,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>GenEval comparison</title><style>{CSS}</style></head>\n<body style=\"--t:{}px\">\n",
        thumb.clamp(48, 256).min(128)
    );
    let _ = writeln!(o, "<h1>GenEval comparison</h1>");
    let _ = writeln!(
        o,
        "<p class=\"muted small\">janus-eval {}: {} run(s). Per-task image-level accuracy; overall = mean of the six tasks.</p>",
        env!("CARGO_PKG_VERSION"),
        runs.len()
    );
    for w in warnings(runs) {
        let class = if w.tiny { "warn tiny" } else { "warn" };
        let _ = writeln!(o, "<div class=\"{class}\">{}</div>", esc(&w.text));
    }

    let _ = writeln!(o, "<h2>Runs</h2>\n<table><tr><th>Run</th><th>Model</th><th>Made with</th><th>Images</th><th>Detector</th><th>Colour classifier</th><th>Scorer</th></tr>");
    for r in runs {
        let (det, cls) = r.scores.as_ref().map_or(("–", "–"), |s| (s.detector(), s.classifier()));
        let scorer = r
            .scores
            .as_ref()
            .and_then(|s| s.manifest.as_ref())
            .map_or(String::new(), |m| format!("<br><span class=\"small muted\">{}</span>", esc(&m.scorer)));
        let mut notes = String::new();
        if !r.notes.is_empty() {
            notes = format!("<br><span class=\"small muted\">{}</span>", esc(&r.notes.join("; ")));
        }
        let _ = writeln!(
            o,
            "<tr><td><b>{}</b>{notes}</td><td>{}{}</td><td class=\"small\">{}</td><td class=\"num\">{} images<br>{} prompts</td><td>{}</td><td>{}</td><td>{}{scorer}</td></tr>",
            esc(&r.label),
            esc(&r.model),
            if r.tiny { "<br><b style=\"color:#c62828\">tiny random test model</b>" } else { "" },
            esc(&r.setup),
            r.image_count(),
            r.images.len(),
            esc(det),
            esc(cls),
            kind_badge(r),
        );
    }
    let _ = writeln!(o, "</table>");

    let _ = writeln!(o, "<h2>Scores of these runs</h2>\n<table><tr><th>Run</th><th>Scorer</th>");
    for h in TASK_HEADERS {
        let _ = write!(o, "<th>{h}</th>");
    }
    let _ = writeln!(o, "<th>Overall</th></tr>");
    let mut partial = false;
    for r in runs {
        let _ = write!(o, "<tr><td>{}</td><td>{}</td>", esc(&r.label), kind_badge(r));
        match &r.scores {
            None => {
                let _ = write!(o, "{}", "<td class=\"num muted\">–</td>".repeat(7));
            }
            Some(s) => {
                let c = score_cells(&s.summary);
                for t in c.tasks {
                    let _ = match t {
                        Some((x, k, n)) => {
                            write!(o, "<td class=\"num\">{} <span class=\"small muted\">({k}/{n})</span></td>", f2(x))
                        }
                        None => write!(o, "<td class=\"num muted\">–</td>"),
                    };
                }
                let mark = if c.complete || c.overall.is_nan() { "" } else { "*" };
                partial |= !mark.is_empty();
                let _ = write!(o, "<td class=\"num\"><b>{}</b>{mark}</td>", f2(c.overall));
            }
        }
        let _ = writeln!(o, "</tr>");
    }
    let _ = writeln!(o, "</table>");
    if partial {
        let _ = writeln!(o, "<p class=\"small muted\">* mean over the tasks scored only: not a GenEval overall, which needs all six.</p>");
    }

    if !published.is_empty() {
        let _ = writeln!(
            o,
            "<h2>Published numbers</h2>\n<p class=\"small\">As published, scored with the {}; DPG = DPG-Bench overall. \
             Comparable only with runs of the same scorer.</p>\n<table class=\"pub\"><tr><th>Model</th>",
            esc(OFFICIAL_SCORER)
        );
        for h in TASK_HEADERS {
            let _ = write!(o, "<th>{h}</th>");
        }
        let _ = writeln!(o, "<th>Overall</th><th>DPG</th><th>Source</th></tr>");
        for p in published {
            let _ = write!(
                o,
                "<tr><td>{}{} <span class=\"small muted\">(published)</span></td>",
                esc(p.model),
                if p.rewritten { " †" } else { "" }
            );
            for t in p.tasks {
                let _ = write!(o, "<td class=\"num\">{}</td>", t.map_or("–".to_string(), f2));
            }
            let note = if p.note.is_empty() { String::new() } else { format!("; {}", esc(p.note)) };
            let _ = writeln!(
                o,
                "<td class=\"num\"><b>{}</b></td><td class=\"num\">{}</td><td class=\"small muted\">{}{note}</td></tr>",
                f2(p.overall),
                p.dpg.map_or("–".to_string(), |d| format!("{d:.2}")),
                esc(p.source)
            );
        }
        let _ = writeln!(o, "</table>");
        if published.iter().any(|p| p.rewritten) {
            let _ = writeln!(o, "<p class=\"small muted\">† evaluated with LLM-rewritten prompts: not comparable with plain GenEval.</p>");
        }
    }

    let _ = writeln!(
        o,
        "<h2>Contact sheet</h2>\n<p class=\"small muted\">{} prompt(s) sampled evenly from those generated; \
         ✓/✗ = the run's scorer judged the image correct/incorrect (its reason on hover).</p>",
        sampled.len()
    );
    let _ = write!(o, "<table class=\"sheet\"><tr><th>Prompt</th>");
    for r in runs {
        let _ = write!(o, "<th>{}</th>", esc(&r.label));
    }
    let _ = writeln!(o, "</tr>");
    for &i in sampled {
        let info = runs.iter().find_map(|r| r.images.get(&i));
        let (prompt, tag) = info.map_or(("", ""), |p| (p.prompt.as_str(), p.tag.as_str()));
        let _ = write!(
            o,
            "<tr><td class=\"prompt\"><span class=\"small muted\">{i:05} · {}</span><br>{}</td>",
            esc(tag),
            esc(prompt)
        );
        for r in runs {
            let _ = write!(o, "<td class=\"cell\" data-run=\"{}\" data-prompt=\"{i:05}\">", esc(&r.label));
            match r.images.get(&i) {
                None => {
                    let _ = write!(o, "<span class=\"small muted\">not generated</span>");
                }
                Some(p) => {
                    let _ = write!(o, "<div class=\"thumbs\">");
                    for f in &p.files {
                        let file = f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                        let verdict =
                            r.scores.as_ref().and_then(|s| s.verdicts.get(&(format!("{i:05}"), file.clone())));
                        let badge = match verdict {
                            Some((true, _)) => "<span class=\"badge ok\" title=\"correct\">✓</span>".to_string(),
                            Some((false, why)) => format!("<span class=\"badge bad\" title=\"{}\">✗</span>", esc(why)),
                            None => String::new(),
                        };
                        let img = match thumbnail(f, thumb) {
                            Ok((uri, small)) => format!(
                                "<img{} src=\"{uri}\" alt=\"{} sample {}\">",
                                if small { " class=\"px\"" } else { "" },
                                esc(&r.label),
                                esc(&file)
                            ),
                            Err(e) => {
                                format!("<span class=\"small muted\">unreadable: {}</span>", esc(&format!("{e:#}")))
                            }
                        };
                        let _ = write!(o, "<figure>{img}{badge}<figcaption>{}</figcaption></figure>", esc(&file));
                    }
                    let _ = write!(o, "</div>");
                }
            }
            let _ = write!(o, "</td>");
        }
        let _ = writeln!(o, "</tr>");
    }
    let _ = writeln!(o, "</table>\n</body></html>");
    o
}
