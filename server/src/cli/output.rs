//! Where the CLI writes images: one `.png` file, or `NNNN.png` in a directory; and token files.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Refuses, before any work, an output path that cannot hold `n` images.
pub fn check_out_path(out: &Path, n: usize) -> Result<()> {
    if n == 1 {
        if out.is_dir() {
            return Ok(());
        }
        if out.extension().is_none_or(|e| !e.eq_ignore_ascii_case("png")) {
            bail!("--out {}: for one image, give a .png file or an existing directory", out.display());
        }
        return Ok(());
    }
    if (out.exists() && !out.is_dir()) || out.extension().is_some_and(|e| e.eq_ignore_ascii_case("png")) {
        bail!("--out {}: for {n} images, give a directory", out.display());
    }
    Ok(())
}

/// Writes images to `out` (one file, or `NNNN.png` in a directory) and returns the paths.
pub fn write_pngs(out: &Path, images: &[image::RgbImage]) -> Result<Vec<PathBuf>> {
    let paths: Vec<PathBuf> = if images.len() == 1 && !out.is_dir() {
        if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        vec![out.to_path_buf()]
    } else {
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        (0..images.len()).map(|i| out.join(format!("{i:04}.png"))).collect()
    };
    for (img, path) in images.iter().zip(&paths) {
        let bytes = janus::input::image::png_bytes(img)?;
        std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(paths)
}

pub fn write_tokens(path: &Path, tokens: &[Vec<u32>]) -> Result<()> {
    let json = serde_json::to_string(tokens)?;
    std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))
}
