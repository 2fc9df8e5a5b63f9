//! GenEval-style evaluation for Janus-Pro (and any OpenAI-compatible image endpoint).
//!
//! * [`data`]: the GenEval and DPG-Bench prompts, embedded with their attribution.
//! * [`generate`]: `geneval generate` and `dpg generate`, writing the folder layouts the official
//!   evaluators read.
//! * [`rules`]: GenEval's correctness rules and summary, behind `Detector` / `ColorClassifier`
//!   traits.
//! * [`scores`]: the files a scored run leaves (`results.jsonl`, `scores.json`).
//! * [`detector`] (DETR ResNet-50) and [`clip`] (CLIP ViT-L/14 colours): the scoring models on
//!   candle; [`score`]: `geneval score` and `geneval import`.
//! * [`compare`]: runs side by side with [`published`] numbers (Markdown, HTML contact sheet).

pub mod clip;
pub mod compare;
pub mod data;
pub mod detector;
pub mod generate;
pub mod published;
pub mod rules;
pub mod score;
pub mod scores;
