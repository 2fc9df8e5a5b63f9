//! `--model` resolution: a local directory, or a Hugging Face hub id resolved through the
//! standard cache (`HF_HOME`, `HF_HUB_CACHE`, `HF_HUB_OFFLINE`, `HF_TOKEN`, `HF_ENDPOINT`).

use std::path::{Path, PathBuf};

use hf_hub::api::sync::{ApiBuilder, ApiRepo};
use hf_hub::{Cache, Repo, RepoType};

use crate::error::{Error, Result};
use crate::load::checkpoint::{find_weight_files, shard_names, WEIGHT_CANDIDATES};

/// The default model: the hub id of Janus-Pro-1B.
pub const DEFAULT_MODEL: &str = "deepseek-ai/Janus-Pro-1B";

/// The files of one model, all on the local disk.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    /// What the user asked for (a directory or a hub id), for messages and `/v1/models`.
    pub name: String,
    pub config: PathBuf,
    /// `tokenizer.json`; always there from [`ModelFiles::resolve`].
    pub tokenizer: Option<PathBuf>,
    /// `preprocessor_config.json`, when the model has one.
    pub preprocessor: Option<PathBuf>,
    pub weights: Vec<PathBuf>,
}

impl ModelFiles {
    /// Resolves `model` (a directory, or a hub id with an optional `@revision`): `config.json`,
    /// `tokenizer.json`, the weights and `preprocessor_config.json` if there is one.
    pub fn resolve(model: &str) -> Result<Self> {
        Self::resolve_with(model, true)
    }

    /// As [`ModelFiles::resolve`], for models without a `tokenizer.json` (vision-only ones).
    pub fn resolve_without_tokenizer(model: &str) -> Result<Self> {
        Self::resolve_with(model, false)
    }

    fn resolve_with(model: &str, tokenizer: bool) -> Result<Self> {
        let path = Path::new(model);
        if path.is_dir() {
            return Self::from_dir_with(path, model, tokenizer);
        }
        if path.exists() {
            return Err(Error::ModelFiles(format!(
                "--model {model}: is a file; pass the model directory (with config.json) or a hub id"
            )));
        }
        if model.starts_with('.') || model.starts_with('/') || model.split('/').count() != 2 {
            return Err(Error::ModelFiles(format!(
                "--model {model}: no such directory, and not a hub id of the form owner/name"
            )));
        }
        let (id, revision) = match model.split_once('@') {
            Some((id, rev)) => (id, Some(rev)),
            None => (model, None),
        };
        let repo = match revision {
            Some(rev) => Repo::with_revision(id.to_string(), RepoType::Model, rev.to_string()),
            None => Repo::new(id.to_string(), RepoType::Model),
        };
        if env_flag("HF_HUB_OFFLINE") {
            Self::from_cache(model, repo, tokenizer)
        } else {
            Self::from_hub(model, repo, tokenizer)
        }
    }

    /// A local model directory; never touches the network.
    pub fn from_dir(dir: &Path, name: &str) -> Result<Self> {
        Self::from_dir_with(dir, name, true)
    }

    fn from_dir_with(dir: &Path, name: &str, tokenizer: bool) -> Result<Self> {
        let need = |f: &str| {
            let p = dir.join(f);
            if p.is_file() {
                Ok(p)
            } else {
                Err(Error::ModelFiles(format!("model directory {} has no {f}", dir.display())))
            }
        };
        let pre = dir.join("preprocessor_config.json");
        Ok(Self {
            name: name.to_string(),
            config: need("config.json")?,
            tokenizer: if tokenizer { Some(need("tokenizer.json")?) } else { None },
            preprocessor: pre.is_file().then_some(pre),
            weights: find_weight_files(dir)?,
        })
    }

    /// The files a quantized copy keeps beside its weights: `config.json`, the tokenizer, the
    /// preprocessor config and any other JSON file next to `config.json` (tokenizer and
    /// processor configs), but no weight index.
    pub fn side_files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = [Some(&self.config), self.tokenizer.as_ref(), self.preprocessor.as_ref()]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        if let Some(Ok(dir)) = self.config.parent().map(std::fs::read_dir) {
            let mut more: Vec<PathBuf> = dir
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                    name.ends_with(".json") && !name.ends_with(".index.json") && p.is_file()
                })
                .filter(|p| !files.iter().any(|f| f.file_name() == p.file_name()))
                .collect();
            more.sort();
            files.extend(more);
        }
        files
    }

    fn from_cache(name: &str, repo: Repo, tokenizer: bool) -> Result<Self> {
        let cache = hub_cache().repo(repo);
        let need = |f: &str| {
            cache.get(f).ok_or_else(|| {
                Error::ModelFiles(format!(
                    "{name}: {f} is not in the Hugging Face cache at {} and HF_HUB_OFFLINE is set; \
                     download the model once with network access, or pass a local directory",
                    hub_cache().path().display()
                ))
            })
        };
        let config = need("config.json")?;
        let tokenizer = if tokenizer { Some(need("tokenizer.json")?) } else { None };
        let preprocessor = cache.get("preprocessor_config.json");
        let weights = WEIGHT_CANDIDATES
            .iter()
            .find_map(|c| cache.get(c).map(|p| (c, p)))
            .ok_or_else(|| {
                Error::ModelFiles(format!(
                    "{name}: no weights in the Hugging Face cache (looked for {}) and HF_HUB_OFFLINE is set",
                    WEIGHT_CANDIDATES.join(", ")
                ))
            })
            .and_then(|(c, p)| {
                if c.ends_with(".index.json") {
                    shard_names(&p)?.iter().map(|s| need(s)).collect()
                } else {
                    Ok(vec![p])
                }
            })?;
        Ok(Self { name: name.to_string(), config, tokenizer, preprocessor, weights })
    }

    fn from_hub(name: &str, repo: Repo, tokenizer: bool) -> Result<Self> {
        let token = std::env::var("HF_TOKEN").ok().filter(|t| !t.is_empty());
        let mut builder = ApiBuilder::from_env().with_progress(true).with_retries(2);
        if let Ok(dir) = std::env::var("HF_HUB_CACHE") {
            builder = builder.with_cache_dir(PathBuf::from(dir));
        }
        if token.is_some() {
            builder = builder.with_token(token);
        }
        let api =
            builder.build().map_err(|e| Error::ModelFiles(format!("{name}: cannot set up the hub client: {e}")))?;
        let repo = api.repo(repo);
        let get = |f: &str| fetch(&repo, name, f);
        let siblings: Vec<String> = repo
            .info()
            .map_err(|e| Error::ModelFiles(format!("{name}: cannot list the repository: {e}")))?
            .siblings
            .into_iter()
            .map(|s| s.rfilename)
            .collect();
        let has = |f: &str| siblings.iter().any(|s| s == f);
        let weights_file = WEIGHT_CANDIDATES.iter().find(|c| has(c)).ok_or_else(|| {
            Error::ModelFiles(format!("{name}: the repository has none of {}", WEIGHT_CANDIDATES.join(", ")))
        })?;
        let config = get("config.json")?;
        let tokenizer = if tokenizer { Some(get("tokenizer.json")?) } else { None };
        let preprocessor = if has("preprocessor_config.json") { Some(get("preprocessor_config.json")?) } else { None };
        let first = get(weights_file)?;
        let weights = if weights_file.ends_with(".index.json") {
            shard_names(&first)?.iter().map(|s| get(s)).collect::<Result<_>>()?
        } else {
            vec![first]
        };
        Ok(Self { name: name.to_string(), config, tokenizer, preprocessor, weights })
    }
}

fn fetch(repo: &ApiRepo, name: &str, file: &str) -> Result<PathBuf> {
    repo.get(file).map_err(|e| Error::ModelFiles(format!("{name}: cannot download {file}: {e}")))
}

/// The hub cache as the Python `huggingface_hub` finds it: `HF_HUB_CACHE`, else `$HF_HOME/hub`,
/// else `~/.cache/huggingface/hub`.
fn hub_cache() -> Cache {
    match std::env::var("HF_HUB_CACHE") {
        Ok(dir) if !dir.is_empty() => Cache::new(PathBuf::from(dir)),
        _ => Cache::from_env(),
    }
}

fn env_flag(name: &str) -> bool {
    std::env::var(name)
        .map(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_paths_that_are_neither_dirs_nor_ids() {
        let e = ModelFiles::resolve("./does/not/exist").unwrap_err().to_string();
        assert!(e.contains("no such directory"), "{e}");
    }

    #[test]
    fn offline_cache_miss_names_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        // Only this test touches these variables in this process's test binary.
        std::env::set_var("HF_HUB_CACHE", tmp.path());
        std::env::set_var("HF_HUB_OFFLINE", "1");
        let e = ModelFiles::resolve("deepseek-ai/Janus-Pro-1B").unwrap_err().to_string();
        std::env::remove_var("HF_HUB_OFFLINE");
        std::env::remove_var("HF_HUB_CACHE");
        assert!(e.contains("config.json") && e.contains("HF_HUB_OFFLINE"), "{e}");
    }

    #[test]
    fn offline_cache_hit_resolves_files() {
        let tmp = tempfile::tempdir().unwrap();
        let snap = tmp.path().join("models--acme--tiny/snapshots/abc123");
        std::fs::create_dir_all(&snap).unwrap();
        std::fs::create_dir_all(tmp.path().join("models--acme--tiny/refs")).unwrap();
        std::fs::write(tmp.path().join("models--acme--tiny/refs/main"), "abc123").unwrap();
        for f in ["config.json", "tokenizer.json", "model.safetensors"] {
            std::fs::write(snap.join(f), "{}").unwrap();
        }
        let cache = Cache::new(tmp.path().to_path_buf()).repo(Repo::model("acme/tiny".into()));
        assert!(cache.get("config.json").is_some());
        assert!(cache.get("pytorch_model.bin").is_none());
    }
}
