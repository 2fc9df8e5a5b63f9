//! GenEval's correctness rules, ported from the official evaluator's behaviour
//! (djghosh13/geneval `evaluation/evaluate_images.py` and `summary_scores.py`, described in
//! `docs/geneval-rules.md` §1.5–1.9). Pure code: the object detector and the colour classifier
//! sit behind [`Detector`] and [`ColorClassifier`], so the rules are testable with hand-made
//! detections and any model (Mask2Former, a smaller COCO detector, CLIP, ...) can be plugged in.
//!
//! Numbers from a substitute detector or colour classifier are "GenEval-style", not GenEval:
//! they must be labelled with the models that produced them.

use std::collections::BTreeMap;

use image::{GrayImage, Rgb, RgbImage};
use serde::{Deserialize, Serialize};

/// The six GenEval tasks, in the order papers print them.
pub const TAGS: [&str; 6] = ["single_object", "two_object", "counting", "colors", "position", "color_attr"];

/// One line of `evaluation_metadata.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    pub tag: String,
    #[serde(default)]
    pub include: Vec<Clause>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<Clause>,
    pub prompt: String,
}

/// A requirement: at least `count` objects of `class` (include), or fail at `count` (exclude).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Clause {
    pub class: String,
    pub count: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub color: Option<String>,
    /// `[relation, group]`: relative to the objects matched by include clause `group`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<(String, usize)>,
}

/// The ten colour classes, in the evaluator's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Colour {
    Red,
    Orange,
    Yellow,
    Green,
    Blue,
    Purple,
    Pink,
    Brown,
    Black,
    White,
}

impl Colour {
    pub const ALL: [Colour; 10] = [
        Colour::Red,
        Colour::Orange,
        Colour::Yellow,
        Colour::Green,
        Colour::Blue,
        Colour::Purple,
        Colour::Pink,
        Colour::Brown,
        Colour::Black,
        Colour::White,
    ];

    pub fn name(self) -> &'static str {
        ["red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white"][self as usize]
    }

    pub fn parse(s: &str) -> Option<Colour> {
        Colour::ALL.into_iter().find(|c| c.name() == s)
    }

    /// The three zero-shot prompt templates for this colour and a COCO class (the article is
    /// always "a", as in the evaluator).
    pub fn clip_prompts(self, class_name: &str) -> [String; 3] {
        let c = self.name();
        [
            format!("a photo of a {c} {class_name}"),
            format!("a photo of a {c}-colored {class_name}"),
            format!("a photo of a {c} object"),
        ]
    }
}

/// One detected instance.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    /// Index into `object_names.txt` (COCO order).
    pub class: usize,
    pub score: f32,
    /// `(x1, y1, x2, y2)` in image pixels, y down.
    pub bbox: [f32; 4],
    /// Full-image instance mask (non-zero = inside), when the detector produces one.
    pub mask: Option<GrayImage>,
}

/// An object detector over the 80 COCO classes.
pub trait Detector {
    /// Every detection in the image, any order; filtering is done by [`keep`].
    fn detect(&self, img: &RgbImage) -> Vec<Detection>;
    /// Shown in report headers, e.g. "Mask2Former Swin-S (mmdet)".
    fn name(&self) -> String;
}

/// A colour classifier: one of the 10 colours for each prepared crop (see [`object_crop`]).
pub trait ColorClassifier {
    fn classify(&self, crops: &[RgbImage], class_name: &str) -> Vec<Colour>;
    fn name(&self) -> String;
}

/// What the rules need to know about colours: the colour of each of `objects` (detections of
/// `class_name`). [`ImageColours`] implements it with an image and a [`ColorClassifier`];
/// tests implement it directly.
pub trait ColourOracle {
    fn colours(&self, class_name: &str, objects: &[&Detection]) -> Vec<Colour>;
}

/// The evaluator's options (`--options key=value`) with their defaults.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RuleOptions {
    pub threshold: f32,
    pub counting_threshold: f32,
    pub max_objects: usize,
    /// NMS IoU; 1.0 switches NMS off (the default).
    pub max_overlap: f32,
    pub position_threshold: f32,
}

impl Default for RuleOptions {
    fn default() -> Self {
        Self { threshold: 0.3, counting_threshold: 0.9, max_objects: 16, max_overlap: 1.0, position_threshold: 0.1 }
    }
}

/// Kept detections per class name, each list in descending score order (absent = none kept).
pub type Kept = BTreeMap<String, Vec<Detection>>;

/// §1.5: per class, sort by score (highest first), keep scores strictly above the threshold
/// (0.9 on `counting` prompts, else 0.3), truncate to `max_objects`, then greedy NMS (off at
/// `max_overlap` = 1). Detections whose class index is out of range are ignored.
pub fn keep(detections: &[Detection], class_names: &[&str], tag: &str, opts: &RuleOptions) -> Kept {
    let threshold = if tag == "counting" { opts.counting_threshold } else { opts.threshold };
    let mut kept = Kept::new();
    for (ci, name) in class_names.iter().enumerate() {
        let mut of_class: Vec<&Detection> = detections.iter().filter(|d| d.class == ci).collect();
        // numpy's argsort (stable for these sizes) then reversed: ties come out last-first.
        of_class.sort_by(|a, b| a.score.total_cmp(&b.score));
        of_class.reverse();
        let mut ordering: Vec<&Detection> =
            of_class.into_iter().filter(|d| d.score > threshold).take(opts.max_objects).collect();
        let mut out = Vec::new();
        while !ordering.is_empty() {
            let top = ordering.remove(0);
            ordering.retain(|d| opts.max_overlap == 1.0 || iou(&top.bbox, &d.bbox) < opts.max_overlap);
            out.push(top.clone());
        }
        if !out.is_empty() {
            kept.insert(name.to_string(), out);
        }
    }
    kept
}

/// IoU with the evaluator's "+1 pixel" area convention.
pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let area = |x1: f32, y1: f32, x2: f32, y2: f32| (x2 - x1 + 1.0).max(0.0) * (y2 - y1 + 1.0).max(0.0);
    let i = area(a[0].max(b[0]), a[1].max(b[1]), a[2].min(b[2]), a[3].min(b[3]));
    let u = area(a[0], a[1], a[2], a[3]) + area(b[0], b[1], b[2], b[3]) - i;
    if u != 0.0 {
        i / u
    } else {
        0.0
    }
}

/// The spatial relations, in the order they are reported.
pub const RELATIONS: [&str; 4] = ["left of", "right of", "above", "below"];

/// §1.8: the relations of box `a` (the positioned object) to box `b` (the reference), computed
/// in f32 as the evaluator's numpy code does. Empty when the margined offset vanishes.
pub fn relative_position(a: &[f32; 4], b: &[f32; 4], position_threshold: f32) -> Vec<&'static str> {
    let centre = |r: &[f32; 4]| [(r[0] + r[2]) / 2.0, (r[1] + r[3]) / 2.0];
    let dims = |r: &[f32; 4]| [(r[2] - r[0]).abs(), (r[3] - r[1]).abs()];
    let (ca, cb, da, db) = (centre(a), centre(b), dims(a), dims(b));
    let offset = [ca[0] - cb[0], ca[1] - cb[1]];
    let revised: [f32; 2] = std::array::from_fn(|i| {
        let m = (offset[i].abs() - position_threshold * (da[i] + db[i])).max(0.0);
        // np.sign(0) is 0
        if offset[i] > 0.0 {
            m
        } else if offset[i] < 0.0 {
            -m
        } else {
            0.0
        }
    });
    if revised.iter().all(|v| v.abs() < 1e-3) {
        return Vec::new();
    }
    let norm = (offset[0] * offset[0] + offset[1] * offset[1]).sqrt();
    let (dx, dy) = (revised[0] / norm, revised[1] / norm);
    let mut rels = Vec::new();
    if dx < -0.5 {
        rels.push("left of");
    }
    if dx > 0.5 {
        rels.push("right of");
    }
    if dy < -0.5 {
        rels.push("above");
    }
    if dy > 0.5 {
        rels.push("below");
    }
    rels
}

/// §1.6: whether the kept detections satisfy the prompt, and the reasons it does not (one line
/// per failed check, worded as the evaluator words them).
pub fn evaluate(meta: &Metadata, kept: &Kept, colours: &dyn ColourOracle, opts: &RuleOptions) -> (bool, String) {
    let mut correct = true;
    let mut reason: Vec<String> = Vec::new();
    let mut groups: Vec<Option<Vec<&Detection>>> = Vec::new();
    let none: Vec<Detection> = Vec::new();
    for req in &meta.include {
        let class = req.class.as_str();
        let mut matched = true;
        let all = kept.get(class).unwrap_or(&none);
        let found: Vec<&Detection> = all.iter().take(req.count).collect();
        if found.len() < req.count {
            correct = false;
            matched = false;
            reason.push(format!("expected {class}>={}, found {}", req.count, found.len()));
        } else {
            if let Some(want) = &req.color {
                let got = colours.colours(class, &found);
                let n = |c: &str| got.iter().filter(|g| g.name() == c).count();
                if n(want) < req.count {
                    correct = false;
                    matched = false;
                    let present: Vec<String> = Colour::ALL
                        .iter()
                        .filter(|c| got.contains(c))
                        .map(|c| format!("{} {}", n(c.name()), c.name()))
                        .collect();
                    reason.push(format!(
                        "expected {want} {class}>={}, found {} {want}; and {}",
                        req.count,
                        n(want),
                        present.join(", ")
                    ));
                }
            }
            if let (Some((rel, target)), true) = (&req.position, matched) {
                match groups.get(*target) {
                    Some(Some(targets)) => {
                        'outer: for obj in &found {
                            for t in targets {
                                let rels = relative_position(&obj.bbox, &t.bbox, opts.position_threshold);
                                if !rels.contains(&rel.as_str()) {
                                    correct = false;
                                    matched = false;
                                    reason.push(format!(
                                        "expected {class} {rel} target, found {} target",
                                        rels.join(" and ")
                                    ));
                                    break 'outer;
                                }
                            }
                        }
                    }
                    _ => {
                        correct = false;
                        matched = false;
                        reason.push(format!("no target for {class} to be {rel}"));
                    }
                }
            }
        }
        groups.push(matched.then_some(found));
    }
    for req in &meta.exclude {
        let n = kept.get(&req.class).map_or(0, Vec::len);
        if n >= req.count {
            correct = false;
            reason.push(format!("expected {}<{}, found {n}", req.class, req.count));
        }
    }
    (correct, reason.join("\n"))
}

/// How the area outside an instance mask is filled before the colour classifier sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Background {
    /// A solid colour (the evaluator's default is `#999`, i.e. (153, 153, 153)).
    Solid([u8; 3]),
    /// The original pixels (`bgcolor=original`: no masking).
    Original,
}

impl Default for Background {
    fn default() -> Self {
        Background::Solid([0x99, 0x99, 0x99])
    }
}

/// §1.7 crop preparation: pixels inside the mask keep their values, the rest become the
/// background; then (with `crop`) the box is cut out, its coordinates rounded half-to-even as
/// PIL does, with area outside the image filled black as PIL's `crop` fills it.
pub fn object_crop(img: &RgbImage, det: &Detection, bg: Background, crop: bool) -> RgbImage {
    let mut composed = img.clone();
    if let (Some(mask), Background::Solid(c)) = (&det.mask, bg) {
        for (x, y, p) in composed.enumerate_pixels_mut() {
            let inside = x < mask.width() && y < mask.height() && mask.get_pixel(x, y)[0] != 0;
            if !inside {
                *p = Rgb(c);
            }
        }
    }
    if !crop {
        return composed;
    }
    let r = |v: f32| v.round_ties_even() as i64;
    let (x0, y0, x1, y1) = (r(det.bbox[0]), r(det.bbox[1]), r(det.bbox[2]), r(det.bbox[3]));
    let (w, h) = ((x1 - x0).max(0) as u32, (y1 - y0).max(0) as u32);
    RgbImage::from_fn(w, h, |x, y| {
        let (sx, sy) = (x0 + x as i64, y0 + y as i64);
        if sx >= 0 && sy >= 0 && (sx as u32) < composed.width() && (sy as u32) < composed.height() {
            *composed.get_pixel(sx as u32, sy as u32)
        } else {
            Rgb([0, 0, 0])
        }
    })
}

/// A [`ColourOracle`] over one image: crops each object (grey background, box crop) and asks
/// the classifier.
pub struct ImageColours<'a> {
    pub image: &'a RgbImage,
    pub classifier: &'a dyn ColorClassifier,
    pub background: Background,
    pub crop: bool,
}

impl ColourOracle for ImageColours<'_> {
    fn colours(&self, class_name: &str, objects: &[&Detection]) -> Vec<Colour> {
        let crops: Vec<RgbImage> =
            objects.iter().map(|d| object_crop(self.image, d, self.background, self.crop)).collect();
        self.classifier.classify(&crops, class_name)
    }
}

/// One scored image, as a row of the official `results.jsonl` needs it.
#[derive(Debug, Clone)]
pub struct ImageVerdict {
    pub correct: bool,
    pub reason: String,
    pub kept: Kept,
}

/// Detect, filter and judge one image.
pub fn evaluate_image(
    img: &RgbImage,
    meta: &Metadata,
    detector: &dyn Detector,
    classifier: &dyn ColorClassifier,
    class_names: &[&str],
    opts: &RuleOptions,
) -> ImageVerdict {
    let kept = keep(&detector.detect(img), class_names, &meta.tag, opts);
    let oracle = ImageColours { image: img, classifier, background: Background::default(), crop: true };
    let (correct, reason) = evaluate(meta, &kept, &oracle, opts);
    ImageVerdict { correct, reason, kept }
}

/// What summary_scores.py needs of one result row.
#[derive(Debug, Clone)]
pub struct ResultRow {
    pub tag: String,
    /// The prompt's metadata as a JSON string (prompts are grouped by it).
    pub metadata: String,
    pub correct: bool,
}

/// Per-task result: image-level accuracy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskScore {
    pub tag: String,
    pub correct: usize,
    pub images: usize,
    pub score: f64,
}

/// §1.9, as summary_scores.py computes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub images: usize,
    pub prompts: usize,
    /// Fraction of all images that are correct (not the GenEval score).
    pub correct_images: f64,
    /// Fraction of prompts with at least one correct image (not the GenEval score).
    pub correct_prompts: f64,
    /// Tasks in order of first appearance in the rows.
    pub tasks: Vec<TaskScore>,
    /// The GenEval score: the unweighted mean of the task scores.
    pub overall: f64,
}

pub fn summarize(rows: &[ResultRow]) -> Summary {
    let mut tasks: Vec<TaskScore> = Vec::new();
    let mut prompts: Vec<(&str, bool)> = Vec::new();
    for r in rows {
        match tasks.iter_mut().find(|t| t.tag == r.tag) {
            Some(t) => {
                t.images += 1;
                t.correct += r.correct as usize;
            }
            None => tasks.push(TaskScore { tag: r.tag.clone(), correct: r.correct as usize, images: 1, score: 0.0 }),
        }
        match prompts.iter_mut().find(|p| p.0 == r.metadata) {
            Some(p) => p.1 |= r.correct,
            None => prompts.push((&r.metadata, r.correct)),
        }
    }
    for t in &mut tasks {
        t.score = t.correct as f64 / t.images as f64;
    }
    let mean = |xs: &mut dyn Iterator<Item = f64>, n: usize| if n == 0 { f64::NAN } else { xs.sum::<f64>() / n as f64 };
    Summary {
        images: rows.len(),
        prompts: prompts.len(),
        correct_images: mean(&mut rows.iter().map(|r| r.correct as u8 as f64), rows.len()),
        correct_prompts: mean(&mut prompts.iter().map(|p| p.1 as u8 as f64), prompts.len()),
        overall: mean(&mut tasks.iter().map(|t| t.score), tasks.len()),
        tasks,
    }
}
