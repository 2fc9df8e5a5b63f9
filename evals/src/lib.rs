//! GenEval-style evaluation for Janus-Pro (and any OpenAI-compatible image endpoint).
//!
//! * [`data`]: the GenEval and DPG-Bench prompts, embedded with their attribution.
//! * [`generate`]: `geneval generate`, writing the folder layout the official evaluator reads.
//! * [`rules`]: GenEval's correctness rules and summary, behind `Detector` / `ColorClassifier`
//!   traits.
//! * [`scores`]: the files a scored run leaves (`results.jsonl`, `scores.json`).

pub mod data;
pub mod generate;
pub mod rules;
pub mod scores;
