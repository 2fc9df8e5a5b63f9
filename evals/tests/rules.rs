//! GenEval's rules on hand-made detections: every task, passing and failing, the threshold
//! edges and the position boundary (docs/geneval-rules.md §1.5–1.9).

use std::cell::RefCell;

use image::{GrayImage, Luma, Rgb, RgbImage};
use janus_evals::data::{geneval_prompts, object_names};
use janus_evals::rules::*;

fn class(name: &str) -> usize {
    object_names().iter().position(|n| *n == name).unwrap_or_else(|| panic!("{name}"))
}

fn det(name: &str, score: f32, bbox: [f32; 4]) -> Detection {
    Detection { class: class(name), score, bbox, mask: None }
}

/// Colours by box; records which boxes it was asked about.
struct Painted {
    colours: Vec<([f32; 4], Colour)>,
    asked: RefCell<Vec<(String, usize)>>,
}

fn painted(colours: &[([f32; 4], Colour)]) -> Painted {
    Painted { colours: colours.to_vec(), asked: RefCell::new(Vec::new()) }
}

impl ColourOracle for Painted {
    fn colours(&self, class_name: &str, objects: &[&Detection]) -> Vec<Colour> {
        self.asked.borrow_mut().push((class_name.to_string(), objects.len()));
        objects.iter().map(|d| self.colours.iter().find(|(b, _)| *b == d.bbox).expect("a painted box").1).collect()
    }
}

fn meta(json: &str) -> Metadata {
    serde_json::from_str(json).unwrap()
}

/// Keep + evaluate with default options.
fn judge(m: &Metadata, dets: &[Detection], colours: &Painted) -> (bool, String) {
    let kept = keep(dets, &object_names(), &m.tag, &RuleOptions::default());
    evaluate(m, &kept, colours, &RuleOptions::default())
}

const A: [f32; 4] = [0.0, 0.0, 10.0, 10.0];
const B: [f32; 4] = [50.0, 0.0, 60.0, 10.0];
const C: [f32; 4] = [0.0, 50.0, 10.0, 60.0];

// ------------------------------------------------------------------ single_object

#[test]
fn single_object_passes_above_0_3_and_fails_at_exactly_0_3() {
    let m = meta(
        r#"{"tag": "single_object", "include": [{"class": "bench", "count": 1}], "prompt": "a photo of a bench"}"#,
    );
    let none = painted(&[]);
    assert_eq!(judge(&m, &[det("bench", 0.31, A)], &none), (true, String::new()));
    assert_eq!(judge(&m, &[det("bench", 0.3, A)], &none), (false, "expected bench>=1, found 0".into()));
    assert_eq!(judge(&m, &[], &none), (false, "expected bench>=1, found 0".into()));
    // other classes never matter
    assert!(judge(&m, &[det("bench", 0.5, A), det("cow", 0.99, B), det("cow", 0.99, C)], &none).0);
    assert!(!judge(&m, &[det("cow", 0.99, B)], &none).0);
}

// ------------------------------------------------------------------ two_object

#[test]
fn two_object_needs_both_classes() {
    let m = meta(
        r#"{"tag": "two_object", "include": [{"class": "bench", "count": 1}, {"class": "sports ball", "count": 1}], "prompt": "a photo of a bench and a sports ball"}"#,
    );
    let none = painted(&[]);
    assert!(judge(&m, &[det("bench", 0.4, A), det("sports ball", 0.301, B)], &none).0);
    assert_eq!(
        judge(&m, &[det("bench", 0.4, A), det("sports ball", 0.29, B)], &none),
        (false, "expected sports ball>=1, found 0".into())
    );
    assert_eq!(judge(&m, &[], &none), (false, "expected bench>=1, found 0\nexpected sports ball>=1, found 0".into()));
}

// ------------------------------------------------------------------ counting

fn clocks(scores: &[f32]) -> Vec<Detection> {
    scores
        .iter()
        .enumerate()
        .map(|(i, &s)| det("clock", s, [i as f32 * 20.0, 0.0, i as f32 * 20.0 + 10.0, 10.0]))
        .collect()
}

#[test]
fn counting_needs_exactly_n_above_0_9() {
    let m = meta(
        r#"{"tag": "counting", "include": [{"class": "clock", "count": 2}], "exclude": [{"class": "clock", "count": 3}], "prompt": "a photo of two clocks"}"#,
    );
    let none = painted(&[]);
    assert_eq!(judge(&m, &clocks(&[0.95, 0.91]), &none), (true, String::new()));
    // a third one at exactly 0.9 is not kept (strict >), so it does not count
    assert!(judge(&m, &clocks(&[0.95, 0.91, 0.9]), &none).0);
    // 0.9 is the threshold for the include clause too
    assert_eq!(judge(&m, &clocks(&[0.95, 0.9]), &none), (false, "expected clock>=2, found 1".into()));
    // scores that pass 0.3 elsewhere do not count here
    assert_eq!(judge(&m, &clocks(&[0.89, 0.8]), &none), (false, "expected clock>=2, found 0".into()));
    // one too many fires the exclude clause
    assert_eq!(judge(&m, &clocks(&[0.95, 0.91, 0.93]), &none), (false, "expected clock<3, found 3".into()));
    assert_eq!(judge(&m, &clocks(&[0.95, 0.91, 0.93, 0.99, 0.97]), &none), (false, "expected clock<3, found 5".into()));
}

#[test]
fn counting_threshold_applies_to_every_class_of_a_counting_prompt() {
    let m = meta(
        r#"{"tag": "counting", "include": [{"class": "clock", "count": 2}], "exclude": [{"class": "clock", "count": 3}], "prompt": "a photo of two clocks"}"#,
    );
    let kept = keep(&[det("cow", 0.5, A), det("cow", 0.95, B)], &object_names(), &m.tag, &RuleOptions::default());
    assert_eq!(kept["cow"].len(), 1);
    let kept = keep(&[det("cow", 0.5, A), det("cow", 0.95, B)], &object_names(), "two_object", &RuleOptions::default());
    assert_eq!(kept["cow"].len(), 2);
}

#[test]
fn at_most_16_per_class_highest_first() {
    let dets: Vec<Detection> =
        (0..20).map(|i| det("apple", 0.4 + i as f32 * 0.01, [i as f32, 0.0, i as f32 + 1.0, 1.0])).collect();
    let kept = keep(&dets, &object_names(), "single_object", &RuleOptions::default());
    let apples = &kept["apple"];
    assert_eq!(apples.len(), 16);
    assert!(apples.windows(2).all(|w| w[0].score >= w[1].score));
    assert_eq!(apples[0].bbox[0], 19.0, "the best one first");
    assert_eq!(apples[15].bbox[0], 4.0, "the four weakest are dropped");
    // an exclude count of 17 can therefore never fire
    let m = meta(
        r#"{"tag": "counting", "include": [{"class": "apple", "count": 1}], "exclude": [{"class": "apple", "count": 17}], "prompt": "x"}"#,
    );
    let many: Vec<Detection> = (0..30).map(|i| det("apple", 0.95, [i as f32, 0.0, i as f32 + 1.0, 1.0])).collect();
    assert!(judge(&m, &many, &painted(&[])).0);
    // no NMS by default: identical boxes are all kept
    let kept =
        keep(&[det("apple", 0.5, A), det("apple", 0.6, A)], &object_names(), "single_object", &RuleOptions::default());
    assert_eq!(kept["apple"].len(), 2);
    // ties: the later detection comes first (numpy argsort reversed)
    let kept =
        keep(&[det("apple", 0.5, A), det("apple", 0.5, B)], &object_names(), "single_object", &RuleOptions::default());
    assert_eq!(kept["apple"][0].bbox, B);
    // classes out of range are ignored, absent classes are absent
    let kept = keep(
        &[Detection { class: 80, score: 1.0, bbox: A, mask: None }],
        &object_names(),
        "x",
        &RuleOptions::default(),
    );
    assert!(kept.is_empty());
}

#[test]
fn nms_when_switched_on_uses_the_plus_one_iou() {
    let opts = RuleOptions { max_overlap: 0.5, ..Default::default() };
    let overlapping =
        [det("apple", 0.9, [0.0, 0.0, 9.0, 9.0]), det("apple", 0.8, [1.0, 0.0, 10.0, 9.0]), det("apple", 0.7, B)];
    let kept = keep(&overlapping, &object_names(), "single_object", &opts);
    assert_eq!(kept["apple"].iter().map(|d| d.score).collect::<Vec<_>>(), [0.9, 0.7]);
    // +1 convention: a 10x10 box [0,0,9,9] has area 100; these two overlap in 9x10 → IoU 90/110
    assert!((iou(&[0.0, 0.0, 9.0, 9.0], &[1.0, 0.0, 10.0, 9.0]) - 90.0 / 110.0).abs() < 1e-6);
    assert_eq!(iou(&[0.0, 0.0, 9.0, 9.0], &[20.0, 20.0, 29.0, 29.0]), 0.0);
}

// ------------------------------------------------------------------ colors

#[test]
fn colors_judges_the_top_detection_only() {
    let m = meta(
        r#"{"tag": "colors", "include": [{"class": "fire hydrant", "count": 1, "color": "blue"}], "prompt": "a photo of a blue fire hydrant"}"#,
    );
    let p = painted(&[(A, Colour::Blue), (B, Colour::Red)]);
    assert!(judge(&m, &[det("fire hydrant", 0.9, A), det("fire hydrant", 0.5, B)], &p).0);
    assert_eq!(*p.asked.borrow(), [("fire hydrant".to_string(), 1)], "only the top-1 is classified");
    let p = painted(&[(A, Colour::Blue), (B, Colour::Red)]);
    assert_eq!(
        judge(&m, &[det("fire hydrant", 0.5, A), det("fire hydrant", 0.9, B)], &p),
        (false, "expected blue fire hydrant>=1, found 0 blue; and 1 red".into())
    );
    // absent: the count fails first and no colour is asked
    let p = painted(&[]);
    assert_eq!(judge(&m, &[det("fire hydrant", 0.2, A)], &p), (false, "expected fire hydrant>=1, found 0".into()));
    assert!(p.asked.borrow().is_empty());
}

#[test]
fn colour_clause_with_count_needs_every_top_k_in_that_colour() {
    let m = meta(r#"{"tag": "x", "include": [{"class": "cup", "count": 2, "color": "red"}], "prompt": "x"}"#);
    let p = painted(&[(A, Colour::Red), (B, Colour::Red), (C, Colour::Green)]);
    assert!(judge(&m, &[det("cup", 0.9, A), det("cup", 0.8, B), det("cup", 0.7, C)], &p).0);
    let p = painted(&[(A, Colour::Red), (B, Colour::Green), (C, Colour::Red)]);
    assert_eq!(
        judge(&m, &[det("cup", 0.9, A), det("cup", 0.8, B), det("cup", 0.7, C)], &p),
        (false, "expected red cup>=2, found 1 red; and 1 red, 1 green".into())
    );
}

// ------------------------------------------------------------------ position

fn position_meta() -> Metadata {
    meta(
        r#"{"tag": "position", "include": [{"class": "teddy bear", "count": 1}, {"class": "dog", "count": 1, "position": ["right of", 0]}], "prompt": "a photo of a dog right of a teddy bear"}"#,
    )
}

#[test]
fn position_passes_and_fails() {
    let m = position_meta();
    let none = painted(&[]);
    let bear = det("teddy bear", 0.9, A);
    assert_eq!(judge(&m, &[bear.clone(), det("dog", 0.9, B)], &none), (true, String::new()));
    assert_eq!(
        judge(&m, &[det("teddy bear", 0.9, B), det("dog", 0.9, A)], &none),
        (false, "expected dog right of target, found left of target".into())
    );
    // straight below is not "right of"
    assert_eq!(
        judge(&m, &[bear.clone(), det("dog", 0.9, C)], &none),
        (false, "expected dog right of target, found below target".into())
    );
    // the reference missing: its clause fails, and the dog has no target
    assert_eq!(
        judge(&m, &[det("dog", 0.9, B)], &none),
        (false, "expected teddy bear>=1, found 0\nno target for dog to be right of".into())
    );
    assert_eq!(judge(&m, std::slice::from_ref(&bear), &none), (false, "expected dog>=1, found 0".into()));
    // only the top-1 of each is compared: a weaker dog on the wrong side does not matter
    assert!(judge(&m, &[bear.clone(), det("dog", 0.9, B), det("dog", 0.5, [-60.0, 0.0, -50.0, 10.0])], &none).0);
    assert!(!judge(&m, &[bear, det("dog", 0.5, B), det("dog", 0.9, [-60.0, 0.0, -50.0, 10.0])], &none).0);
}

#[test]
fn position_boundary_with_the_0_1_margin() {
    let reference = [0.0, 0.0, 10.0, 10.0];
    let at = |x: f32| [x, 0.0, x + 10.0, 10.0];
    // offset x, margin 0.1·(10 + 10) = 2, ux = (x − 2)/x: exactly 0.5 at x = 4
    assert!(relative_position(&at(4.0), &reference, 0.1).is_empty(), "0.5 is not > 0.5");
    assert_eq!(relative_position(&at(4.01), &reference, 0.1), ["right of"]);
    assert_eq!(relative_position(&at(-4.01), &reference, 0.1), ["left of"]);
    assert!(relative_position(&at(-4.0), &reference, 0.1).is_empty());
    // inside the margin: no relation at all (the 1e-3 rule), same for identical boxes
    assert!(relative_position(&at(2.0), &reference, 0.1).is_empty());
    assert!(relative_position(&reference, &reference, 0.1).is_empty());
    // without the margin the same offset would count
    assert_eq!(relative_position(&at(1.0), &reference, 0.0), ["right of"]);
    // y grows downward
    let up = [0.0, -30.0, 10.0, -20.0];
    assert_eq!(relative_position(&up, &reference, 0.1), ["above"]);
    assert_eq!(relative_position(&reference, &up, 0.1), ["below"]);
    // diagonals hold two relations
    assert_eq!(relative_position(&[30.0, 30.0, 40.0, 40.0], &reference, 0.1), ["right of", "below"]);
    // big boxes widen the margin: a 100-wide box 30 px to the right is not "right of"
    assert!(relative_position(&[30.0, 0.0, 130.0, 10.0], &[0.0, 0.0, 100.0, 10.0], 0.1).is_empty());

    // and through the rule, with the found relations in the reason
    let m = position_meta();
    let none = painted(&[]);
    let bear = det("teddy bear", 0.9, reference);
    assert!(!judge(&m, &[bear.clone(), det("dog", 0.9, at(4.0))], &none).0);
    assert_eq!(
        judge(&m, &[bear.clone(), det("dog", 0.9, at(4.0))], &none).1,
        "expected dog right of target, found  target"
    );
    assert!(judge(&m, &[bear.clone(), det("dog", 0.9, at(4.01))], &none).0);
    assert!(judge(&m, &[bear, det("dog", 0.9, [30.0, 30.0, 40.0, 40.0])], &none).0, "a diagonal still counts");
}

// ------------------------------------------------------------------ color_attr

#[test]
fn color_attr_checks_each_class_colour() {
    let m = meta(
        r#"{"tag": "color_attr", "include": [{"class": "wine glass", "count": 1, "color": "purple"}, {"class": "apple", "count": 1, "color": "black"}], "prompt": "a photo of a purple wine glass and a black apple"}"#,
    );
    let dets = [det("wine glass", 0.8, A), det("apple", 0.7, B)];
    assert!(judge(&m, &dets, &painted(&[(A, Colour::Purple), (B, Colour::Black)])).0);
    assert_eq!(
        judge(&m, &dets, &painted(&[(A, Colour::Purple), (B, Colour::Red)])),
        (false, "expected black apple>=1, found 0 black; and 1 red".into())
    );
    // swapped colours: both clauses fail and both are reported
    assert_eq!(
        judge(&m, &dets, &painted(&[(A, Colour::Black), (B, Colour::Purple)])),
        (
            false,
            "expected purple wine glass>=1, found 0 purple; and 1 black\nexpected black apple>=1, found 0 black; and 1 purple"
                .into()
        )
    );
    assert!(!judge(&m, &dets[..1], &painted(&[(A, Colour::Purple)])).0);
}

#[test]
fn colour_names_and_clip_templates() {
    assert_eq!(
        Colour::ALL.map(Colour::name),
        ["red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white"]
    );
    assert_eq!(
        Colour::Orange.clip_prompts("apple"),
        ["a photo of a orange apple", "a photo of a orange-colored apple", "a photo of a orange object"]
    );
    // every colour in the prompts parses
    for p in geneval_prompts() {
        for c in &p.metadata.include {
            if let Some(col) = &c.color {
                assert!(Colour::parse(col).is_some(), "{col}");
            }
        }
    }
}

// ------------------------------------------------------------------ crops and the traits

#[test]
fn object_crop_masks_with_grey_then_crops_with_pil_rounding() {
    let img = RgbImage::from_fn(4, 4, |x, y| Rgb([x as u8 * 10, y as u8 * 10, 200]));
    let mut mask = GrayImage::new(4, 4);
    mask.put_pixel(1, 1, Luma([1]));
    let d = Detection { class: 0, score: 1.0, bbox: [0.5, 0.5, 2.5, 2.5], mask: Some(mask) };
    // 0.5 → 0 and 2.5 → 2 (half to even): a 2x2 crop from (0, 0)
    let c = object_crop(&img, &d, Background::default(), true);
    assert_eq!(c.dimensions(), (2, 2));
    assert_eq!(*c.get_pixel(1, 1), Rgb([10, 10, 200]), "inside the mask: original");
    assert_eq!(*c.get_pixel(0, 0), Rgb([153, 153, 153]), "outside: #999");
    // no masking with the original background; no crop keeps the full image
    let c = object_crop(&img, &d, Background::Original, false);
    assert_eq!(c, img);
    // a box past the border is padded black, as PIL pads
    let d = Detection { class: 0, score: 1.0, bbox: [3.0, 3.0, 5.0, 5.0], mask: None };
    let c = object_crop(&img, &d, Background::default(), true);
    assert_eq!(c.dimensions(), (2, 2));
    assert_eq!(*c.get_pixel(0, 0), Rgb([30, 30, 200]));
    assert_eq!(*c.get_pixel(1, 1), Rgb([0, 0, 0]));
}

struct Scripted(Vec<Detection>);
impl Detector for Scripted {
    fn detect(&self, _: &RgbImage) -> Vec<Detection> {
        self.0.clone()
    }
    fn name(&self) -> String {
        "scripted".into()
    }
}

/// Majority of red- or blue-dominant pixels, grey ignored.
struct Dominant;
impl ColorClassifier for Dominant {
    fn classify(&self, crops: &[RgbImage], _: &str) -> Vec<Colour> {
        crops
            .iter()
            .map(|c| {
                let (mut r, mut b) = (0, 0);
                for p in c.pixels() {
                    if p[0] > p[2] + 50 {
                        r += 1;
                    } else if p[2] > p[0] + 50 {
                        b += 1;
                    }
                }
                if b > r {
                    Colour::Blue
                } else {
                    Colour::Red
                }
            })
            .collect()
    }
    fn name(&self) -> String {
        "dominant".into()
    }
}

#[test]
fn evaluate_image_masks_the_background_before_classifying() {
    // a red image with a small blue object; its box is mostly red background
    let mut img = RgbImage::from_pixel(20, 20, Rgb([220, 0, 0]));
    let mut mask = GrayImage::new(20, 20);
    for y in 5..8 {
        for x in 5..8 {
            img.put_pixel(x, y, Rgb([0, 0, 220]));
            mask.put_pixel(x, y, Luma([255]));
        }
    }
    let m = meta(
        r#"{"tag": "colors", "include": [{"class": "cup", "count": 1, "color": "blue"}], "prompt": "a photo of a blue cup"}"#,
    );
    let d = Detection { class: class("cup"), score: 0.8, bbox: [2.0, 2.0, 15.0, 15.0], mask: Some(mask) };
    let v = evaluate_image(&img, &m, &Scripted(vec![d.clone()]), &Dominant, &object_names(), &RuleOptions::default());
    assert!(v.correct, "{}", v.reason);
    assert_eq!(v.kept["cup"].len(), 1);
    // without a mask the red background wins
    let v = evaluate_image(
        &img,
        &m,
        &Scripted(vec![Detection { mask: None, ..d }]),
        &Dominant,
        &object_names(),
        &RuleOptions::default(),
    );
    assert!(!v.correct);
    assert_eq!(v.reason, "expected blue cup>=1, found 0 blue; and 1 red");
}

// ------------------------------------------------------------------ summary

fn row(tag: &str, prompt: usize, correct: bool) -> ResultRow {
    ResultRow { tag: tag.into(), metadata: format!("{{\"p\": {prompt}}}"), correct }
}

#[test]
fn summary_is_the_unweighted_mean_of_image_level_task_scores() {
    let rows = [
        row("counting", 0, true),
        row("counting", 0, true),
        row("counting", 1, true),
        row("counting", 1, false),
        row("position", 2, false),
        row("position", 2, true),
        row("position", 3, false),
        row("position", 3, false),
        row("position", 4, false),
        row("position", 4, false),
    ];
    let s = summarize(&rows);
    assert_eq!(s.images, 10);
    assert_eq!(s.prompts, 5);
    assert_eq!(s.tasks.iter().map(|t| t.tag.as_str()).collect::<Vec<_>>(), ["counting", "position"]);
    assert_eq!((s.tasks[0].correct, s.tasks[0].images, s.tasks[0].score), (3, 4, 0.75));
    assert_eq!((s.tasks[1].correct, s.tasks[1].images), (1, 6));
    // (0.75 + 1/6) / 2, not the pooled 4/10
    assert!((s.overall - (0.75 + 1.0 / 6.0) / 2.0).abs() < 1e-12);
    assert!((s.correct_images - 0.4).abs() < 1e-12);
    assert!((s.correct_prompts - 3.0 / 5.0).abs() < 1e-12);
    assert!(summarize(&[]).overall.is_nan());
}
