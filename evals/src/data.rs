//! The benchmark prompt data, embedded in the binary.
//!
//! * GenEval (djghosh13/geneval, MIT, © 2023 Dhruba Ghosh): `data/geneval/`, see its SOURCE.md.
//! * DPG-Bench (TencentQQGYLab/ELLA, Apache-2.0): `data/dpg/`, see its SOURCE.md.
//!
//! The files are byte-for-byte copies; the attribution files travel with them and are embedded
//! too (`janus-eval licenses` prints them).

use serde::Deserialize;

use crate::rules::Metadata;

/// `evaluation_metadata.jsonl`: 553 lines, one JSON object per GenEval prompt.
pub const GENEVAL_METADATA: &str = include_str!("../data/geneval/evaluation_metadata.jsonl");
/// The 80 COCO class names in COCO order (the detector's class index is the line index).
pub const GENEVAL_OBJECT_NAMES: &str = include_str!("../data/geneval/object_names.txt");
/// Provenance and MIT attribution of the GenEval data.
pub const GENEVAL_SOURCE: &str = include_str!("../data/geneval/SOURCE.md");
/// The 1065 DPG-Bench prompts, `{"item_id", "prompt"}` per line.
pub const DPG_PROMPTS: &str = include_str!("../data/dpg/dpg_bench_prompts.jsonl");
/// Provenance and Apache-2.0 attribution of the DPG-Bench prompts.
pub const DPG_SOURCE: &str = include_str!("../data/dpg/SOURCE.md");

/// Number of GenEval prompts.
pub const GENEVAL_PROMPTS: usize = 553;

/// One GenEval prompt: its line index (the folder name is `{index:05}`), the exact source line
/// (without its newline) and the parsed metadata.
#[derive(Debug, Clone)]
pub struct GenevalPrompt {
    pub index: usize,
    pub line: &'static str,
    pub metadata: Metadata,
}

impl GenevalPrompt {
    /// The official folder name: the 0-padded 5-digit line index.
    pub fn folder_name(&self) -> String {
        format!("{:05}", self.index)
    }
}

/// All 553 GenEval prompts in file order.
pub fn geneval_prompts() -> Vec<GenevalPrompt> {
    GENEVAL_METADATA
        .lines()
        .enumerate()
        .map(|(index, line)| GenevalPrompt {
            index,
            line,
            metadata: serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("embedded evaluation_metadata.jsonl line {}: {e}", index + 1)),
        })
        .collect()
}

/// The 80 COCO class names, in detector order.
pub fn object_names() -> Vec<&'static str> {
    GENEVAL_OBJECT_NAMES.lines().map(str::trim).filter(|l| !l.is_empty()).collect()
}

/// One DPG-Bench prompt (`item_id` is the file name the DPG scorer expects, without `.png`).
#[derive(Debug, Clone, Deserialize)]
pub struct DpgPrompt {
    pub item_id: String,
    pub prompt: String,
}

/// All 1065 DPG-Bench prompts in file order.
pub fn dpg_prompts() -> Vec<DpgPrompt> {
    DPG_PROMPTS
        .lines()
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("embedded dpg_bench_prompts.jsonl line {}: {e}", i + 1))
        })
        .collect()
}

/// Selects prompts: only those whose tag is in `tags` (all when empty), then the first `limit`.
pub fn select(prompts: Vec<GenevalPrompt>, tags: &[String], limit: Option<usize>) -> Vec<GenevalPrompt> {
    prompts
        .into_iter()
        .filter(|p| tags.is_empty() || tags.contains(&p.metadata.tag))
        .take(limit.unwrap_or(usize::MAX))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::TAGS;

    #[test]
    fn geneval_counts_match_the_source() {
        let p = geneval_prompts();
        assert_eq!(p.len(), GENEVAL_PROMPTS);
        let count = |t: &str| p.iter().filter(|x| x.metadata.tag == t).count();
        assert_eq!(
            TAGS.iter().map(|t| count(t)).collect::<Vec<_>>(),
            [80, 99, 80, 94, 100, 100],
            "single_object, two_object, counting, colors, position, color_attr"
        );
        assert_eq!(
            p[0].line,
            r#"{"tag": "single_object", "include": [{"class": "bench", "count": 1}], "prompt": "a photo of a bench"}"#
        );
        assert_eq!(p[552].folder_name(), "00552");
    }

    #[test]
    fn every_class_is_a_coco_name_and_positions_point_back() {
        let names = object_names();
        assert_eq!(names.len(), 80);
        assert_eq!(names[0], "person");
        for p in geneval_prompts() {
            let m = &p.metadata;
            for (i, c) in m.include.iter().enumerate() {
                assert!(names.contains(&c.class.as_str()), "{}", c.class);
                if let Some((_, g)) = &c.position {
                    assert!(*g < i, "{}", p.line);
                }
            }
            for c in &m.exclude {
                assert!(names.contains(&c.class.as_str()), "{}", c.class);
            }
        }
    }

    #[test]
    fn dpg_prompts_parse() {
        let p = dpg_prompts();
        assert_eq!(p.len(), 1065);
        assert!(p.iter().all(|x| !x.item_id.is_empty() && !x.prompt.is_empty()));
        assert!(DPG_SOURCE.contains("Apache-2.0") && GENEVAL_SOURCE.contains("MIT"));
    }

    #[test]
    fn select_by_tag_and_limit() {
        let tags = vec!["counting".to_string(), "position".to_string()];
        let s = select(geneval_prompts(), &tags, Some(3));
        assert_eq!(s.len(), 3);
        assert!(s.iter().all(|p| p.metadata.tag == "counting" || p.metadata.tag == "position"));
        assert!(s.windows(2).all(|w| w[0].index < w[1].index));
        assert_eq!(select(geneval_prompts(), &[], None).len(), 553);
    }
}
