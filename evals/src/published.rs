//! Published GenEval (and DPG-Bench) numbers, as `docs/geneval-rules.md` §3 collected them, each
//! row with its source. All were scored by the official GenEval evaluator (Mask2Former Swin-S +
//! CLIP ViT-L/14) unless marked; `compare` prints them apart from runs scored otherwise.
//!
//! Task order is [`crate::rules::TAGS`]: single_object, two_object, counting, colors, position,
//! color_attr.

/// The scorer behind every published GenEval number.
pub const OFFICIAL_SCORER: &str = "official GenEval evaluator (Mask2Former Swin-S + CLIP ViT-L/14)";

/// One published row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Published {
    pub model: &'static str,
    /// Per-task scores in [`crate::rules::TAGS`] order; `None` where the source gives none.
    pub tasks: [Option<f64>; 6],
    pub overall: f64,
    /// DPG-Bench overall, where published.
    pub dpg: Option<f64>,
    /// Evaluated with LLM-rewritten prompts (†): not comparable with plain GenEval.
    pub rewritten: bool,
    /// Shown by `compare --published` (the others with `--published-all`).
    pub key: bool,
    pub source: &'static str,
    /// A caveat worth printing beside the row.
    pub note: &'static str,
}

const JP: &str = "Janus-Pro tech report (Chen et al., arXiv:2501.17811), Tables 4-5";
const SECONDARY: &str = "reproduced in later papers' tables (Qwen-Image era); primary source not opened";

const fn row(
    model: &'static str,
    t: [f64; 6],
    overall: f64,
    dpg: Option<f64>,
    key: bool,
    source: &'static str,
    note: &'static str,
) -> Published {
    Published {
        model,
        tasks: [Some(t[0]), Some(t[1]), Some(t[2]), Some(t[3]), Some(t[4]), Some(t[5])],
        overall,
        dpg,
        rewritten: false,
        key,
        source,
        note,
    }
}

const fn overall_only(model: &'static str, overall: f64, dpg: Option<f64>, source: &'static str) -> Published {
    Published { model, tasks: [None; 6], overall, dpg, rewritten: false, key: false, source, note: "" }
}

const fn rewritten(mut p: Published) -> Published {
    p.rewritten = true;
    p
}

/// Every embedded row: the Janus-Pro report's table first, then newer models.
pub const PUBLISHED: &[Published] = &[
    row("Janus-Pro-7B", [0.99, 0.89, 0.59, 0.90, 0.79, 0.66], 0.80, Some(84.19), true, JP, ""),
    row("Janus-Pro-1B", [0.98, 0.82, 0.51, 0.89, 0.65, 0.56], 0.73, Some(82.63), true, JP, ""),
    row("Janus (1.3B)", [0.97, 0.68, 0.30, 0.84, 0.46, 0.42], 0.61, Some(79.68), true, JP, ""),
    row("DALL-E 3", [0.96, 0.87, 0.47, 0.83, 0.43, 0.45], 0.67, Some(83.50), true, JP, ""),
    row(
        "SD3-Medium",
        [0.99, 0.94, 0.72, 0.89, 0.33, 0.60],
        0.74,
        Some(84.08),
        true,
        JP,
        "likely the SD3 paper's 8B/1024px+DPO figure; independent SD3-Medium runs give 0.62",
    ),
    row("SDXL", [0.98, 0.74, 0.39, 0.85, 0.15, 0.23], 0.55, Some(74.65), true, JP, ""),
    row("DALL-E 2", [0.94, 0.66, 0.49, 0.77, 0.10, 0.19], 0.52, None, false, JP, ""),
    row("SD v2.1", [0.98, 0.51, 0.44, 0.85, 0.07, 0.17], 0.50, None, false, JP, ""),
    row("SD v1.5", [0.97, 0.38, 0.35, 0.76, 0.04, 0.06], 0.43, Some(63.18), true, JP, ""),
    row("PixArt-alpha", [0.98, 0.50, 0.44, 0.80, 0.08, 0.07], 0.48, Some(71.11), false, JP, ""),
    row("Emu3-Gen", [0.98, 0.71, 0.34, 0.81, 0.17, 0.21], 0.54, Some(80.60), false, JP, ""),
    row("LlamaGen", [0.71, 0.34, 0.21, 0.58, 0.07, 0.04], 0.32, None, false, JP, ""),
    row("LDM", [0.92, 0.29, 0.23, 0.70, 0.02, 0.05], 0.37, None, false, JP, ""),
    rewritten(row("SEED-X", [0.97, 0.58, 0.26, 0.80, 0.19, 0.14], 0.49, None, false, JP, "")),
    row("Show-o (256 px, original)", [0.95, 0.52, 0.49, 0.82, 0.11, 0.28], 0.53, None, false, JP, ""),
    row("D-DiT", [0.97, 0.80, 0.54, 0.76, 0.32, 0.50], 0.65, None, false, JP, ""),
    row("LWM", [0.93, 0.41, 0.46, 0.79, 0.09, 0.15], 0.47, None, false, JP, ""),
    overall_only("Transfusion", 0.63, None, JP),
    row("ILLUME", [0.99, 0.86, 0.45, 0.71, 0.39, 0.28], 0.61, None, false, JP, ""),
    row("TokenFlow-XL", [0.95, 0.60, 0.41, 0.81, 0.16, 0.24], 0.55, None, false, JP, ""),
    overall_only("Chameleon", 0.39, None, JP),
    row("IF-XL", [0.97, 0.74, 0.66, 0.81, 0.13, 0.35], 0.61, None, false, "GenEval README (djghosh13/geneval)", ""),
    overall_only("minDALL-E", 0.23, None, "GenEval README (djghosh13/geneval)"),
    overall_only("CLIP retrieval", 0.35, None, "GenEval README (djghosh13/geneval)"),
    row(
        "JanusFlow-1.3B",
        [0.97, 0.59, 0.45, 0.83, 0.53, 0.42],
        0.63,
        Some(80.09),
        true,
        "JanusFlow paper (arXiv:2411.07975), Tables 2-3, as reproduced in several READMEs",
        "",
    ),
    row(
        "FLUX.1-dev",
        [0.98, 0.81, 0.74, 0.79, 0.22, 0.45],
        0.66,
        Some(83.84),
        true,
        SECONDARY,
        "another run gives 0.67",
    ),
    row(
        "GPT Image 1 [High]",
        [0.99, 0.92, 0.85, 0.92, 0.75, 0.61],
        0.84,
        Some(85.15),
        true,
        "GPT-ImgEval (Yan et al., arXiv:2504.02782); DPG from Qwen-Image-era tables",
        "",
    ),
    row(
        "BAGEL",
        [0.99, 0.94, 0.81, 0.88, 0.64, 0.63],
        0.82,
        Some(85.07),
        true,
        "ByteDance-Seed/Bagel README (overall) and paper (tasks); DPG from third-party tables",
        "",
    ),
    rewritten(row(
        "BAGEL + rewriter",
        [0.98, 0.95, 0.84, 0.95, 0.78, 0.77],
        0.88,
        None,
        false,
        "ByteDance-Seed/Bagel README and paper",
        "",
    )),
    row("SD3-Medium (independent run)", [0.98, 0.74, 0.63, 0.67, 0.34, 0.36], 0.62, Some(84.08), true, SECONDARY, ""),
    row("SD3.5-Large", [0.98, 0.89, 0.73, 0.83, 0.34, 0.47], 0.71, None, false, SECONDARY, ""),
    row("Show-o (512 px, updated)", [0.98, 0.80, 0.66, 0.84, 0.31, 0.50], 0.68, None, false, SECONDARY, ""),
    row("Show-o2 (7B)", [1.00, 0.87, 0.58, 0.92, 0.52, 0.62], 0.76, Some(86.14), false, SECONDARY, ""),
    row("OmniGen2", [1.00, 0.95, 0.64, 0.88, 0.55, 0.76], 0.80, Some(83.57), false, SECONDARY, ""),
    row("UniWorld-V1", [0.99, 0.93, 0.79, 0.89, 0.49, 0.70], 0.80, Some(81.38), false, SECONDARY, ""),
    row("HiDream-I1-Full", [1.00, 0.98, 0.79, 0.91, 0.60, 0.72], 0.83, Some(85.89), false, SECONDARY, ""),
    row("Seedream 3.0", [0.99, 0.96, 0.91, 0.93, 0.47, 0.80], 0.84, Some(88.27), false, SECONDARY, ""),
    row(
        "Qwen-Image",
        [0.99, 0.92, 0.89, 0.88, 0.76, 0.77],
        0.87,
        Some(88.32),
        false,
        "Qwen-Image tech report (arXiv:2508.02324), via several READMEs",
        "",
    ),
    row("FLUX.2 [dev]", [1.00, 0.99, 0.79, 0.93, 0.73, 0.78], 0.87, Some(87.57), false, "HiDream-O1-Image README", ""),
    row("Z-Image-Turbo", [1.00, 0.95, 0.77, 0.89, 0.65, 0.68], 0.82, Some(84.86), false, "HiDream-O1-Image README", ""),
];

/// The rows `compare` shows: the key ones, or all.
pub fn selected(all: bool) -> Vec<&'static Published> {
    PUBLISHED.iter().filter(|p| all || p.key).collect()
}
