//! Scanning an adapter: a single file, a folder, or a sharded folder with an index.
//!
//! Files are read in parallel (one task per shard), then the tensors are grouped into modules,
//! checked against each other and against `adapter_config.json`, and summarised. Nothing here
//! creates a Python object; the binding decides what to hand over.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::{parse_config, peft_pattern, AdapterConfig, PeftRanks, Schema, TargetModules};
use crate::error::{Result, ScanError, ShardKeyIssue};
use crate::header::name_hash;
use crate::header::{
    read_header, read_small_file, Header, Limits, Names, Shape, SymlinkPolicy, Tensor, TensorInfo,
};
use crate::index::{confine, read_index, ShardIndex};
use crate::lora::{
    compress_ranges, infer, natural_cmp, sort_natural, Family, InferOptions, Kind, Module,
    TensorView, Variant, PEFT_PREFIX,
};
use crate::problem::{Problem, Severity};

/// The config file name every producer uses.
pub const CONFIG_NAME: &str = "adapter_config.json";

/// Weight file names tried, in order, in a folder without an index.
pub const WEIGHT_NAMES: &[&str] = &[
    "adapters.safetensors",
    "adapter_model.safetensors",
    "weights.safetensors",
];

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

/// The adapter's naming convention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// mlx-lm / mlx-vlm / Unsloth naming.
    Mlx,
    /// Hugging Face PEFT naming.
    Peft,
    /// Neither, or both.
    Unknown,
}

impl Format {
    /// Stable name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Mlx => "mlx",
            Self::Peft => "peft",
            Self::Unknown => "unknown",
        }
    }
}

/// One file that was read.
#[derive(Debug, Clone)]
pub struct FileSummary {
    /// Its path.
    pub path: PathBuf,
    /// Header length N.
    pub header_bytes: u64,
    /// Number of tensors.
    pub tensor_count: usize,
    /// Bytes of tensor data.
    pub data_bytes: u64,
    /// `__metadata__`.
    pub metadata: Option<BTreeMap<String, String>>,
}

/// A group of modules that differ only in their layer index, for summaries.
#[derive(Debug, Clone)]
pub struct ModuleGroup {
    /// The path with the layer index replaced by `*`.
    pub template: String,
    /// The layer indices, in order (empty for modules outside numbered layers).
    pub layers: Vec<u64>,
    /// Number of modules in the group.
    pub count: usize,
    /// A representative module (all members agree on everything but the path and keys).
    pub module: Module,
}

/// All tensors of all files: each file's list and names as they were parsed, indexed as one list
/// (the lists are not copied into one: for a million tensors that copy is the largest allocation
/// of a scan).
#[derive(Debug, Clone, Default)]
pub struct Tensors {
    lists: Vec<(Names, Vec<TensorInfo>)>,
    /// The index of each list's first tensor.
    starts: Vec<usize>,
    /// For each block of `BLOCK` tensors, the list holding its first tensor: a lookup starts there.
    block_list: Vec<u32>,
    len: usize,
}

/// Tensors per entry of `Tensors::block_list`.
const BLOCK: usize = 256;

impl Tensors {
    /// One list per file, in file order.
    pub fn new(lists: Vec<(Names, Vec<TensorInfo>)>) -> Self {
        let mut starts = Vec::with_capacity(lists.len());
        let mut len = 0;
        for (_, l) in &lists {
            starts.push(len);
            len += l.len();
        }
        let mut block_list = Vec::with_capacity(len / BLOCK + 1);
        let mut list = 0;
        for first in (0..len).step_by(BLOCK) {
            while list + 1 < starts.len() && starts[list + 1] <= first {
                list += 1;
            }
            block_list.push(u32::try_from(list).unwrap_or(u32::MAX));
        }
        Self {
            lists,
            starts,
            block_list,
            len,
        }
    }

    /// One list of named shapes (names in one buffer; dtype and offsets left unset).
    pub fn from_named<S: AsRef<str>>(named: impl IntoIterator<Item = (S, Shape)>) -> Self {
        let mut names = Names::default();
        let list = named
            .into_iter()
            .map(|(name, shape)| TensorInfo {
                name_span: names.push(name.as_ref()),
                dtype: crate::dtype::Dtype::F32,
                shape,
                begin: 0,
                end: 0,
            })
            .collect();
        Self::new(vec![(names, list)])
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.len
    }

    /// No tensors at all.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The tensors, in order.
    pub fn iter(&self) -> impl Iterator<Item = Tensor<'_>> + Clone {
        self.lists.iter().flat_map(|(names, l)| {
            l.iter().map(move |info| Tensor {
                name: names.get(info.name_span),
                info,
            })
        })
    }

    /// `(file index, tensor)` for every tensor, in order.
    pub fn with_files(&self) -> impl Iterator<Item = (usize, Tensor<'_>)> {
        self.lists.iter().enumerate().flat_map(|(f, (names, l))| {
            l.iter().map(move |info| {
                (
                    f,
                    Tensor {
                        name: names.get(info.name_span),
                        info,
                    },
                )
            })
        })
    }

    /// Tensor `i`.
    pub fn get(&self, i: usize) -> Tensor<'_> {
        let f = self.file_of(i);
        let (names, list) = &self.lists[f];
        let info = &list[i - self.starts[f]];
        Tensor {
            name: names.get(info.name_span),
            info,
        }
    }

    /// The index (in `Scan::files`) of the file that holds tensor `i`.
    pub fn file_of(&self, i: usize) -> usize {
        let Some(&from) = self.block_list.get(i / BLOCK) else {
            return self.starts.len().saturating_sub(1);
        };
        let mut f = from as usize;
        while f + 1 < self.starts.len() && self.starts[f + 1] <= i {
            f += 1;
        }
        f
    }
}

#[cfg(test)]
mod tensors_tests {
    use super::*;
    use crate::dtype::Dtype;

    #[test]
    fn one_index_over_the_files() {
        let t = |names: &mut Names, name: String| TensorInfo {
            name_span: names.push(&name),
            dtype: Dtype::from_name("F32").unwrap(),
            shape: crate::header::Shape::new(),
            begin: 0,
            end: 0,
        };
        // Empty lists, lists shorter and longer than a block.
        let sizes = [0, 3, 0, 0, 700, 1, 256, 0, 300];
        let lists: Vec<(Names, Vec<TensorInfo>)> = sizes
            .iter()
            .enumerate()
            .map(|(f, &n)| {
                let mut names = Names::default();
                let list = (0..n).map(|i| t(&mut names, format!("{f}.{i}"))).collect();
                (names, list)
            })
            .collect();
        let tensors = Tensors::new(lists);
        assert_eq!(tensors.len(), sizes.iter().sum::<usize>());
        for (i, (f, x)) in tensors.with_files().enumerate() {
            assert_eq!(tensors.file_of(i), f);
            assert_eq!(tensors.get(i).name, x.name);
            assert!(x.name.starts_with(&format!("{f}.")));
        }
        assert!(Tensors::new(Vec::new()).is_empty());
    }
}

/// Everything known about an adapter after a scan.
#[derive(Debug, Clone)]
pub struct Scan {
    /// The path that was scanned.
    pub path: PathBuf,
    /// The shard index, when there is one.
    pub index_path: Option<PathBuf>,
    /// The files read, in order.
    pub files: Vec<FileSummary>,
    /// All tensors of all files, in file order.
    pub tensors: Tensors,
    /// The adapter config.
    pub config: Option<AdapterConfig>,
    /// Naming convention.
    pub format: Format,
    /// `lora`, `dora`, `full`, or unknown.
    pub fine_tune_type: Option<&'static str>,
    /// Inferred modules, in natural path order.
    pub modules: Vec<Module>,
    /// Indices into `tensors` of tensors that are not adapter parameters.
    pub non_adapter: Vec<usize>,
    /// Findings.
    pub problems: Vec<Problem>,
}

impl Scan {
    /// Total bytes of tensor data.
    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.data_bytes).sum()
    }

    /// Whether any problem is an error.
    pub fn has_errors(&self) -> bool {
        self.problems.iter().any(|p| p.severity == Severity::Error)
    }

    /// The scan as the documented JSON object.
    pub fn to_json(&self, pretty: bool) -> String {
        let files: Vec<JsonFile<'_>> = self
            .files
            .iter()
            .map(|f| JsonFile {
                path: f.path.to_string_lossy(),
                header_bytes: f.header_bytes,
                tensor_count: f.tensor_count,
            })
            .collect();
        let view = JsonScan {
            path: self.path.to_string_lossy(),
            format: self.format,
            fine_tune_type: self.fine_tune_type,
            tensor_count: self.tensors.len(),
            total_bytes: self.total_bytes(),
            files,
            config: self.config.as_ref().map(|c| &c.raw),
            modules: self
                .modules
                .iter()
                .map(|m| JsonModule {
                    path: &m.path,
                    kind: m.kind,
                    variant: m.variant,
                    rank: m.rank,
                    in_dims: m.in_dims,
                    out_dims: m.out_dims,
                    num_experts: m.num_experts,
                    dtype: m.dtype,
                    keys: JsonKeys {
                        ids: &m.tensor_ids,
                        tensors: &self.tensors,
                    },
                })
                .collect(),
            problems: &self.problems,
        };
        let out = if pretty {
            serde_json::to_string_pretty(&view)
        } else {
            serde_json::to_string(&view)
        };
        out.unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// Modules grouped by their path with the layer index taken out, in order of first appearance.
    pub fn module_groups(&self) -> Vec<ModuleGroup> {
        let mut order: Vec<ModuleGroup> = Vec::new();
        let mut lookup: HashMap<GroupKey, usize> = HashMap::new();
        for m in &self.modules {
            let (template, layer) = template_of(&m.path);
            let key = GroupKey {
                template: template.clone(),
                kind: m.kind.name(),
                variant: m.variant.name(),
                layout: m.layout,
                rank: m.rank,
                in_dims: m.in_dims,
                out_dims: m.out_dims,
                num_experts: m.num_experts,
                dtype: m.dtype,
            };
            if let Some(&i) = lookup.get(&key) {
                let g = &mut order[i];
                g.count += 1;
                if let Some(l) = layer {
                    g.layers.push(l);
                }
            } else {
                lookup.insert(key, order.len());
                order.push(ModuleGroup {
                    template,
                    layers: layer.into_iter().collect(),
                    count: 1,
                    module: Module {
                        tensor_ids: smallvec::SmallVec::new(),
                        places: smallvec::SmallVec::new(),
                        shapes: smallvec::SmallVec::new(),
                        ..m.clone()
                    },
                });
            }
        }
        order
    }
}

#[derive(Hash, PartialEq, Eq)]
struct GroupKey {
    template: String,
    kind: &'static str,
    variant: &'static str,
    layout: &'static str,
    rank: Option<u64>,
    in_dims: Option<u64>,
    out_dims: Option<u64>,
    num_experts: Option<u64>,
    dtype: &'static str,
}

const LAYER_CONTAINERS: &[&str] = &["layers", "h", "blocks", "layer", "block"];

/// The layer index of a module path: the first number right after `layers` (or `h`, `blocks`).
pub fn layer_index(path: &str) -> Option<u64> {
    layer_split(path).map(|(_, i, _)| i)
}

/// Split a module path at its layer index: `model.layers.3.mlp.up` -> (`model.layers`, 3, `mlp.up`).
/// Both sides are slices of `path` (the rest is empty when the index ends it).
pub fn layer_split(path: &str) -> Option<(&str, u64, &str)> {
    let mut prev: Option<&str> = None;
    let mut start = 0;
    for part in path.split('.') {
        if prev.is_some_and(|p| LAYER_CONTAINERS.contains(&p)) {
            if let Ok(n) = part.parse() {
                let end = start + part.len();
                return Some((&path[..start - 1], n, path.get(end + 1..).unwrap_or("")));
            }
        }
        prev = Some(part);
        start += part.len() + 1;
    }
    None
}

fn template_of(path: &str) -> (String, Option<u64>) {
    let mut prev = "";
    let mut out = Vec::new();
    let mut layer = None;
    for part in path.split('.') {
        if layer.is_none() && LAYER_CONTAINERS.contains(&prev) {
            if let Ok(n) = part.parse() {
                layer = Some(n);
                out.push("*");
                prev = part;
                continue;
            }
        }
        out.push(part);
        prev = part;
    }
    (out.join("."), layer)
}

#[derive(Serialize)]
struct JsonFile<'a> {
    path: std::borrow::Cow<'a, str>,
    header_bytes: u64,
    tensor_count: usize,
}

#[derive(Serialize)]
struct JsonModule<'a> {
    path: &'a str,
    kind: Kind,
    variant: Variant,
    rank: Option<u64>,
    in_dims: Option<u64>,
    out_dims: Option<u64>,
    num_experts: Option<u64>,
    dtype: &'a str,
    keys: JsonKeys<'a>,
}

/// A module's tensor names, written straight from the scan's tensor list.
struct JsonKeys<'a> {
    ids: &'a [u32],
    tensors: &'a Tensors,
}

impl Serialize for JsonKeys<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_seq(self.ids.iter().map(|&i| self.tensors.get(i as usize).name))
    }
}

#[derive(Serialize)]
struct JsonScan<'a> {
    path: std::borrow::Cow<'a, str>,
    format: Format,
    fine_tune_type: Option<&'static str>,
    tensor_count: usize,
    total_bytes: u64,
    files: Vec<JsonFile<'a>>,
    config: Option<&'a serde_json::Value>,
    modules: Vec<JsonModule<'a>>,
    problems: &'a [Problem],
}

struct Sources {
    files: Vec<PathBuf>,
    index: Option<(PathBuf, ShardIndex)>,
    /// A shard index still to read; `files` then comes from it.
    pending_index: Option<PathBuf>,
    /// The folder's `.safetensors` files (not checkpoints), read while the index is parsed.
    candidates: Vec<PathBuf>,
    folder: PathBuf,
    config: Option<PathBuf>,
    /// Files in the folder that look like shards but were not chosen.
    others: Vec<PathBuf>,
}

fn is_hidden_or_temp(name: &str) -> bool {
    name.starts_with('.') || name.contains(".tmp")
}

/// Trainer checkpoints written beside the final adapter (`0000100_adapters.safetensors`).
fn is_checkpoint(name: &str) -> bool {
    name.split_once('_').is_some_and(|(n, rest)| {
        !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) && rest == "adapters.safetensors"
    })
}

fn resolve(path: &Path, opts: &ScanOptions) -> Result<Sources> {
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
    })
}

impl Sources {
    /// What to read first: the pending shard index with the folder's `.safetensors` files as its
    /// likely shards, or the chosen files.
    fn plan<'p>(&'p self, opts: &'p ScanOptions) -> ReadPlan<'p> {
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
    fn take_reads(&mut self, done: Vec<Read>, opts: &ScanOptions) -> Result<Vec<Header>> {
        let reads = self.plan(opts).finish(done)?;
        if let Some(index_path) = self.pending_index.take() {
            self.others = reads.unreferenced;
            self.files = reads.files;
            self.index = reads.index.map(|index| (index_path, index));
        }
        Ok(reads.headers)
    }
}

/// What one side of a scan or a check reads first: a shard index (with the folder's
/// `.safetensors` files, read while the index is parsed, since they are almost always the shards
/// it names), or just files.
pub(crate) struct ReadPlan<'p> {
    /// The shard index, if any.
    pub index: Option<&'p Path>,
    /// The index's likely shards, or the files to read.
    pub files: &'p [PathBuf],
    /// The folder that the index's shard names are in.
    pub folder: &'p Path,
    pub limits: &'p Limits,
    /// Refuse a file whose real location is outside `folder`.
    pub confine: bool,
}

/// One first read, and what it gave.
pub(crate) enum Read {
    Index(Result<ShardIndex>),
    /// The header of `files[i]`.
    Header(usize, Result<Header>),
}

/// What a plan's reads gave.
pub(crate) struct Reads {
    /// The files read: the shards the index names, or the plan's files.
    pub files: Vec<PathBuf>,
    pub index: Option<ShardIndex>,
    /// Their headers, in the order of `files`.
    pub headers: Vec<Header>,
    /// Likely shards the index does not name.
    pub unreferenced: Vec<PathBuf>,
}

/// The first reads of every plan in one parallel step (indexes first: they are the largest
/// pieces), so that two sides read together keep every core busy; each plan gets its own back,
/// in order.
pub(crate) fn read_plans(plans: &[ReadPlan<'_>]) -> Vec<Vec<Read>> {
    /// One read of a plan: its index, or its file at a position.
    #[derive(Clone, Copy)]
    enum Task<'p> {
        Index(&'p Path),
        File(usize),
    }
    let mut tasks: Vec<(usize, Task<'_>)> = Vec::new();
    for (p, plan) in plans.iter().enumerate() {
        tasks.extend(plan.index.map(|index| (p, Task::Index(index))));
    }
    for (p, plan) in plans.iter().enumerate() {
        tasks.extend((0..plan.files.len()).map(|i| (p, Task::File(i))));
    }
    let done = crate::par::map(&tasks, tasks.len() > 1, |&(p, task)| {
        let plan = &plans[p];
        match task {
            Task::File(i) => Read::Header(i, plan.read(&plan.files[i])),
            Task::Index(index) => Read::Index(read_index(index, plan.limits)),
        }
    });
    let mut out: Vec<Vec<Read>> = plans.iter().map(|_| Vec::new()).collect();
    for ((p, _), read) in tasks.iter().zip(done) {
        out[*p].push(read);
    }
    out
}

impl ReadPlan<'_> {
    fn read(&self, file: &Path) -> Result<Header> {
        if self.confine {
            check_inside(self.folder, file)?;
        }
        read_header(file, self.limits)
    }

    /// Put this plan's first reads together. With an index, the index decides which headers
    /// count (a header that failed only for a file the index does not name is no error), and the
    /// shards it names that were not read yet are read now.
    pub(crate) fn finish(&self, done: Vec<Read>) -> Result<Reads> {
        let Some(index_path) = self.index else {
            let headers = done
                .into_iter()
                .filter_map(|d| match d {
                    Read::Header(_, h) => Some(h),
                    Read::Index(_) => None,
                })
                .collect::<Result<Vec<_>>>()?;
            return Ok(Reads {
                files: self.files.to_vec(),
                index: None,
                headers,
                unreferenced: Vec::new(),
            });
        };
        let mut index = None;
        let mut early: HashMap<&PathBuf, Result<Header>> = HashMap::new();
        for d in done {
            match d {
                Read::Index(i) => index = Some(i),
                Read::Header(i, header) => {
                    early.insert(&self.files[i], header);
                }
            }
        }
        // The index was read with the rest; the fallback only spares an unwrap.
        let index = index.unwrap_or_else(|| read_index(index_path, self.limits))?;
        let files = index
            .shard_names()
            .iter()
            .map(|s| confine(index_path, self.folder, s, Some(".safetensors")))
            .collect::<Result<Vec<_>>>()?;
        let missing: Vec<&PathBuf> = files.iter().filter(|f| !early.contains_key(f)).collect();
        let late = crate::par::map(&missing, missing.len() > 1, |f| (*f, self.read(f)));
        early.extend(late);
        let headers = files
            .iter()
            .map(|f| early.remove(f).unwrap_or_else(|| self.read(f)))
            .collect::<Result<Vec<_>>>()?;
        let mut unreferenced: Vec<PathBuf> = early.into_keys().cloned().collect();
        unreferenced.sort();
        Ok(Reads {
            files,
            index: Some(index),
            headers,
            unreferenced,
        })
    }
}

/// With [`SymlinkPolicy::Inside`], refuse a file whose real location is outside the folder.
fn check_inside(folder: &Path, file: &Path) -> Result<()> {
    let real_folder = folder
        .canonicalize()
        .map_err(|e| ScanError::io(folder, e))?;
    let real_file = file.canonicalize().map_err(|e| ScanError::io(file, e))?;
    if real_file.starts_with(&real_folder) {
        Ok(())
    } else {
        Err(ScanError::PathEscape {
            path: file.to_path_buf(),
            name: file.to_string_lossy().into_owned(),
            reason: format!(
                "a symbolic link resolves to {}, outside {}",
                real_file.display(),
                real_folder.display()
            ),
        })
    }
}

/// Scan the adapter at `path` (a safetensors file, a folder, or a shard index).
pub fn scan(path: &Path, opts: &ScanOptions) -> Result<Scan> {
    let pending = Pending::new(path, opts)?;
    let done = read_plans(&[pending.plan()]).pop().unwrap_or_default();
    pending.finish(done)
}

/// A scan resolved to its files, waiting for their first reads (so that a check can read an
/// adapter's and a base's files in one parallel step).
pub(crate) struct Pending<'o> {
    path: PathBuf,
    sources: Sources,
    opts: &'o ScanOptions,
}

impl<'o> Pending<'o> {
    pub(crate) fn new(path: &Path, opts: &'o ScanOptions) -> Result<Self> {
        Ok(Self {
            path: path.to_path_buf(),
            sources: resolve(path, opts)?,
            opts,
        })
    }

    pub(crate) fn plan(&self) -> ReadPlan<'_> {
        self.sources.plan(self.opts)
    }

    /// The scan, from the reads of [`Pending::plan`].
    pub(crate) fn finish(self, done: Vec<Read>) -> Result<Scan> {
        let Self {
            path,
            mut sources,
            opts,
        } = self;
        let headers = sources.take_reads(done, opts)?;
        finish_scan(&path, sources, headers, opts)
    }
}

fn finish_scan(
    path: &Path,
    mut sources: Sources,
    headers: Vec<Header>,
    opts: &ScanOptions,
) -> Result<Scan> {
    if opts.limits.symlinks == SymlinkPolicy::Inside {
        if let Some(config) = &sources.config {
            check_inside(&sources.folder, config)?;
        }
    }
    let config = match &sources.config {
        Some(p) => {
            let bytes =
                read_small_file(p, &opts.limits, "adapter config").map_err(|e| match e {
                    ScanError::ShardIndex { path, message } => ScanError::Config {
                        path,
                        field: None,
                        message,
                    },
                    other => other,
                })?;
            Some(parse_config(p, &bytes)?)
        }
        None => None,
    };
    let mut problems = Vec::new();
    // The index is done with once checked: its text is freed before modules are inferred.
    let index_path = match sources.index.take() {
        Some((index_path, index)) => {
            check_index(&index_path, &index, &headers, &mut problems)?;
            Some(index_path)
        }
        None => None,
    };
    for other in &sources.others {
        problems.push(Problem::new(
            "unreferenced_shard",
            Severity::Warning,
            None,
            format!(
                "{} is in the folder but the shard index does not reference it",
                other.display()
            ),
        ));
    }

    let mut files = Vec::with_capacity(headers.len());
    let mut lists = Vec::with_capacity(headers.len());
    for h in headers {
        files.push(FileSummary {
            path: h.path.clone(),
            header_bytes: h.header_len,
            tensor_count: h.tensors.len(),
            data_bytes: h.data_bytes(),
            metadata: h.metadata.clone(),
        });
        lists.push((h.names, h.tensors));
    }
    let tensors = Tensors::new(lists);

    let mut views: Vec<TensorView<'_>> = Vec::with_capacity(tensors.len());
    views.extend(tensors.iter().map(|t| TensorView {
        name: t.name,
        dtype: t.dtype,
        shape: &t.info.shape,
    }));
    let mut inference = infer(
        &views,
        InferOptions {
            peft_target_parameters: config
                .as_ref()
                .is_some_and(|c| !c.target_parameters.is_empty()),
        },
    );
    if let Some(c) = config
        .as_ref()
        .filter(|c| c.schema == Schema::Peft && !c.target_parameters.is_empty())
    {
        let ranks = PeftRanks::new(c)?;
        let rank_for = |path: &str| ranks.rank(path);
        crate::fused::resolve(
            &mut inference.modules,
            &views,
            &c.target_parameters,
            &rank_for,
            &mut inference.problems,
        );
    }
    problems.extend(inference.problems);
    let non_adapter_names: Vec<&str> = inference
        .non_adapter
        .iter()
        .map(|&i| views[i].name)
        .collect();
    let verdict = judge(
        config.as_ref(),
        opts.config != ConfigSource::Skip,
        &inference.modules,
        &non_adapter_names,
        &inference.families,
        &mut problems,
    )?;
    problems.sort_by(|a, b| {
        a.severity.cmp(&b.severity).then_with(|| {
            natural_cmp(
                a.path.as_deref().unwrap_or(""),
                b.path.as_deref().unwrap_or(""),
            )
        })
    });
    drop(views);
    Ok(Scan {
        path: path.to_path_buf(),
        index_path,
        files,
        tensors,
        config,
        format: verdict.0,
        fine_tune_type: verdict.1,
        modules: inference.modules,
        non_adapter: inference.non_adapter,
        problems,
    })
}

pub(crate) fn check_index(
    index_path: &Path,
    index: &ShardIndex,
    headers: &[Header],
    problems: &mut Vec<Problem>,
) -> Result<()> {
    // headers[i] is the file of index.shards[i].
    // Fastest, for what writers produce: the index lists each shard's names in the file's order.
    if lists_in_file_order(index, headers) {
        return consistent_index(index_path, index, headers, problems);
    }
    // Fast path, in parallel per shard: the index lists for shard i exactly the names shard i holds
    // (names are unique within a file and within the index, so equal counts + inclusion suffice).
    let mut listed_in: Vec<Vec<&str>> = vec![Vec::new(); headers.len()];
    for (key, shard) in index.entries() {
        if let Some(v) = listed_in.get_mut(shard as usize) {
            v.push(key);
        }
    }
    let pairs: Vec<(&Header, &Vec<&str>)> = headers.iter().zip(&listed_in).collect();
    let parallel = index.len() >= crate::par::MIN_PARALLEL;
    let consistent = listed_in.len() == headers.len()
        && crate::par::map(&pairs, parallel, |&(h, keys)| {
            keys.len() == h.tensors.len()
                && (
                    // Writers usually list a shard's names in the index's order (both sorted,
                    // or both in insertion order): then no set is needed.
                    keys.iter().zip(h.iter()).all(|(k, t)| *k == t.name) || {
                        let mut names: foldhash::HashSet<&str> = h.iter().map(|t| t.name).collect();
                        keys.iter().all(|k| names.remove(k))
                    }
                )
        })
        .into_iter()
        .all(|ok| ok);
    drop(pairs);
    drop(listed_in);
    if consistent {
        return consistent_index(index_path, index, headers, problems);
    }
    index.check_unique(index_path)?;
    let total: usize = headers.iter().map(|h| h.tensors.len()).sum();
    let mut stored: foldhash::HashMap<&str, u32> = foldhash::HashMap::default();
    stored.reserve(total);
    let mut twice: Vec<(&str, u32, u32)> = Vec::new();
    for (i, h) in headers.iter().enumerate() {
        for t in h.iter() {
            if let Some(&first) = stored.get(t.name) {
                twice.push((t.name, first, i as u32));
            } else {
                stored.insert(t.name, i as u32);
            }
        }
    }
    let name_of = |i: u32| index.shards[i as usize].clone();
    let mut issues = Vec::new();
    let mut found = 0usize;
    for (key, shard) in index.entries() {
        let shard = &shard;
        match stored.get(key) {
            None => issues.push(ShardKeyIssue {
                key: key.to_string(),
                reason: format!(
                    "listed in the index under `{}`, but no shard holds it",
                    name_of(*shard)
                ),
            }),
            Some(&loc) => {
                found += 1;
                let elsewhere =
                    loc != *shard && !twice.iter().any(|(k, _, at)| *k == key && at == shard);
                if elsewhere {
                    issues.push(ShardKeyIssue {
                        key: key.to_string(),
                        reason: format!(
                            "listed in the index under `{}`, but stored in `{}`",
                            name_of(*shard),
                            name_of(loc)
                        ),
                    });
                }
            }
        }
    }
    for (key, first, again) in &twice {
        issues.push(ShardKeyIssue {
            key: (*key).to_string(),
            reason: format!(
                "stored in two shards: `{}` and `{}`",
                name_of(*first),
                name_of(*again)
            ),
        });
    }
    if found != stored.len() {
        // Some stored keys are not in the index: find them (the slow path, only on error).
        let listed: foldhash::HashSet<&str> = index.entries().map(|(k, _)| k).collect();
        let mut extra: Vec<(&str, u32)> = stored
            .iter()
            .filter(|(k, _)| !listed.contains(*k))
            .map(|(k, v)| (*k, *v))
            .collect();
        sort_natural(&mut extra, |e| e.0);
        for (key, loc) in extra {
            issues.push(ShardKeyIssue {
                key: key.to_string(),
                reason: format!("stored in `{}` but not listed in the index", name_of(loc)),
            });
        }
    }
    if !issues.is_empty() {
        return Err(ScanError::ShardMismatch {
            path: index_path.to_path_buf(),
            issues,
        });
    }
    check_total_size(index, headers, problems);
    Ok(())
}

/// The rest of [`check_index`] once each shard's list in the index is its file's names (unique
/// within a file): the index repeats a name exactly when two shards hold it. Sorted indexes repeat
/// none; otherwise compare hashes of the shards' names, and settle a match (a repeat, or a
/// collision) exactly.
fn consistent_index(
    index_path: &Path,
    index: &ShardIndex,
    headers: &[Header],
    problems: &mut Vec<Problem>,
) -> Result<()> {
    if !index.known_unique() && !disjoint_by_hash(headers) {
        index.check_unique(index_path)?;
    }
    check_total_size(index, headers, problems);
    Ok(())
}

/// Whether the index lists, for every shard, exactly its file's names in the file's order (shards
/// interleaved in any way). In parallel over runs of entries: each run's count per shard gives
/// the next run's starting place in every file.
fn lists_in_file_order(index: &ShardIndex, headers: &[Header]) -> bool {
    const RUN: usize = 8192;
    let total: usize = headers.iter().map(|h| h.tensors.len()).sum();
    if index.len() != total {
        return false;
    }
    let runs: Vec<std::ops::Range<usize>> = (0..total)
        .step_by(RUN)
        .map(|start| start..(start + RUN).min(total))
        .collect();
    let parallel = total >= crate::par::MIN_PARALLEL;
    let counts: Vec<Option<Vec<usize>>> = crate::par::map(&runs, parallel, |run| {
        let mut count = vec![0usize; headers.len()];
        for shard in index.shards_in(run.clone()) {
            *count.get_mut(shard as usize)? += 1;
        }
        Some(count)
    });
    let mut starts: Vec<Vec<usize>> = Vec::with_capacity(runs.len());
    let mut next = vec![0usize; headers.len()];
    for count in counts {
        let Some(count) = count else { return false };
        starts.push(next.clone());
        next.iter_mut().zip(count).for_each(|(n, c)| *n += c);
    }
    if next.iter().zip(headers).any(|(&n, h)| n != h.tensors.len()) {
        return false;
    }
    let runs: Vec<(std::ops::Range<usize>, Vec<usize>)> = runs.into_iter().zip(starts).collect();
    crate::par::map(&runs, parallel, |(run, start)| {
        let mut at = start.clone();
        index.entries_in(run.clone()).all(|(key, shard)| {
            let s = shard as usize;
            let h = &headers[s];
            let same = h.tensors.get(at[s]).is_some_and(|t| h.name(t) == key);
            at[s] += 1;
            same
        })
    })
    .into_iter()
    .all(|ok| ok)
}

/// Whether no name is in two files, by 64-bit name hashes (those the duplicate check kept, or
/// computed per file in parallel). `false` is a repeat or, rarely, a collision.
fn disjoint_by_hash(headers: &[Header]) -> bool {
    if headers.len() < 2 {
        return true;
    }
    let tensors: usize = headers.iter().map(|h| h.tensors.len()).sum();
    let computed: Vec<Vec<u64>> =
        crate::par::map(headers, tensors >= crate::par::MIN_PARALLEL, |h| {
            if h.name_hashes.len() == h.tensors.len() {
                Vec::new()
            } else {
                h.iter().map(|t| name_hash(t.name)).collect()
            }
        });
    let lists: Vec<&[u64]> = headers
        .iter()
        .zip(&computed)
        .map(|(h, c)| {
            if c.is_empty() {
                &h.name_hashes[..]
            } else {
                &c[..]
            }
        })
        .collect();
    let total: usize = lists.iter().map(|l| l.len()).sum();
    crate::header::all_distinct(lists.iter().flat_map(|l| l.iter().copied()), total)
}

fn check_total_size(index: &ShardIndex, headers: &[Header], problems: &mut Vec<Problem>) {
    if let Some(total) = index.total_size {
        let data: u64 = headers.iter().map(Header::data_bytes).sum();
        if total != data {
            problems.push(Problem::new(
                "index_total_size_mismatch",
                Severity::Warning,
                None,
                format!(
                    "the index's metadata.total_size is {total}, the shards hold {data} bytes of tensor data"
                ),
            ));
        }
    }
}

pub(crate) fn key_covers(key: &str, path: &str) -> bool {
    path == key
        || (path.len() > key.len()
            && path.ends_with(key)
            && path.as_bytes()[path.len() - key.len() - 1] == b'.')
}

struct Ctx<'a> {
    problems: &'a mut Vec<Problem>,
}

impl Ctx<'_> {
    fn error(&mut self, code: &'static str, path: Option<&str>, message: String) {
        self.problems
            .push(Problem::new(code, Severity::Error, path, message));
    }
    fn warn(&mut self, code: &'static str, path: Option<&str>, message: String) {
        self.problems
            .push(Problem::new(code, Severity::Warning, path, message));
    }
}

/// Decide the format and fine-tune type, and check the config against the tensors.
fn judge(
    config: Option<&AdapterConfig>,
    config_expected: bool,
    modules: &[Module],
    non_adapter: &[&str],
    families: &[Family],
    problems: &mut Vec<Problem>,
) -> Result<(Format, Option<&'static str>)> {
    let mut cx = Ctx { problems };
    let has_peft = families.iter().any(|f| f.is_peft());
    let has_mlx = families.iter().any(|f| !f.is_peft());
    let schema = config.map_or(Schema::Unknown, |c| c.schema);
    let format = match (has_peft, has_mlx) {
        (true, true) => {
            cx.error(
                "mixed_formats",
                None,
                "the adapter mixes PEFT names (lora_A/lora_B) with mlx names (lora_a/lora_b)"
                    .into(),
            );
            Format::Unknown
        }
        (true, false) => Format::Peft,
        (false, true) => Format::Mlx,
        (false, false) => match schema {
            Schema::Peft => Format::Peft,
            Schema::Mlx | Schema::MlxLegacy | Schema::MlxVlmLegacy => Format::Mlx,
            Schema::Unknown => Format::Unknown,
        },
    };
    if (schema == Schema::Peft && has_mlx && !has_peft)
        || (matches!(schema, Schema::Mlx | Schema::MlxLegacy) && has_peft && !has_mlx)
    {
        cx.error(
            "mixed_formats",
            None,
            format!(
                "the config follows the {} schema but the tensors use {} names",
                schema.name(),
                if has_peft { "PEFT" } else { "mlx" }
            ),
        );
    }

    let any_dora = modules.iter().any(|m| m.variant == Variant::Dora);
    let inferred = if !modules.is_empty() {
        Some(if any_dora { "dora" } else { "lora" })
    } else if !non_adapter.is_empty() {
        Some("full")
    } else {
        None
    };
    let declared_raw: Option<String> = config.and_then(|c| match c.schema {
        Schema::Mlx => c.fine_tune_type.clone(),
        Schema::MlxLegacy | Schema::Peft => c
            .use_dora
            .map(|d| if d { "dora" } else { "lora" }.into())
            .or_else(|| (c.schema == Schema::Peft).then(|| "lora".to_string())),
        Schema::MlxVlmLegacy => Some("lora".into()),
        Schema::Unknown => c.fine_tune_type.clone(),
    });
    let declared: Option<&'static str> = match declared_raw.as_deref() {
        Some("lora") => Some("lora"),
        Some("dora") => Some("dora"),
        Some("full") => Some("full"),
        Some(other) => {
            cx.warn(
                "fine_tune_type_unknown",
                None,
                format!("fine_tune_type `{other}` is not lora, dora or full; mlx-lm silently treats it as lora"),
            );
            None
        }
        None => None,
    };
    // What a loader will do: the declared type, or mlx-lm's default of lora for its schema.
    let effective = declared.or(match schema {
        Schema::Mlx | Schema::MlxLegacy | Schema::MlxVlmLegacy | Schema::Peft
            if config.is_some() =>
        {
            Some("lora")
        }
        _ => inferred,
    });
    let fine_tune_type = declared.or(inferred);

    if config.is_none() && config_expected {
        cx.warn(
            "config_missing",
            None,
            format!("no {CONFIG_NAME}: the scale is unknown and mlx-lm's load_adapters cannot load the adapter"),
        );
    }
    match effective {
        Some("full") if !modules.is_empty() => cx.error(
            "fine_tune_type_mismatch",
            None,
            format!("fine_tune_type is full but the adapter holds {} LoRA modules", modules.len()),
        ),
        Some("lora" | "dora") if modules.is_empty() && !non_adapter.is_empty() => cx.error(
            "fine_tune_type_mismatch",
            None,
            format!(
                "the config declares {} but the adapter holds no LoRA factors, only {} other tensors",
                effective.unwrap_or(""),
                non_adapter.len()
            ),
        ),
        _ => {}
    }
    if effective == Some("dora") {
        for m in modules
            .iter()
            .filter(|m| m.variant == Variant::Lora && m.kind != Kind::Switch)
        {
            cx.error(
                "dora_magnitude_missing",
                Some(&m.path),
                "fine_tune_type is dora but the module has no magnitude `m`; a loader would use the base norm silently".into(),
            );
        }
    } else if effective == Some("lora") {
        for m in modules.iter().filter(|m| m.variant == Variant::Dora) {
            cx.error(
                "dora_magnitude_unexpected",
                Some(&m.path),
                "the module has a DoRA magnitude but the config declares lora".into(),
            );
        }
    }

    check_non_adapter(config, modules, non_adapter, effective, &mut cx);

    let mut dtypes: Vec<&str> = modules.iter().map(|m| m.dtype).collect();
    dtypes.sort_unstable();
    dtypes.dedup();
    if dtypes.len() > 1 {
        cx.warn(
            "mixed_dtypes",
            None,
            format!("modules have different dtypes: {}", dtypes.join(", ")),
        );
    }

    if let Some(c) = config {
        if effective != Some("full") {
            match c.schema {
                Schema::Mlx | Schema::MlxLegacy | Schema::MlxVlmLegacy | Schema::Unknown => {
                    check_mlx_config(c, modules, &mut cx);
                }
                Schema::Peft => check_peft_config(c, modules, &mut cx)?,
            }
        }
    }
    Ok((format, fine_tune_type))
}

fn check_non_adapter(
    config: Option<&AdapterConfig>,
    modules: &[Module],
    non_adapter: &[&str],
    effective: Option<&str>,
    cx: &mut Ctx<'_>,
) {
    if effective == Some("full") {
        return;
    }
    if modules.is_empty() && config.is_none() {
        if !non_adapter.is_empty() {
            cx.warn(
                "no_adapter_tensors",
                None,
                format!(
                    "none of the {} tensors is a LoRA factor: this looks like a full checkpoint, not an adapter",
                    non_adapter.len()
                ),
            );
        }
        return;
    }
    let embeddings: HashSet<&str> = modules
        .iter()
        .filter(|m| m.kind == Kind::Embedding)
        .map(|m| m.path.as_str())
        .collect();
    let to_save: &[String] = config.map_or(&[], |c| &c.modules_to_save);
    let declared: HashSet<&str> = config
        .map(|c| c.full_tensors.iter().map(String::as_str).collect())
        .unwrap_or_default();
    let present: HashSet<&str> = non_adapter.iter().copied().collect();
    for name in &declared {
        if !present.contains(name) {
            cx.error(
                "full_tensor_missing",
                Some(name),
                format!(
                    "the config declares the full tensor `{name}` but the adapter does not hold it"
                ),
            );
        }
    }
    for name in non_adapter {
        if declared.contains(name) {
            continue;
        }
        let stripped = name.strip_prefix(PEFT_PREFIX).unwrap_or(name);
        let module = stripped.rsplit_once('.').map_or("", |(m, _)| m);
        if let Some(base) = stripped.strip_suffix(".base_layer.weight") {
            if embeddings.contains(base) {
                cx.warn(
                    "peft_base_layer_saved",
                    Some(stripped),
                    "PEFT saved the full embedding next to its LoRA factors (it does so when an embedding is targeted); an mlx adapter cannot hold it".into(),
                );
                continue;
            }
        }
        if stripped.ends_with(".trainable_tokens_delta") {
            cx.warn(
                "peft_trainable_tokens",
                Some(stripped),
                "PEFT trainable_token_indices deltas cannot be represented as an mlx LoRA adapter"
                    .into(),
            );
            continue;
        }
        if to_save.iter().any(|s| key_covers(s, module)) {
            cx.warn(
                "peft_modules_to_save",
                Some(stripped),
                "a full weight from PEFT modules_to_save; an mlx LoRA adapter cannot hold it"
                    .into(),
            );
            continue;
        }
        cx.error(
            "non_adapter_tensor",
            Some(stripped),
            format!("`{name}` is not a LoRA parameter (lora_a/lora_b/m or PEFT lora_A/lora_B); a loader would overwrite a base weight or refuse the adapter"),
        );
    }
}

fn check_rank(cx: &mut Ctx<'_>, m: &Module, expected: u64, source: &str) {
    if let Some(r) = m.rank {
        if r != expected {
            cx.error(
                "config_rank_mismatch",
                Some(&m.path),
                format!("the tensors have rank {r}, {source} says {expected}"),
            );
        }
    }
}

fn check_mlx_config(c: &AdapterConfig, modules: &[Module], cx: &mut Ctx<'_>) {
    match c.schema {
        Schema::MlxLegacy => cx.warn(
            "legacy_config",
            None,
            "pre-0.19 mlx-lm config (`lora_layers`/`use_dora`, no `num_layers`/`fine_tune_type`): current mlx-lm fails on it with AttributeError".into(),
        ),
        Schema::MlxVlmLegacy => cx.warn(
            "legacy_config",
            None,
            "mlx-vlm < 0.6 config: its `alpha` was the scale itself up to mlx-vlm 0.4.4 and alpha/rank from 0.5.0, so the intended scale is ambiguous".into(),
        ),
        Schema::Unknown => cx.warn(
            "config_unrecognised",
            None,
            format!("{CONFIG_NAME} follows no known schema (no lora_parameters, num_layers, fine_tune_type, peft_type)"),
        ),
        _ => {}
    }
    if modules.is_empty() {
        return;
    }
    let vlm = c.schema == Schema::MlxVlmLegacy;
    if !vlm {
        if !c.has_lora_parameters {
            cx.error(
                "config_field_missing",
                None,
                "no `lora_parameters`: mlx-lm's load_adapters fails with AttributeError".into(),
            );
        }
        if c.num_layers.is_none() {
            cx.error(
                "config_field_missing",
                None,
                "no `num_layers`: mlx-lm's load_adapters fails with AttributeError".into(),
            );
        }
        if c.has_lora_parameters && c.rank.is_none() {
            cx.error(
                "config_field_missing",
                None,
                "no `lora_parameters.rank`: mlx-lm's load_adapters fails with KeyError".into(),
            );
        }
        if c.has_lora_parameters && c.dropout.is_none() {
            cx.error(
                "config_field_missing",
                None,
                "no `lora_parameters.dropout`: mlx-lm's load_adapters fails with KeyError".into(),
            );
        }
        if c.scale.is_none() {
            if c.alpha.is_some() {
                cx.error(
                    "config_alpha_instead_of_scale",
                    None,
                    "the config gives `alpha` but no `scale`: mlx-lm applies `scale` directly (scale = alpha / rank in PEFT terms) and refuses a config without it".into(),
                );
            } else if c.has_lora_parameters || c.top_scale.is_none() {
                cx.error(
                    "config_scale_missing",
                    None,
                    "no `lora_parameters.scale`: the adapter's strength is unknown".into(),
                );
            }
        }
    }
    if let (Some(a), Some(b)) = (c.rank, c.top_rank) {
        if a != b {
            cx.error(
                "config_rank_conflict",
                None,
                format!("top-level rank {b} contradicts lora_parameters.rank {a}"),
            );
        }
    }
    if let (Some(a), Some(b)) = (c.scale, c.top_scale) {
        if (a - b).abs() > f64::EPSILON * a.abs().max(1.0) {
            cx.error(
                "config_rank_conflict",
                None,
                format!("top-level scale {b} contradicts lora_parameters.scale {a}"),
            );
        }
    }
    if let Some(d) = c.dropout {
        if !(0.0..1.0).contains(&d) {
            cx.error(
                "config_value_invalid",
                None,
                format!("dropout {d} is not a probability in [0, 1)"),
            );
        }
    }
    if c.rank == Some(0) {
        cx.error("config_value_invalid", None, "rank 0 in the config".into());
    }

    // Ranks: per-module entries win, then the global rank.
    let per_module: HashMap<&str, u64> = c
        .module_ranks
        .iter()
        .map(|(k, v)| (k.as_str(), *v))
        .collect();
    let global = c.rank.or(c.top_rank);
    for m in modules {
        if let Some(&r) = per_module.get(m.path.as_str()) {
            check_rank(cx, m, r, "the config's per-module rank");
        } else if let Some(r) = global {
            check_rank(cx, m, r, "the config");
        }
    }

    // Which modules the config says are adapted.
    if let (Some(keys), Some(paths)) = (&c.keys, &c.module_paths) {
        let a: HashSet<&String> = keys.iter().collect();
        let b: HashSet<&String> = paths.iter().collect();
        if a != b {
            cx.warn(
                "config_paths_conflict",
                None,
                "lora_parameters.keys and unsloth_mlx_lora_module_paths list different modules; loaders disagree on which wins".into(),
            );
        }
    }
    let listed = c.keys.as_ref().or(c.module_paths.as_ref());
    match listed {
        Some(keys) if keys.is_empty() => cx.error(
            "config_keys_empty",
            None,
            format!("the config lists no modules (`keys: []`) but the adapter holds {} LoRA modules; it cannot be reloaded", modules.len()),
        ),
        Some(keys) => {
            for k in keys {
                if !modules.iter().any(|m| key_covers(k, &m.path)) {
                    cx.error(
                        "config_key_unsaved",
                        Some(k),
                        format!("the config names `{k}` but the adapter has no tensors for it; a loader would add a zero-effect wrapper (or nothing at all)"),
                    );
                }
            }
            for m in modules {
                if !keys.iter().any(|k| key_covers(k, &m.path)) {
                    cx.error(
                        "module_not_in_keys",
                        Some(&m.path),
                        "the adapter saves this module but the config's keys do not name it; loaders refuse or drop its tensors".into(),
                    );
                }
            }
        }
        None if !vlm => {
            for m in modules.iter().filter(|m| layer_index(&m.path).is_none()) {
                cx.error(
                    "module_not_in_keys",
                    Some(&m.path),
                    "the module is outside the numbered layers and the config has no `keys`; mlx-lm only wraps modules inside the layers and refuses its tensors".into(),
                );
            }
            cx.warn(
                "config_keys_missing",
                None,
                "no lora_parameters.keys: mlx-lm wraps every Linear, SwitchLinear and Embedding of the last num_layers blocks, including modules the adapter has no tensors for".into(),
            );
        }
        None => {}
    }

    // num_layers: relative keys and default keys only reach the last N blocks.
    let full_paths =
        listed.is_some_and(|keys| keys.iter().all(|k| modules.iter().any(|m| m.path == *k)));
    if let (Some(n), false) = (c.num_layers, full_paths) {
        let layers: HashSet<u64> = modules
            .iter()
            .filter_map(|m| layer_index(&m.path))
            .collect();
        if n > 0 && layers.len() as u64 > n.unsigned_abs() {
            let mut sorted: Vec<u64> = layers.into_iter().collect();
            sorted.sort_unstable();
            cx.error(
                "config_num_layers_mismatch",
                None,
                format!(
                    "num_layers is {n} but the adapter has tensors in {} layers ({}); a loader wraps only the last {n}",
                    sorted.len(),
                    compress_ranges(&sorted)
                ),
            );
        }
    }
}

/// A per-expert target name in the grouped form modules use (`x.experts.3.w1` -> `x.experts.w1`).
fn grouped(target: &str) -> String {
    let mut out = String::new();
    if crate::lora::expert_split_into(target, &mut out).is_some() {
        out
    } else {
        target.to_string()
    }
}

fn check_peft_config(c: &AdapterConfig, modules: &[Module], cx: &mut Ctx<'_>) -> Result<()> {
    if modules.is_empty() {
        return Ok(());
    }
    if c.peft_r.is_none() {
        cx.error(
            "config_field_missing",
            None,
            "no `r` in the PEFT config".into(),
        );
    }
    if c.peft_alpha.is_none() {
        cx.warn(
            "config_scale_missing",
            None,
            "no `lora_alpha` in the PEFT config: peft would use its default of 8".into(),
        );
    }
    let ranks = PeftRanks::new(c)?;
    for (k, _) in &c.alpha_pattern {
        peft_pattern(&c.path, "alpha_pattern", k)?;
    }
    let target_regex = match &c.target_modules {
        Some(TargetModules::Regex(r)) => Some(regex::Regex::new(&format!("^(?:{r})$")).map_err(
            |e| ScanError::Config {
                path: c.path.clone(),
                field: Some("target_modules".into()),
                message: format!("`target_modules` is not a valid regular expression: {e}"),
            },
        )?),
        _ => None,
    };
    for m in modules {
        if m.layout == "peft_param_wrapper" {
            continue;
        }
        let expected = ranks.rank(&m.path);
        if let Some(r) = expected {
            check_rank(cx, m, r, "the PEFT config (r / rank_pattern)");
        }
        let targeted = match (&c.target_modules, &target_regex) {
            (Some(TargetModules::Names(names)), _) => names
                .iter()
                .any(|t| key_covers(t, &m.path) || key_covers(&grouped(t), &m.path)),
            (_, Some(re)) => re.is_match(&m.path) || m.kind == Kind::Switch,
            _ => true,
        };
        if !targeted {
            cx.error(
                "module_not_targeted",
                Some(&m.path),
                "the adapter saves this module but PEFT target_modules does not name it".into(),
            );
        }
        if let (Some(allowed), Some(layer)) = (&c.layers_to_transform, layer_index(&m.path)) {
            if !allowed.contains(&layer) {
                cx.error(
                    "module_outside_layers",
                    Some(&m.path),
                    format!("layer {layer} is not in layers_to_transform"),
                );
            }
        }
    }
    if let Some(TargetModules::Names(names)) = &c.target_modules {
        for t in names {
            let g = grouped(t);
            if !modules
                .iter()
                .any(|m| key_covers(t, &m.path) || key_covers(&g, &m.path))
            {
                cx.warn(
                    "target_unmatched",
                    Some(t),
                    format!("PEFT target_modules names `{t}` but no saved module matches it"),
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::tests::tensors_file;

    #[test]
    fn layer_split_borrows_both_sides() {
        assert_eq!(
            layer_split("model.layers.3.mlp.up"),
            Some(("model.layers", 3, "mlp.up"))
        );
        assert_eq!(layer_split("layers.10"), Some(("layers", 10, "")));
        assert_eq!(
            layer_split("transformer.h.0.attn.c_attn"),
            Some(("transformer.h", 0, "attn.c_attn"))
        );
        // The first number after a container: a later one is part of the rest.
        assert_eq!(
            layer_split("model.layers.x.blocks.2.layers.5.q"),
            Some(("model.layers.x.blocks", 2, "layers.5.q"))
        );
        assert_eq!(layer_split("model.layers.mlp"), None);
        assert_eq!(layer_split("layers"), None);
        assert_eq!(layer_split("3.layers"), None);
        assert_eq!(layer_index("model.layers.07.mlp"), Some(7));
        assert_eq!(layer_index("model.embed_tokens"), None);
    }

    fn write_st(dir: &Path, name: &str, tensors: &[(&str, &str, &[u64])]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, tensors_file(tensors)).unwrap();
        p
    }

    fn codes(s: &Scan) -> Vec<&'static str> {
        s.problems.iter().map(|p| p.code).collect()
    }

    const PAIR: &[(&str, &str, &[u64])] = &[
        ("model.layers.0.self_attn.q_proj.lora_a", "F32", &[16, 4]),
        ("model.layers.0.self_attn.q_proj.lora_b", "F32", &[4, 16]),
        ("model.layers.1.self_attn.q_proj.lora_a", "F32", &[16, 4]),
        ("model.layers.1.self_attn.q_proj.lora_b", "F32", &[4, 16]),
    ];

    #[test]
    fn clean_mlx_folder() {
        let dir = tempfile::tempdir().unwrap();
        write_st(dir.path(), "adapters.safetensors", PAIR);
        std::fs::write(dir.path().join(CONFIG_NAME), r#"{"fine_tune_type":"lora","num_layers":2,"lora_parameters":{"rank":4,"scale":20.0,"dropout":0.0,"keys":["self_attn.q_proj"]}}"#).unwrap();
        let s = scan(dir.path(), &ScanOptions::default()).unwrap();
        assert_eq!(codes(&s), Vec::<&str>::new());
        assert_eq!(s.format, Format::Mlx);
        assert_eq!(s.fine_tune_type, Some("lora"));
        assert_eq!(s.modules.len(), 2);
        let groups = s.module_groups();
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].template, "model.layers.*.self_attn.q_proj");
        assert_eq!(groups[0].layers, vec![0, 1]);
        let json: serde_json::Value = serde_json::from_str(&s.to_json(false)).unwrap();
        assert_eq!(json["modules"][0]["rank"], 4);
        assert_eq!(json["config"]["num_layers"], 2);
    }

    #[test]
    fn config_cross_checks() {
        let dir = tempfile::tempdir().unwrap();
        write_st(dir.path(), "adapters.safetensors", PAIR);
        let cfg = dir.path().join(CONFIG_NAME);
        let run = |text: &str| {
            std::fs::write(&cfg, text).unwrap();
            let s = scan(dir.path(), &ScanOptions::default()).unwrap();
            codes(&s)
        };
        assert_eq!(
            run(
                r#"{"fine_tune_type":"dora","num_layers":2,"lora_parameters":{"rank":4,"scale":1.0,"dropout":0.0,"keys":["self_attn.q_proj"]}}"#
            ),
            vec!["dora_magnitude_missing", "dora_magnitude_missing"]
        );
        assert_eq!(
            run(
                r#"{"fine_tune_type":"lora","num_layers":2,"lora_parameters":{"rank":8,"scale":1.0,"dropout":0.0,"keys":["self_attn.q_proj"]}}"#
            ),
            vec!["config_rank_mismatch", "config_rank_mismatch"]
        );
        assert_eq!(
            run(
                r#"{"fine_tune_type":"lora","num_layers":2,"lora_parameters":{"rank":4,"alpha":16,"dropout":0.0,"keys":["self_attn.q_proj"]}}"#
            ),
            vec!["config_alpha_instead_of_scale"]
        );
        assert_eq!(
            run(
                r#"{"fine_tune_type":"lora","num_layers":1,"lora_parameters":{"rank":4,"scale":1.0,"dropout":0.0,"keys":["self_attn.q_proj","auto"]}}"#
            ),
            vec!["config_num_layers_mismatch", "config_key_unsaved"]
        );
        assert_eq!(
            run(
                r#"{"fine_tune_type":"lora","num_layers":2,"lora_parameters":{"rank":4,"scale":1.0,"dropout":0.0,"keys":[]}}"#
            ),
            vec!["config_keys_empty"]
        );
        assert_eq!(
            run(r#"{"fine_tune_type":"full","num_layers":2}"#),
            vec!["fine_tune_type_mismatch"]
        );
        assert_eq!(
            run(
                r#"{"fine_tune_type":"qlora","num_layers":2,"rank":16,"lora_parameters":{"rank":4,"scale":1.0,"dropout":0.0}}"#
            ),
            vec![
                "config_rank_conflict",
                "fine_tune_type_unknown",
                "config_keys_missing"
            ]
        );
        assert_eq!(
            run(
                r#"{"lora_layers":2,"use_dora":false,"lora_parameters":{"rank":4,"scale":1.0,"dropout":0.0}}"#
            ),
            vec!["legacy_config", "config_keys_missing"]
        );
        std::fs::write(&cfg, r#"{"num_layers":"x"}"#).unwrap();
        assert_eq!(
            scan(dir.path(), &ScanOptions::default())
                .unwrap_err()
                .code(),
            "invalid_config"
        );
    }

    #[test]
    fn sharded_folder_and_index_checks() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write_st(
            d,
            "adapter_model-00001-of-00002.safetensors",
            &[("base_model.model.x.lora_A.weight", "F32", &[4, 8])],
        );
        write_st(
            d,
            "adapter_model-00002-of-00002.safetensors",
            &[("base_model.model.x.lora_B.weight", "F32", &[8, 4])],
        );
        let index = d.join("adapter_model.safetensors.index.json");
        std::fs::write(&index, r#"{"metadata":{"total_size":256},"weight_map":{"base_model.model.x.lora_A.weight":"adapter_model-00001-of-00002.safetensors","base_model.model.x.lora_B.weight":"adapter_model-00002-of-00002.safetensors"}}"#).unwrap();
        let opts = ScanOptions {
            config: ConfigSource::Skip,
            ..ScanOptions::default()
        };
        let s = scan(d, &opts).unwrap();
        assert_eq!(s.files.len(), 2);
        assert_eq!(s.format, Format::Peft);
        assert_eq!(s.modules[0].rank, Some(4));
        assert!(codes(&s).is_empty(), "{:?}", s.problems);
        // Wrong shard, missing key, escape.
        std::fs::write(&index, r#"{"weight_map":{"base_model.model.x.lora_A.weight":"adapter_model-00002-of-00002.safetensors","base_model.model.x.lora_B.weight":"adapter_model-00002-of-00002.safetensors","ghost":"adapter_model-00002-of-00002.safetensors"}}"#).unwrap();
        let err = scan(d, &opts).unwrap_err();
        assert_eq!(err.code(), "shard_mismatch");
        assert_eq!(err.details().len(), 2, "{:?}", err.details());
        std::fs::write(&index, r#"{"weight_map":{"a":"../x.safetensors"}}"#).unwrap();
        assert_eq!(scan(d, &opts).unwrap_err().code(), "path_escape");
    }

    #[test]
    fn folder_resolution() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        assert_eq!(
            scan(d, &ScanOptions::default()).unwrap_err().code(),
            "no_adapter"
        );
        write_st(d, "one.safetensors", PAIR);
        write_st(d, "two.safetensors", PAIR);
        assert_eq!(
            scan(d, &ScanOptions::default()).unwrap_err().code(),
            "no_adapter"
        );
        write_st(d, "adapters.safetensors", PAIR);
        write_st(d, "0000100_adapters.safetensors", PAIR);
        write_st(d, ".adapters.tmp.safetensors", PAIR);
        let s = scan(d, &ScanOptions::default()).unwrap();
        assert!(s.files[0].path.ends_with("adapters.safetensors"));
        assert!(codes(&s).contains(&"config_missing"));
    }

    fn header_of(names: &[String]) -> Header {
        let tensors: Vec<(&str, &str, &[u64])> = names
            .iter()
            .map(|n| (n.as_str(), "F32", &[1u64][..]))
            .collect();
        let bytes = tensors_file(&tensors);
        crate::header::parse_header(
            Path::new("x"),
            &bytes[8..bytes.len() - 4 * names.len()],
            bytes.len() as u64,
            &Limits::default(),
        )
        .unwrap()
    }

    proptest::proptest! {
        /// The in-order path answers exactly when each shard's entries follow its file's order,
        /// and the index is accepted either way (the sets of names are the same).
        #[test]
        fn index_in_file_order_whatever_the_interleaving(
            shard_of in proptest::collection::vec(0usize..4, 1..40),
            file_seed in proptest::prelude::any::<u64>(),
            pick in proptest::collection::vec(0usize..4, 0..200),
            swap in proptest::option::of((proptest::prelude::any::<proptest::sample::Index>(), proptest::prelude::any::<proptest::sample::Index>())),
        ) {
            let shards = shard_of.iter().max().unwrap() + 1;
            // Each file's names, in an order that depends on the seed.
            let mut files: Vec<Vec<String>> = vec![Vec::new(); shards];
            for (i, &s) in shard_of.iter().enumerate() {
                files[s].push(format!("t{i}"));
            }
            for (s, f) in files.iter_mut().enumerate() {
                f.sort_by_key(|n| name_hash(n) ^ file_seed ^ s as u64);
            }
            // The index: shards interleaved as `pick` says, each in its file's order.
            let mut next = vec![0usize; shards];
            let mut entries: Vec<(String, usize)> = Vec::new();
            let mut picks = pick.iter().copied().chain(0..shards).cycle();
            while entries.len() < shard_of.len() {
                let s = picks.next().unwrap() % shards;
                if next[s] < files[s].len() {
                    entries.push((files[s][next[s]].clone(), s));
                    next[s] += 1;
                } else if let Some(s) = (0..shards).find(|&s| next[s] < files[s].len()) {
                    entries.push((files[s][next[s]].clone(), s));
                    next[s] += 1;
                }
            }
            if let Some((a, b)) = swap {
                let (a, b) = (a.index(entries.len()), b.index(entries.len()));
                entries.swap(a, b);
            }
            let in_order = (0..shards).all(|s| {
                entries.iter().filter(|e| e.1 == s).map(|e| e.0.as_str()).eq(files[s].iter().map(String::as_str))
            });
            let map: Vec<String> = entries
                .iter()
                .map(|(n, s)| format!("\"{n}\":\"s{s}.safetensors\""))
                .collect();
            let text = format!("{{\"weight_map\":{{{}}}}}", map.join(","));
            let index = crate::index::parse_index(Path::new("i"), text.as_bytes()).unwrap();
            // headers[i] is the file of the index's i-th shard name (first appearance).
            let by_id: Vec<Header> = index
                .shard_names()
                .iter()
                .map(|n| {
                    let s: usize = n[1..n.len() - ".safetensors".len()].parse().unwrap();
                    header_of(&files[s])
                })
                .collect();
            proptest::prop_assert_eq!(lists_in_file_order(&index, &by_id), in_order);
            proptest::prop_assert!(check_index(Path::new("i"), &index, &by_id, &mut Vec::new()).is_ok());
        }
    }
}
