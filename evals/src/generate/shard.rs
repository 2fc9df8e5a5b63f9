//! [`Shard`]: which share of the selected prompts one process generates (`--shard I/N`, or
//! `--shards N` with the index from a Kubernetes Indexed Job's `JOB_COMPLETION_INDEX`).
//!
//! Prompt `p` (its position in the selection, after `--tags` and `--limit`) belongs to shard
//! `p mod N`, so every shard gets about the same number of prompts of every task, and the N shards
//! together cover the selection exactly once.

use std::fmt;
use std::str::FromStr;

/// Shard `index` of `count` (0 ≤ index < count).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

/// Why a shard could not be worked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardError {
    /// Not of the form `I/N` with whole numbers.
    Syntax(String),
    /// N is 0, or I is not below N.
    OutOfRange { index: usize, count: usize },
    /// `--shards N` without an index: JOB_COMPLETION_INDEX is not set.
    NoIndex,
    /// JOB_COMPLETION_INDEX is not a whole number.
    BadIndex(String),
    /// Both `--shard I/N` and `--shards N` were given, with different N.
    Conflict { shard: Shard, shards: usize },
}

impl fmt::Display for ShardError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShardError::Syntax(s) => write!(f, "{s:?} is not a shard: write I/N, e.g. 0/4 (shard 0 of 4)"),
            ShardError::OutOfRange { index, count } => {
                write!(f, "shard {index}/{count}: the count must be at least 1 and the index below it")
            }
            ShardError::NoIndex => {
                write!(
                    f,
                    "--shards needs the shard index from JOB_COMPLETION_INDEX (an Indexed Job), or use --shard I/N"
                )
            }
            ShardError::BadIndex(s) => write!(f, "JOB_COMPLETION_INDEX={s:?} is not a whole number"),
            ShardError::Conflict { shard, shards } => {
                write!(f, "--shard {shard} and --shards {shards} disagree on the number of shards")
            }
        }
    }
}

impl std::error::Error for ShardError {}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = ShardError;
    fn from_str(s: &str) -> Result<Self, ShardError> {
        let (i, n) = s.trim().split_once('/').ok_or_else(|| ShardError::Syntax(s.to_string()))?;
        let num = |x: &str| x.trim().parse::<usize>().map_err(|_| ShardError::Syntax(s.to_string()));
        Shard::new(num(i)?, num(n)?)
    }
}

impl Shard {
    pub fn new(index: usize, count: usize) -> Result<Self, ShardError> {
        if count == 0 || index >= count {
            return Err(ShardError::OutOfRange { index, count });
        }
        Ok(Shard { index, count })
    }

    /// The shard from the flags: `--shard I/N` as given; `--shards N` with I from `job_index`
    /// (the value of JOB_COMPLETION_INDEX); neither: the whole selection (`None`).
    pub fn resolve(
        shard: Option<Shard>,
        shards: Option<usize>,
        job_index: Option<&str>,
    ) -> Result<Option<Shard>, ShardError> {
        match (shard, shards) {
            (Some(s), Some(n)) if s.count != n => Err(ShardError::Conflict { shard: s, shards: n }),
            (Some(s), _) => Ok(Some(s)),
            (None, Some(n)) => {
                let raw = job_index.ok_or(ShardError::NoIndex)?;
                let i = raw.trim().parse::<usize>().map_err(|_| ShardError::BadIndex(raw.to_string()))?;
                Shard::new(i, n).map(Some)
            }
            (None, None) => Ok(None),
        }
    }

    /// Whether the prompt at `position` in the selection is this shard's.
    pub fn takes(&self, position: usize) -> bool {
        position % self.count == self.index
    }
}
