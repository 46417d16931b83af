//! What a base model offers to an adapter: its adaptable modules and their true dims, read from
//! `config.json` and safetensors headers only.
//!
//! Supported layouts: what mlx-lm's convert/save writes (stacked `switch_mlp` experts, quantized
//! `weight`/`scales`/`biases` with `quantization` in the config, per-module overrides), and Hugging
//! Face checkpoints (dense; per-expert MoE keys `mlp.experts.{e}.X` and Mixtral's
//! `block_sparse_moe.experts.{e}.w1/w3/w2`, stacked here the way mlx-lm's `sanitize` stacks them).
//!
//! May use: `error`, `par`, `naming`, `read`, `infer` (module kinds), `rules::index`, `problem`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{Result, ScanError};
use crate::infer::Kind;
use crate::naming::experts::{stacked_path, RecentExperts};
use crate::naming::natural::sort_natural;
use crate::naming::paths::{keeps_expert_lists, layer_split, looks_like_embedding, never_wrapped};
use crate::problem::{Code, Problem, Severity};
use crate::read::dtype::unpacked_width;
use crate::read::header::Header;
use crate::read::open::{read_small_file, Limits, SmallFile};
use crate::read::plan::{read_plans, Read, ReadPlan};
use crate::read::table::Tensors;
use crate::rules::index::check_index;

/// One module of the base an adapter may target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Its dotted path in the MLX model.
    pub path: String,
    /// Linear, switch (stacked experts) or embedding.
    pub kind: Kind,
    /// True input features (unpacked for quantized weights); vocabulary size for embeddings.
    pub in_dims: Option<u64>,
    /// Output features; embedding width for embeddings.
    pub out_dims: Option<u64>,
    /// Experts, for switch modules.
    pub num_experts: Option<u64>,
}

/// The expected side of a check.
#[derive(Debug, Clone, Default)]
pub struct Expected {
    /// Where it came from (a folder, or `live model`).
    pub source: String,
    /// Adaptable modules, in natural path order.
    pub targets: Vec<Target>,
    /// Every parameter with its stored shape (for full fine-tunes), when known.
    pub params: Tensors,
    /// Findings about the base itself.
    pub problems: Vec<Problem>,
}

impl Expected {
    /// The parameters by name (built when a full fine-tune or declared full tensors need it).
    pub fn param_shapes(&self) -> foldhash::HashMap<&str, &[u64]> {
        self.params
            .iter()
            .map(|t| (t.name, t.info.shape.as_slice()))
            .collect()
    }

    /// The path of the layer list and the number of layers in it: (`model.layers`, 32).
    pub fn layers(&self) -> Option<(&str, u64)> {
        let mut counts: HashMap<&str, u64> = HashMap::new();
        for t in &self.targets {
            if let Some((prefix, i, _)) = layer_split(&t.path) {
                if prefix
                    .split('.')
                    .any(|p| p.contains("vision") || p.contains("visual"))
                {
                    continue;
                }
                let e = counts.entry(prefix).or_default();
                *e = (*e).max(i + 1);
            }
        }
        counts
            .into_iter()
            .max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(a.0)))
    }
}

/// Quantization settings from `config.json`.
#[derive(Debug, Clone, Default)]
struct Quantization {
    bits: Option<u64>,
    overrides: HashMap<String, Option<u64>>,
}

fn read_quantization(path: &Path, config: &Value) -> Result<Option<Quantization>> {
    let q = config
        .get("quantization")
        .or_else(|| config.get("quantization_config"));
    let Some(q) = q.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let Value::Object(map) = q else {
        return Err(ScanError::Config {
            path: path.to_path_buf(),
            field: Some("quantization".into()),
            message: "`quantization` must be an object".into(),
        });
    };
    let mut out = Quantization {
        bits: map.get("bits").and_then(Value::as_u64),
        ..Quantization::default()
    };
    for (k, v) in map {
        match v {
            Value::Object(o) => {
                out.overrides.insert(
                    k.clone(),
                    o.get("bits").and_then(Value::as_u64).or(out.bits),
                );
            }
            Value::Bool(false) => {
                out.overrides.insert(k.clone(), None);
            }
            _ => {}
        }
    }
    Ok(Some(out))
}

/// A base folder resolved to its files (and its quantization read), waiting for their first
/// reads: the shard index when there is one (checked against the headers), and every
/// `.safetensors` file.
pub(crate) struct PendingBase<'l> {
    folder: PathBuf,
    index: Option<PathBuf>,
    files: Vec<PathBuf>,
    quant: Option<Quantization>,
    /// `model_type` of `config.json`.
    model_type: Option<String>,
    limits: &'l Limits,
}

impl<'l> PendingBase<'l> {
    pub(crate) fn new(folder: &Path, limits: &'l Limits) -> Result<Self> {
        let config_path = folder.join("config.json");
        let config: Value = if std::fs::symlink_metadata(&config_path).is_ok() {
            if limits.symlinks == crate::read::open::SymlinkPolicy::Inside {
                crate::read::open::check_inside(folder, &config_path)?;
            }
            let bytes = read_small_file(&config_path, limits, SmallFile::ModelConfig)?;
            serde_json::from_slice(&bytes).map_err(|e| ScanError::Config {
                path: config_path.clone(),
                field: None,
                message: format!("not valid JSON: {e}"),
            })?
        } else {
            Value::Null
        };
        let quant = read_quantization(&config_path, &config)?;
        let model_type = config
            .get("model_type")
            .and_then(Value::as_str)
            .map(str::to_string);
        let mut indexes = Vec::new();
        let mut files = Vec::new();
        for entry in std::fs::read_dir(folder).map_err(|e| ScanError::io(folder, e))? {
            let entry = entry.map_err(|e| ScanError::io(folder, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            if name.ends_with(".safetensors.index.json") {
                indexes.push(name);
            } else if name.ends_with(".safetensors") {
                files.push(folder.join(name));
            }
        }
        indexes.sort();
        files.sort();
        let index = indexes
            .iter()
            .find(|n| n.as_str() == "model.safetensors.index.json")
            .or(indexes.first())
            .map(|name| folder.join(name));
        if index.is_none() && files.is_empty() {
            return Err(ScanError::NoAdapter {
                path: folder.to_path_buf(),
                message: "the base model folder has no .safetensors weights".into(),
            });
        }
        Ok(Self {
            folder: folder.to_path_buf(),
            index,
            files,
            quant,
            model_type,
            limits,
        })
    }

    pub(crate) fn plan(&self) -> ReadPlan<'_> {
        ReadPlan {
            index: self.index.as_deref(),
            files: &self.files,
            folder: &self.folder,
            limits: self.limits,
            confine: false,
        }
    }

    /// The table of modules, from the reads of [`PendingBase::plan`].
    pub(crate) fn finish(self, done: Vec<Read>) -> Result<Expected> {
        let reads = self.plan().finish(done)?;
        let mut problems = Vec::new();
        if let (Some(index_path), Some(index)) = (&self.index, &reads.index) {
            check_index(index_path, index, &reads.headers, &mut problems)?;
        }
        let headers = reads.headers;
        problems.push(Problem::new(
            Code::BaseStructureFromHeaders,
            Severity::Warning,
            None,
            "the base's modules were read from its safetensors headers, not built with mlx-lm's \
             classes (as asked, or MLX is not installed, or mlx-lm cannot build this model from \
             config.json): a weight mlx-lm never wraps may be taken for a module it wraps"
                .into(),
        ));
        let mut expected = build_targets(
            &headers,
            self.quant.as_ref(),
            self.model_type.as_deref(),
            &mut problems,
        );
        expected.source = self.folder.to_string_lossy().into_owned();
        expected.problems = problems;
        // Moved, not copied: most checks never look at them.
        expected.params = Tensors::new(headers.into_iter().map(|h| (h.names, h.tensors)).collect());
        Ok(expected)
    }
}

/// Read a base model folder into the table of modules an adapter may target.
pub fn read_base(folder: &Path, limits: &Limits) -> Result<Expected> {
    let pending = PendingBase::new(folder, limits)?;
    let done = read_plans(&[pending.plan()]).pop().unwrap_or_default();
    pending.finish(done)
}

/// One expert's weight of a per-expert checkpoint: shape, quantized, full module path.
type ExpertWeight<'a> = ([u64; 2], bool, &'a str);

/// What one file's weights give: plain targets, expert weights by grouped path, and quantized
/// weights whose bits are unknown.
#[derive(Default)]
struct Partial<'a> {
    targets: Vec<Target>,
    experts: Experts<'a>,
    unknown_bits: Vec<String>,
    /// Stacked expert weights with more than [`MAX_EXPERTS`] experts: (path, count).
    implausible: Vec<(&'a str, u64)>,
}

/// The most experts one module may have (models have up to a few hundred). An expert count comes
/// from a shape or a name, and a check lists every expert's names, so a base claiming more is
/// reported instead of used.
pub const MAX_EXPERTS: u64 = 1 << 20;

/// Expert weights by grouped path, in the order the files list them.
type Experts<'a> =
    indexmap::IndexMap<String, Vec<(u64, ExpertWeight<'a>)>, foldhash::fast::RandomState>;

/// A per-expert module stacked the way mlx-lm's `sanitize` stacks it.
enum Stacked<'a> {
    /// More experts than [`MAX_EXPERTS`]: left out.
    Implausible(u64),
    Module {
        target: Target,
        /// `(stored, count)` when experts are missing or of different shapes.
        inconsistent: Option<(u64, u64)>,
        /// The weight whose bits are unknown, when quantized without them.
        bits_unknown: Option<&'a str>,
    },
}

/// Stack one module's expert weights (`None` when it has none): the lowest expert's weight stands
/// for the module, the count is one past the highest, and every expert below it must be there with
/// the same shape. No sort (names list the experts as text, 0, 1, 10, 100, ...): the experts are
/// counted in a bitmap. `unpack` gives a quantized weight's true input width (`None`: its bits
/// are unknown).
fn stack_experts<'a>(
    grouped: &str,
    by_expert: &[(u64, ExpertWeight<'a>)],
    unpack: impl Fn(&str, u64, bool) -> Option<u64>,
) -> Option<Stacked<'a>> {
    let mut low = (u64::MAX, None);
    let mut high = 0u64;
    for (e, weight) in by_expert {
        if *e < low.0 {
            low = (*e, Some(weight));
        }
        high = high.max(*e);
    }
    let &(shape, quantized, first) = low.1?;
    let count = high.saturating_add(1);
    if count > MAX_EXPERTS {
        return Some(Stacked::Implausible(count));
    }
    let mut seen = vec![0u64; count.div_ceil(64) as usize];
    let mut same_shape = true;
    for (e, (s, _, _)) in by_expert {
        seen[(e / 64) as usize] |= 1 << (e % 64);
        same_shape &= *s == shape;
    }
    let stored: u64 = seen.iter().map(|w| u64::from(w.count_ones())).sum();
    let in_dims = unpack(first, shape[1], quantized);
    Some(Stacked::Module {
        target: Target {
            path: stacked_path(grouped),
            kind: Kind::Switch,
            in_dims,
            out_dims: Some(shape[0]),
            num_experts: Some(count),
        },
        inconsistent: (stored != count || !same_shape).then_some((stored, count)),
        bits_unknown: (quantized && in_dims.is_none()).then_some(first),
    })
}

fn build_targets(
    headers: &[Header],
    quant: Option<&Quantization>,
    model_type: Option<&str>,
    problems: &mut Vec<Problem>,
) -> Expected {
    let total: usize = headers.iter().map(|h| h.tensors.len()).sum();
    let parallel = headers.len() > 1 && total >= crate::par::MIN_PARALLEL;
    let scales = quantized_paths(headers, parallel);
    let widths = Widths { quant, model_type };
    // Each file's weights on their own (in parallel for big bases), then merged in file order.
    let parts = crate::par::map(headers, parallel, |h| read_part(h, &scales, &widths));
    let mut merged = Merged::default();
    // In file order, so the targets come nearly sorted.
    let mut experts: Experts<'_> = Experts::default();
    for part in parts {
        merged.targets.extend(part.targets);
        merged.unknown_bits.extend(part.unknown_bits);
        merged.implausible.extend(
            part.implausible
                .into_iter()
                .map(|(p, n)| (p.to_string(), n)),
        );
        for (grouped, weights) in part.experts {
            // Moved when one file has all of a module's experts (the usual case).
            match experts.entry(grouped) {
                indexmap::map::Entry::Vacant(v) => {
                    v.insert(weights);
                }
                indexmap::map::Entry::Occupied(mut o) => o.get_mut().extend(weights),
            }
        }
    }
    merged.add_stacked(experts, parallel, &widths, problems);
    merged.report(problems);
    let mut targets = merged.targets;
    sort_natural(&mut targets, |t| t.path.as_str());
    Expected {
        source: String::new(),
        targets,
        params: Tensors::default(),
        problems: Vec::new(),
    }
}

/// Quantized weights, by their `scales` (which may lie in another file than the weight).
fn quantized_paths(headers: &[Header], parallel: bool) -> foldhash::HashSet<&str> {
    crate::par::map(headers, parallel, |h| {
        h.iter()
            .filter_map(|t| t.name.strip_suffix(".scales"))
            .collect::<Vec<_>>()
    })
    .into_iter()
    .flatten()
    .collect()
}

/// What the base's config says of its weights: true widths (a quantized weight's last axis
/// unpacked with its bits) and the model type (for the weights mlx-lm never wraps).
struct Widths<'q> {
    quant: Option<&'q Quantization>,
    model_type: Option<&'q str>,
}

impl Widths<'_> {
    fn bits_for(&self, path: &str) -> Option<u64> {
        let q = self.quant?;
        match q.overrides.get(path) {
            Some(b) => *b,
            None => q.bits,
        }
    }

    /// The last axis of a weight: packed 32-bit words x 32 / bits when quantized (`None`: the
    /// bits are unknown).
    fn unpack(&self, path: &str, cols: u64, quantized: bool) -> Option<u64> {
        if !quantized {
            return Some(cols);
        }
        self.bits_for(path).and_then(|b| unpacked_width(cols, b))
    }

    /// As [`Widths::unpack`], noting a weight whose bits are unknown.
    fn unpack_or_note(
        &self,
        path: &str,
        cols: u64,
        quantized: bool,
        unknown: &mut Vec<String>,
    ) -> Option<u64> {
        let out = self.unpack(path, cols, quantized);
        if out.is_none() {
            unknown.push(path.to_string());
        }
        out
    }
}

/// One file's weights: plain and stacked targets, per-expert weights grouped by path.
fn read_part<'h>(
    h: &'h Header,
    scales: &foldhash::HashSet<&str>,
    widths: &Widths<'_>,
) -> Partial<'h> {
    let mut part = Partial::default();
    let mut scratch = String::new();
    let mut recent = RecentExperts::default();
    let stack = !keeps_expert_lists(widths.model_type);
    for t in h.iter() {
        let Some(path) = t.name.strip_suffix(".weight") else {
            continue;
        };
        let shape = t.info.shape.as_slice();
        let quantized = !scales.is_empty() && scales.contains(path);
        if shape.len() == 2 && stack {
            // The expert's projections come in turn (gate, up, down, gate, ...): a path that
            // splits as a recent one did joins its group with no search or hash.
            let found = recent.group(path, &mut scratch, |key| {
                match part.experts.get_index_of(key) {
                    Some(i) => i,
                    None => part.experts.insert_full(key.to_string(), Vec::new()).0,
                }
            });
            if let Some((index, e)) = found {
                part.experts[index].push((e, ([shape[0], shape[1]], quantized, path)));
                continue;
            }
        }
        // After the per-expert weights (never one of these): a few string tests per module.
        if never_wrapped(widths.model_type, path) {
            continue;
        }
        match shape.len() {
            2 => {
                let embedding = looks_like_embedding(path);
                let cols = widths.unpack_or_note(path, shape[1], quantized, &mut part.unknown_bits);
                let (in_dims, out_dims) = if embedding {
                    (Some(shape[0]), cols)
                } else {
                    (cols, Some(shape[0]))
                };
                part.targets.push(Target {
                    path: path.to_string(),
                    kind: if embedding {
                        Kind::Embedding
                    } else {
                        Kind::Linear
                    },
                    in_dims,
                    out_dims,
                    num_experts: None,
                });
            }
            3 if shape[0] > MAX_EXPERTS => part.implausible.push((path, shape[0])),
            3 => part.targets.push(Target {
                path: path.to_string(),
                kind: Kind::Switch,
                in_dims: widths.unpack_or_note(path, shape[2], quantized, &mut part.unknown_bits),
                out_dims: Some(shape[1]),
                num_experts: Some(shape[0]),
            }),
            _ => {}
        }
    }
    part
}

/// Every file's part put together.
#[derive(Default)]
struct Merged {
    targets: Vec<Target>,
    unknown_bits: Vec<String>,
    implausible: Vec<(String, u64)>,
}

impl Merged {
    /// Stack each per-expert module (in parallel) and add it, in file order.
    fn add_stacked(
        &mut self,
        experts: Experts<'_>,
        parallel: bool,
        widths: &Widths<'_>,
        problems: &mut Vec<Problem>,
    ) {
        let experts: Vec<_> = experts.into_iter().collect();
        let stacked = crate::par::map(&experts, parallel, |(grouped, by_expert)| {
            stack_experts(grouped, by_expert, |p, c, q| widths.unpack(p, c, q))
        });
        for ((grouped, _), s) in experts.iter().zip(stacked) {
            let Some(s) = s else { continue };
            match s {
                Stacked::Implausible(count) => self.implausible.push((grouped.clone(), count)),
                Stacked::Module {
                    target,
                    inconsistent,
                    bits_unknown,
                } => {
                    if let Some((stored, count)) = inconsistent {
                        problems.push(Problem::new(
                            Code::BaseExpertsInconsistent,
                            Severity::Warning,
                            Some(grouped.as_str()),
                            format!(
                                "the base stores {stored} of {count} experts, or experts of \
                                 different shapes"
                            ),
                        ));
                    }
                    self.unknown_bits.extend(bits_unknown.map(str::to_string));
                    self.targets.push(target);
                }
            }
        }
    }

    /// Quantized weights of unknown bits, and modules of implausibly many experts.
    fn report(&mut self, problems: &mut Vec<Problem>) {
        if !self.unknown_bits.is_empty() {
            problems.push(Problem::new(
                Code::BaseQuantizationUnknown,
                Severity::Error,
                None,
                format!(
                    "{} quantized weights (with `scales`) but config.json gives no bits for them, so \
                     their true input width is unknown: {}",
                    self.unknown_bits.len(),
                    self.unknown_bits
                        .iter()
                        .take(5)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        sort_natural(&mut self.implausible, |x| x.0.as_str());
        for (path, count) in &self.implausible {
            problems.push(Problem::new(
                Code::BaseExpertsImplausible,
                Severity::Error,
                Some(path.as_str()),
                format!(
                    "the base gives this module {count} experts, over the limit of {MAX_EXPERTS}: \
                     it is left out of the check"
                ),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::naming::experts::per_expert_path;
    use crate::read::header::parse_header;
    use crate::read::header::tests::tensors_file;

    fn header(tensors: &[(&str, &str, &[u64])]) -> Header {
        let bytes = tensors_file(tensors);
        let n = usize::try_from(u64::from_le_bytes(bytes[..8].try_into().unwrap())).unwrap();
        parse_header(
            Path::new("m.safetensors"),
            &bytes[8..8 + n],
            bytes.len() as u64,
            &Limits::default(),
        )
        .unwrap()
    }

    #[test]
    fn names_of_stacked_experts() {
        assert_eq!(
            stacked_path("model.layers.0.mlp.experts.up_proj"),
            "model.layers.0.mlp.switch_mlp.up_proj"
        );
        assert_eq!(
            stacked_path("model.layers.0.block_sparse_moe.experts.w3"),
            "model.layers.0.block_sparse_moe.switch_mlp.up_proj"
        );
        assert_eq!(
            stacked_path("model.layers.0.self_attn.q_proj"),
            "model.layers.0.self_attn.q_proj"
        );
        assert_eq!(stacked_path("x.myexperts.w1"), "x.myexperts.w1");
        assert_eq!(
            per_expert_path("model.layers.0.block_sparse_moe.switch_mlp.up_proj", 3),
            "model.layers.0.block_sparse_moe.experts.3.w3"
        );
        assert_eq!(
            per_expert_path("model.layers.0.mlp.switch_mlp.down_proj", 1),
            "model.layers.0.mlp.experts.1.down_proj"
        );
    }

    #[test]
    fn quantized_and_per_expert_bases() {
        let h = header(&[
            ("model.embed_tokens.weight", "U32", &[100, 8]),
            ("model.embed_tokens.scales", "F16", &[100, 1]),
            ("model.embed_tokens.biases", "F16", &[100, 1]),
            ("model.layers.0.self_attn.q_proj.weight", "U32", &[64, 8]),
            ("model.layers.0.self_attn.q_proj.scales", "F16", &[64, 1]),
            ("model.layers.0.mlp.gate.weight", "U32", &[4, 16]),
            ("model.layers.0.mlp.gate.scales", "F16", &[4, 1]),
            (
                "model.layers.0.mlp.experts.0.up_proj.weight",
                "BF16",
                &[32, 64],
            ),
            (
                "model.layers.0.mlp.experts.1.up_proj.weight",
                "BF16",
                &[32, 64],
            ),
            ("model.layers.0.input_layernorm.weight", "BF16", &[64]),
            ("lm_head.weight", "BF16", &[100, 64]),
        ]);
        let q = Quantization {
            bits: Some(4),
            overrides: HashMap::from([("model.layers.0.mlp.gate".to_string(), Some(8))]),
        };
        let mut problems = Vec::new();
        let e = build_targets(&[h], Some(&q), None, &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        let by: HashMap<_, _> = e.targets.iter().map(|t| (t.path.as_str(), t)).collect();
        assert_eq!(
            (
                by["model.embed_tokens"].kind,
                by["model.embed_tokens"].in_dims,
                by["model.embed_tokens"].out_dims
            ),
            (Kind::Embedding, Some(100), Some(64))
        );
        assert_eq!(by["model.layers.0.self_attn.q_proj"].in_dims, Some(64));
        assert_eq!(by["model.layers.0.mlp.gate"].in_dims, Some(64));
        let up = by["model.layers.0.mlp.switch_mlp.up_proj"];
        assert_eq!(
            (up.kind, up.num_experts, up.in_dims, up.out_dims),
            (Kind::Switch, Some(2), Some(64), Some(32))
        );
        assert_eq!(by["lm_head"].kind, Kind::Linear);
        assert!(!by.contains_key("model.layers.0.input_layernorm"));
        assert_eq!(e.targets.len(), 5);
        let mut problems = Vec::new();
        let h = header(&[("a.weight", "U32", &[4, 4]), ("a.scales", "F16", &[4, 1])]);
        let e = build_targets(&[h], None, None, &mut problems);
        assert_eq!(e.targets[0].in_dims, None);
        assert_eq!(problems[0].code, "base_quantization_unknown");
    }

    #[test]
    fn quantized_experts_unpacked_with_scales_in_any_file() {
        // Per-expert quantized weights whose scales lie in the other file.
        let weights = header(&[
            ("m.experts.0.up_proj.weight", "U32", &[16, 4]),
            ("m.experts.1.up_proj.weight", "U32", &[16, 4]),
        ]);
        let scales = header(&[
            ("m.experts.0.up_proj.scales", "F16", &[16, 1]),
            ("m.experts.1.up_proj.scales", "F16", &[16, 1]),
        ]);
        let q = Quantization {
            bits: Some(4),
            ..Quantization::default()
        };
        let mut problems = Vec::new();
        let e = build_targets(
            &[weights.clone(), scales.clone()],
            Some(&q),
            None,
            &mut problems,
        );
        assert!(problems.is_empty(), "{problems:?}");
        let t = &e.targets[0];
        assert_eq!(t.path, "m.switch_mlp.up_proj");
        assert_eq!(
            (t.kind, t.num_experts, t.in_dims, t.out_dims),
            (Kind::Switch, Some(2), Some(32), Some(16))
        );
        // Without bits: the stacked module's width is unknown, and its lowest expert is named.
        let mut problems = Vec::new();
        let e = build_targets(&[scales, weights], None, None, &mut problems);
        assert_eq!(e.targets[0].in_dims, None);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].code, "base_quantization_unknown");
        assert!(problems[0].message.ends_with(": m.experts.0.up_proj"));
    }

    #[test]
    fn expert_groups_in_turn_whatever_their_number() {
        // Two layers' projections listed expert by expert: six groups in turn, more than the
        // recently used ones that are compared first; each gets its own experts and dims.
        let mut names = Vec::new();
        for e in 0..5u64 {
            for layer in 0..2 {
                for (p, rows) in [("gate_proj", 16u64), ("up_proj", 24), ("down_proj", 8)] {
                    names.push((
                        format!("model.layers.{layer}.mlp.experts.{e}.{p}.weight"),
                        [rows + layer, 8],
                    ));
                }
            }
        }
        let spec: Vec<(&str, &str, &[u64])> = names
            .iter()
            .map(|(n, s)| (n.as_str(), "BF16", &s[..]))
            .collect();
        let mut problems = Vec::new();
        let e = build_targets(&[header(&spec)], None, None, &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        let got: Vec<(&str, Option<u64>, Option<u64>)> = e
            .targets
            .iter()
            .map(|t| (t.path.as_str(), t.num_experts, t.out_dims))
            .collect();
        let mut want = Vec::new();
        for layer in 0..2 {
            for (p, rows) in [("down_proj", 8u64), ("gate_proj", 16), ("up_proj", 24)] {
                want.push((
                    format!("model.layers.{layer}.mlp.switch_mlp.{p}"),
                    rows + layer,
                ));
            }
        }
        let want: Vec<(&str, Option<u64>, Option<u64>)> = want
            .iter()
            .map(|(p, o)| (p.as_str(), Some(5), Some(*o)))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn layer_list_is_found() {
        let e = Expected {
            targets: [
                "model.layers.0.q",
                "model.layers.11.q",
                "vision_tower.blocks.30.q",
                "lm_head",
            ]
            .iter()
            .map(|p| Target {
                path: (*p).into(),
                kind: Kind::Linear,
                in_dims: None,
                out_dims: None,
                num_experts: None,
            })
            .collect(),
            ..Expected::default()
        };
        assert_eq!(e.layers(), Some(("model.layers", 12)));
    }

    #[test]
    fn read_from_headers_the_weights_mlx_lm_never_wraps_are_no_targets() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(
            d.join("model.safetensors"),
            tensors_file(&[
                ("model.layers.0.mlp.gate.weight", "F32", &[4, 64]),
                ("model.layers.0.mlp.gate_proj.weight", "F32", &[96, 64]),
                (
                    "model.layers.0.linear_attn.conv1d.weight",
                    "F32",
                    &[128, 4, 1],
                ),
                (
                    "model.layers.0.self_attn.embed_q.weight",
                    "F32",
                    &[4, 16, 8],
                ),
            ]),
        )
        .unwrap();
        let paths = |model_type: &str| {
            std::fs::write(
                d.join("config.json"),
                format!(r#"{{"model_type":"{model_type}"}}"#),
            )
            .unwrap();
            let e = read_base(d, &Limits::default()).unwrap();
            assert_eq!(e.problems[0].code, Code::BaseStructureFromHeaders);
            e.targets.into_iter().map(|t| t.path).collect::<Vec<_>>()
        };
        // deepseek_v3's router is a MoEGate; the convolution and MLA's MultiLinear never are.
        assert_eq!(paths("deepseek_v3"), vec!["model.layers.0.mlp.gate_proj"]);
        // Qwen3-MoE's router is an nn.Linear.
        assert_eq!(
            paths("qwen3_moe"),
            vec!["model.layers.0.mlp.gate", "model.layers.0.mlp.gate_proj"]
        );
    }
}
