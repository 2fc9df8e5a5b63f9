//! The on-disk layouts: [`Item`] (one prompt and the files its samples become), GenEval's
//! `<00000>/metadata.jsonl + samples/<0000>.png` folders and DPG-Bench's `<item_id>.png` 2×2 grids.

use std::fs;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};

use super::util::write_atomic;
use crate::data::{DpgPrompt, GenevalPrompt};

/// The name of sample `i` inside `samples/` (the GenEval README's 4-digit form; the evaluator
/// accepts any `\d+\.png`).
pub fn sample_name(i: usize) -> String {
    format!("{i:04}.png")
}

/// The bytes the official generator writes to `metadata.jsonl`: `json.dump(metadata, fp)` of
/// the object parsed from the source line. With Python's default separators and ASCII
/// escaping that reproduces the source line (which was itself written by `json.dumps`)
/// byte for byte, with no trailing newline.
pub fn metadata_bytes(p: &GenevalPrompt) -> &'static [u8] {
    p.line.as_bytes()
}

/// Whether a prompt folder is complete for `samples` images.
pub fn folder_done(dir: &Path, p: &GenevalPrompt, samples: usize) -> bool {
    fs::read(dir.join("metadata.jsonl")).is_ok_and(|b| b == metadata_bytes(p))
        && (0..samples).all(|i| dir.join("samples").join(sample_name(i)).is_file())
}

/// One thing to generate: a prompt and the files its samples become.
pub trait Item: Sync {
    /// How messages name it (the folder or file name).
    fn name(&self) -> String;
    fn prompt(&self) -> &str;
    /// Whether its files under `out` are complete for `samples` images.
    fn done(&self, out: &Path, samples: usize) -> bool;
    /// Writes its files under `out` from exactly `samples` PNGs.
    fn write(&self, out: &Path, images: &[Vec<u8>]) -> Result<()>;
}

impl Item for GenevalPrompt {
    fn name(&self) -> String {
        self.folder_name()
    }
    fn prompt(&self) -> &str {
        &self.metadata.prompt
    }
    fn done(&self, out: &Path, samples: usize) -> bool {
        folder_done(&out.join(self.folder_name()), self, samples)
    }
    fn write(&self, out: &Path, images: &[Vec<u8>]) -> Result<()> {
        let dir = out.join(self.folder_name());
        let samples_dir = dir.join("samples");
        fs::create_dir_all(&samples_dir).with_context(|| format!("creating {}", samples_dir.display()))?;
        write_atomic(&dir.join("metadata.jsonl"), metadata_bytes(self))?;
        for (i, png) in images.iter().enumerate() {
            write_atomic(&samples_dir.join(sample_name(i)), png)?;
        }
        Ok(())
    }
}

/// The DPG-Bench file of an item: `<item_id>.png`.
pub fn dpg_file_name(p: &DpgPrompt) -> String {
    format!("{}.png", p.item_id)
}

/// Tiles equal-sized images into a `cols`-wide grid, row-major.
pub fn grid(images: &[image::RgbImage], cols: usize) -> Result<image::RgbImage> {
    let first = images.first().ok_or_else(|| anyhow!("no image to tile"))?;
    let (w, h) = first.dimensions();
    if let Some(o) = images.iter().find(|i| i.dimensions() != (w, h)) {
        bail!("the samples differ in size ({w}x{h} and {}x{}); a grid needs equal tiles", o.width(), o.height());
    }
    let cols = cols.max(1);
    let rows = images.len().div_ceil(cols);
    let mut out = image::RgbImage::new(w * cols as u32, h * rows as u32);
    for (i, img) in images.iter().enumerate() {
        image::imageops::replace(&mut out, img, (i % cols) as i64 * w as i64, (i / cols) as i64 * h as i64);
    }
    Ok(out)
}

impl Item for DpgPrompt {
    fn name(&self) -> String {
        dpg_file_name(self)
    }
    fn prompt(&self) -> &str {
        &self.prompt
    }
    fn done(&self, out: &Path, _samples: usize) -> bool {
        out.join(dpg_file_name(self)).is_file()
    }
    fn write(&self, out: &Path, images: &[Vec<u8>]) -> Result<()> {
        if self.item_id.is_empty() || !self.item_id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            bail!("DPG item id {:?} is not a plain file name", self.item_id);
        }
        let png = match images {
            [one] => one.clone(),
            _ => {
                let tiles = images
                    .iter()
                    .map(|b| Ok(image::load_from_memory(b).context("a sample is not a readable image")?.to_rgb8()))
                    .collect::<Result<Vec<_>>>()?;
                janus::input::image::png_bytes(&grid(&tiles, 2)?)?
            }
        };
        write_atomic(&out.join(dpg_file_name(self)), &png)
    }
}
