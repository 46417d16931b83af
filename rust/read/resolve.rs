//! Which files of a path are the adapter: a file, a shard index, or a folder (its index, else the
//! weight names producers use, else its only `.safetensors` file), and where its config is.
//!
//! May use: `error`, `naming::files`, `read::{index, open, plan}`.

use std::path::{Path, PathBuf};

use crate::error::{Result, ScanError};
use crate::naming::files::{
    is_adapter_file, is_checkpoint, is_hidden_or_temp, is_model_file, CONFIG_NAME, WEIGHT_NAMES,
};
use crate::read::header::Header;
use crate::read::index::ShardIndex;
use crate::read::open::{Limits, SymlinkPolicy};
use crate::read::plan::{Read, ReadPlan};

/// Where the adapter config comes from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ConfigSource {
    /// `adapter_config.json` beside the weights, if there is one.
    #[default]
    Auto,
    /// This file.
    Path(PathBuf),
    /// Do not read a config.
    Skip,
}

/// Options of a scan.
#[derive(Debug, Clone, Default)]
pub struct ScanOptions {
    /// Bounds on the input.
    pub limits: Limits,
    /// Where the config comes from.
    pub config: ConfigSource,
}

/// The files of an adapter: what was chosen, and what was seen beside it.
pub(crate) struct Sources {
    pub(crate) files: Vec<PathBuf>,
    pub(crate) index: Option<(PathBuf, ShardIndex)>,
    /// A shard index still to read; `files` then comes from it.
    pub(crate) pending_index: Option<PathBuf>,
    /// The folder's `.safetensors` files (not checkpoints), read while the index is parsed.
    pub(crate) candidates: Vec<PathBuf>,
    pub(crate) folder: PathBuf,
    pub(crate) config: Option<PathBuf>,
    /// Files in the folder that look like shards but were not chosen.
    pub(crate) others: Vec<PathBuf>,
    /// A model checkpoint found beside the adapter's own files, set aside.
    pub(crate) model_files: Vec<PathBuf>,
}

pub(crate) fn resolve(path: &Path, opts: &ScanOptions) -> Result<Sources> {
    let meta = std::fs::metadata(path).map_err(|e| ScanError::io(path, e))?;
    let mut sources = if meta.is_dir() {
        resolve_folder(path)?
    } else {
        let folder = path
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let pending_index = name.ends_with(".index.json").then(|| path.to_path_buf());
        Sources {
            files: if pending_index.is_some() {
                Vec::new()
            } else {
                vec![path.to_path_buf()]
            },
            index: None,
            pending_index,
            candidates: Vec::new(),
            config: None,
            others: Vec::new(),
            model_files: Vec::new(),
            folder,
        }
    };
    sources.config = match &opts.config {
        ConfigSource::Skip => None,
        ConfigSource::Path(p) => Some(p.clone()),
        ConfigSource::Auto => {
            let candidate = sources.folder.join(CONFIG_NAME);
            std::fs::symlink_metadata(&candidate)
                .is_ok()
                .then_some(candidate)
        }
    };
    Ok(sources)
}

/// A model checkpoint written beside an adapter (mlx-lm-lora fuses its model into the adapter
/// folder by default): when the adapter's own weights or index are in the folder, the model's
/// files are set aside (and reported), never read as the adapter.
fn set_aside_model(
    folder: &Path,
    indexes: &mut Vec<String>,
    weights: &mut Vec<String>,
) -> Vec<PathBuf> {
    if !indexes
        .iter()
        .chain(weights.iter())
        .any(|n| is_adapter_file(n))
    {
        return Vec::new();
    }
    let mut aside = Vec::new();
    for list in [indexes, weights] {
        list.retain(|n| {
            let model = is_model_file(n);
            if model {
                aside.push(folder.join(n));
            }
            !model
        });
    }
    aside.sort();
    aside
}

fn resolve_folder(folder: &Path) -> Result<Sources> {
    let mut indexes = Vec::new();
    let mut weights = Vec::new();
    let mut bins = Vec::new();
    for entry in std::fs::read_dir(folder).map_err(|e| ScanError::io(folder, e))? {
        let entry = entry.map_err(|e| ScanError::io(folder, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_hidden_or_temp(&name) {
            continue;
        }
        if name.ends_with(".safetensors.index.json") {
            indexes.push(name);
        } else if name.ends_with(".safetensors") {
            weights.push(name);
        } else if name == "adapter_model.bin" || name == "adapters.npz" {
            bins.push(name);
        }
    }
    indexes.sort();
    weights.sort();
    let model_files = set_aside_model(folder, &mut indexes, &mut weights);
    let index_name = match indexes.len() {
        0 => None,
        1 => Some(indexes[0].clone()),
        _ => {
            let preferred = WEIGHT_NAMES
                .iter()
                .map(|w| format!("{w}.index.json"))
                .find(|w| indexes.contains(w));
            Some(preferred.ok_or_else(|| ScanError::NoAdapter {
                path: folder.to_path_buf(),
                message: format!(
                    "several shard indexes and no way to choose: {}",
                    indexes.join(", ")
                ),
            })?)
        }
    };
    if let Some(index_name) = index_name {
        return Ok(Sources {
            files: Vec::new(),
            index: None,
            pending_index: Some(folder.join(&index_name)),
            candidates: weights
                .iter()
                .filter(|w| !is_checkpoint(w))
                .map(|w| folder.join(w))
                .collect(),
            folder: folder.to_path_buf(),
            config: None,
            others: Vec::new(),
            model_files,
        });
    }
    let chosen = WEIGHT_NAMES
        .iter()
        .find(|w| weights.iter().any(|x| x == *w))
        .map(ToString::to_string)
        .or_else(|| {
            let candidates: Vec<&String> = weights.iter().filter(|w| !is_checkpoint(w)).collect();
            (candidates.len() == 1).then(|| candidates[0].clone())
        });
    let Some(chosen) = chosen else {
        let message = if weights.is_empty() && !bins.is_empty() {
            format!(
                "no safetensors weights, only {}: pickled/npz adapters have no header to scan; \
                 convert them to safetensors",
                bins.join(", ")
            )
        } else if weights.is_empty() {
            "no adapter weights: the folder has no .safetensors file".to_string()
        } else {
            format!(
                "several .safetensors files and no index to choose among them: {}; \
                 pass the file to scan",
                weights.join(", ")
            )
        };
        return Err(ScanError::NoAdapter {
            path: folder.to_path_buf(),
            message,
        });
    };
    Ok(Sources {
        files: vec![folder.join(&chosen)],
        index: None,
        pending_index: None,
        candidates: Vec::new(),
        folder: folder.to_path_buf(),
        config: None,
        others: Vec::new(),
        model_files,
    })
}

impl Sources {
    /// What to read first: the pending shard index with the folder's `.safetensors` files as its
    /// likely shards, or the chosen files.
    pub(crate) fn plan<'p>(&'p self, opts: &'p ScanOptions) -> ReadPlan<'p> {
        ReadPlan {
            index: self.pending_index.as_deref(),
            files: if self.pending_index.is_some() {
                &self.candidates
            } else {
                &self.files
            },
            folder: &self.folder,
            limits: &opts.limits,
            confine: opts.limits.symlinks == SymlinkPolicy::Inside,
        }
    }

    /// The headers, from the first reads of [`Sources::plan`] (and, for shards the index names
    /// that were not among the candidates, reads now).
    pub(crate) fn take_reads(
        &mut self,
        done: Vec<Read>,
        opts: &ScanOptions,
    ) -> Result<Vec<Header>> {
        let reads = self.plan(opts).finish(done)?;
        if let Some(index_path) = self.pending_index.take() {
            self.others = reads.unreferenced;
            self.files = reads.files;
            self.index = reads.index.map(|index| (index_path, index));
        }
        Ok(reads.headers)
    }
}
