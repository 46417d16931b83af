//! Will this adapter fit this model? The diff of saved tensors against the expected ones.
//!
//! The expected side comes from a base folder's headers ([`crate::base::read_base`]) or from a
//! live model's table handed over by the Python layer. Everything is keyed by module path in one
//! hash map, so the diff is linear in the number of tensors.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde::Serialize;

use crate::base::{Expected, PendingBase, Target};
use crate::config::{AdapterConfig, PeftRanks, Schema, TargetModules};
use crate::error::Result;
use crate::infer::module::Place;
use crate::infer::{Kind, Module, Variant};
use crate::naming::experts::{per_expert_path, stacked_path};
use crate::naming::layout::Layout;
use crate::naming::leaves::{Family, Leaf, Slot, PEFT_PREFIX};
use crate::naming::paths::{key_covers, layer_split};
use crate::problem::{Code, Problem, Severity};
use crate::read::open::Limits;
use crate::read::plan::read_plans;
use crate::read::table::Shape;
use crate::scan::{Format, Scan, ScanOptions};

/// A saved tensor whose shape is not the one the model needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShapeMismatch {
    /// The tensor name as saved.
    pub key: String,
    /// Its saved shape.
    pub saved: Vec<u64>,
    /// The shape the model (and the config's rank) needs.
    pub expected: Vec<u64>,
}

/// The result of a check.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// No missing, unexpected or mis-shaped tensor, and no problem of severity error.
    pub ok: bool,
    /// Tensors promised (by the config or by their pair) but absent.
    pub missing: Vec<String>,
    /// Saved LoRA tensors with no module of the model to go to.
    pub unexpected: Vec<String>,
    /// Saved tensors of the wrong shape.
    pub shape_mismatch: Vec<ShapeMismatch>,
    /// Problems of the adapter, of the base, and of the pair.
    pub problems: Vec<Problem>,
}

impl Report {
    /// The report as the documented JSON object.
    pub fn to_json(&self, pretty: bool) -> String {
        let out = if pretty {
            serde_json::to_string_pretty(self)
        } else {
            serde_json::to_string(self)
        };
        out.unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }
}

/// Per-module rank the config promises.
struct Ranks {
    per_module: HashMap<String, u64>,
    peft: Option<PeftRanks>,
    global: Option<u64>,
}

impl Ranks {
    fn new(config: Option<&AdapterConfig>) -> Result<Self> {
        let Some(c) = config else {
            return Ok(Self {
                per_module: HashMap::new(),
                peft: None,
                global: None,
            });
        };
        Ok(Self {
            per_module: c.module_ranks.iter().cloned().collect(),
            peft: (c.schema == Schema::Peft)
                .then(|| PeftRanks::new(c))
                .transpose()?,
            global: if c.schema == Schema::Peft {
                c.peft_r
            } else {
                c.rank.or(c.top_rank)
            },
        })
    }

    fn for_module(&self, path: &str) -> Option<u64> {
        self.per_module
            .get(path)
            .copied()
            .or_else(|| self.peft.as_ref()?.from_pattern(path))
            .or(self.global)
    }
}

/// The shape a factor must have, in the naming family it was saved under.
fn expected_shape(
    family: Family,
    leaf: Leaf,
    slot: Slot,
    layout: Layout,
    t: &Target,
    r: u64,
) -> Option<Shape> {
    let i = t.in_dims?;
    let o = t.out_dims?;
    let switch = t.kind == Kind::Switch;
    let e = t.num_experts.unwrap_or(1);
    Some(match (family, leaf) {
        (Family::Mlx | Family::MlxVlmLegacy, Leaf::A) if switch => {
            if layout == Layout::MlxSwitchLegacy {
                smallvec::smallvec![e.saturating_mul(r), i]
            } else {
                smallvec::smallvec![e, r, i]
            }
        }
        (Family::Mlx | Family::MlxVlmLegacy, Leaf::B) if switch => smallvec::smallvec![e, o, r],
        (Family::Mlx | Family::MlxVlmLegacy | Family::MlxFused, Leaf::A) => {
            smallvec::smallvec![i, r]
        }
        (Family::Mlx | Family::MlxVlmLegacy, Leaf::B) => smallvec::smallvec![r, o],
        (Family::Mlx, Leaf::M) if t.kind == Kind::Embedding => smallvec::smallvec![i],
        (Family::Mlx | Family::Peft | Family::PeftEmbedding, Leaf::M) => smallvec::smallvec![o],
        (Family::MlxLayer, Leaf::A) => smallvec::smallvec![r, i],
        (Family::MlxLayer, Leaf::B) => smallvec::smallvec![o, r],
        (Family::Peft | Family::PeftEmbedding, Leaf::A)
            if switch && !matches!(slot, Slot::Expert(_)) =>
        {
            return None; // target_parameters wrappers: checked separately.
        }
        (Family::Peft | Family::PeftEmbedding, Leaf::A) => smallvec::smallvec![r, i],
        (Family::Peft | Family::PeftEmbedding, Leaf::B)
            if switch && !matches!(slot, Slot::Expert(_)) =>
        {
            return None;
        }
        (Family::Peft | Family::PeftEmbedding, Leaf::B) => smallvec::smallvec![o, r],
        _ => return None,
    })
}

/// The rank axis of a saved factor, to compare the other axes when no rank is known.
fn saved_rank(family: Family, leaf: Leaf, shape: &[u64]) -> Option<u64> {
    let n = shape.len();
    match (family, leaf) {
        (Family::Mlx | Family::MlxVlmLegacy | Family::MlxFused, Leaf::A) if n == 3 => {
            Some(shape[1])
        }
        (Family::Mlx | Family::MlxVlmLegacy | Family::MlxFused, Leaf::A) if n == 2 => {
            Some(shape[1])
        }
        (Family::Mlx | Family::MlxVlmLegacy, Leaf::B) if n == 3 => Some(shape[2]),
        (Family::Mlx | Family::MlxVlmLegacy | Family::MlxFused, Leaf::B) if n == 2 => {
            Some(shape[0])
        }
        (Family::MlxLayer | Family::Peft | Family::PeftEmbedding, Leaf::A) if n == 2 => {
            Some(shape[0])
        }
        (Family::MlxLayer | Family::Peft | Family::PeftEmbedding, Leaf::B) if n == 2 => {
            Some(shape[1])
        }
        _ => None,
    }
}

/// Tensor names for a module the adapter should have saved, in the adapter's own naming.
fn names_for(path: &str, t: &Target, format_peft: bool, dora: bool) -> Vec<String> {
    let mut out = Vec::new();
    if format_peft {
        let emb = t.kind == Kind::Embedding;
        let (a, b) = if emb {
            ("lora_embedding_A", "lora_embedding_B")
        } else {
            ("lora_A.weight", "lora_B.weight")
        };
        if t.kind == Kind::Switch {
            for e in 0..t.num_experts.unwrap_or(0) {
                let p = per_expert_path(&t.path, e);
                out.push(format!("{PEFT_PREFIX}{p}.{a}"));
                out.push(format!("{PEFT_PREFIX}{p}.{b}"));
            }
        } else {
            out.push(format!("{PEFT_PREFIX}{path}.{a}"));
            out.push(format!("{PEFT_PREFIX}{path}.{b}"));
            if dora {
                out.push(format!("{PEFT_PREFIX}{path}.lora_magnitude_vector"));
            }
        }
    } else {
        out.push(format!("{path}.lora_a"));
        out.push(format!("{path}.lora_b"));
        if dora && t.kind != Kind::Switch {
            out.push(format!("{path}.m"));
        }
    }
    out
}

/// The name of the other factor of a pair.
fn partner(key: &str) -> Option<String> {
    const SWAPS: &[(&str, &str)] = &[
        (".lora_a", ".lora_b"),
        (".lora_a.weight", ".lora_b.weight"),
        (".lora_A.weight", ".lora_B.weight"),
        (".lora_embedding_A", ".lora_embedding_B"),
        (".A", ".B"),
    ];
    for (a, b) in SWAPS {
        if let Some(stem) = key.strip_suffix(a) {
            return Some(format!("{stem}{b}"));
        }
        if let Some(stem) = key.strip_suffix(b) {
            return Some(format!("{stem}{a}"));
        }
    }
    None
}

/// Which base modules the config says are adapted.
fn promised<'e>(scan: &Scan, expected: &'e Expected) -> Vec<&'e Target> {
    let Some(c) = scan.config.as_ref() else {
        return Vec::new();
    };
    if scan.fine_tune_type == Some("full") {
        return Vec::new();
    }
    match c.schema {
        Schema::Mlx | Schema::MlxLegacy => {
            let layers = expected.layers();
            let selected = |t: &'e Target| -> Option<&'e str> {
                let (prefix, count) = layers?;
                let (p, i, rest) = layer_split(&t.path)?;
                if p != prefix {
                    return None;
                }
                let n = c.num_layers.unwrap_or(0);
                let first = if n <= 0 || n.unsigned_abs() >= count {
                    0
                } else {
                    count - n.unsigned_abs()
                };
                (i >= first).then_some(rest)
            };
            let keys: Option<HashSet<&str>> = c
                .keys
                .as_ref()
                .or(c.module_paths.as_ref())
                .map(|k| k.iter().map(String::as_str).collect());
            expected
                .targets
                .iter()
                .filter(|t| match &keys {
                    Some(keys) => {
                        keys.contains(t.path.as_str())
                            || selected(t).is_some_and(|rel| keys.contains(rel))
                    }
                    None => selected(t).is_some(),
                })
                .collect()
        }
        Schema::Peft => {
            let regex = match &c.target_modules {
                Some(TargetModules::Regex(r)) if r != "all-linear" => {
                    regex::Regex::new(&format!("^(?:{r})$")).ok()
                }
                _ => None,
            };
            expected
                .targets
                .iter()
                .filter(|t| {
                    // A stacked module is also named by its experts' paths (made only if needed).
                    let alt = std::cell::OnceCell::new();
                    let alt = || alt.get_or_init(|| per_expert_path(&t.path, 0)).as_str();
                    let named = match &c.target_modules {
                        Some(TargetModules::Names(names)) => {
                            names.iter().any(|n| key_covers(n, &t.path))
                                || names.iter().any(|n| key_covers(n, alt()))
                        }
                        Some(TargetModules::Regex(r)) if r == "all-linear" => {
                            t.kind != Kind::Embedding && t.path != "lm_head"
                        }
                        Some(TargetModules::Regex(_)) => regex
                            .as_ref()
                            .is_some_and(|re| re.is_match(&t.path) || re.is_match(alt())),
                        None => false,
                    } || fused_key(&t.path)
                        .is_some_and(|key| c.target_parameters.iter().any(|p| key_covers(p, &key)));
                    let in_layers = c.layers_to_transform.as_ref().is_none_or(|allowed| {
                        layer_split(&t.path).is_some_and(|(_, i, _)| allowed.contains(&i))
                    });
                    named && in_layers
                })
                .collect()
        }
        _ => Vec::new(),
    }
}

const PREFIXES: &[&str] = &[
    "language_model.model.",
    "language_model.",
    "model.",
    PEFT_PREFIX,
];

/// Look for one path prefix that, stripped or added, would make unmatched modules fit.
fn prefix_hint(
    unmatched: &[&Module],
    lookup: &foldhash::HashMap<String, &Target>,
) -> Option<Problem> {
    if unmatched.is_empty() {
        return None;
    }
    let mut best: Option<(usize, String)> = None;
    for p in PREFIXES {
        let stripped = unmatched
            .iter()
            .filter(|m| {
                m.path
                    .strip_prefix(p)
                    .is_some_and(|rest| lookup.contains_key(&stacked_path(rest)))
            })
            .count();
        let added = unmatched
            .iter()
            .filter(|m| lookup.contains_key(&stacked_path(&format!("{p}{}", m.path))))
            .count();
        for (hits, text) in [
            (
                stripped,
                format!("they start with `{p}`, which the model's paths do not: strip it"),
            ),
            (
                added,
                format!("the model's paths start with `{p}`, which the adapter's do not: add it"),
            ),
        ] {
            if hits > 0 && best.as_ref().is_none_or(|(h, _)| hits > *h) {
                best = Some((hits, text));
            }
        }
    }
    let (hits, text) = best?;
    (hits * 2 >= unmatched.len()).then(|| {
        Problem::new(
            Code::PrefixMismatch,
            Severity::Error,
            None,
            format!(
                "{hits} of the {} saved modules that match nothing in the model would match if \
                 the prefix were fixed: {text} (e.g. a language-model adapter for a VLM, or the \
                 reverse)",
                unmatched.len()
            ),
        )
    })
}

/// The model's stacked modules that a `target_parameters` wrapper adapts:
/// `X.experts.gate_up_proj` -> `X.switch_mlp.gate_proj` and `X.switch_mlp.up_proj` (its output is
/// theirs, stacked), `X.experts.P` -> `X.switch_mlp.P`.
fn fused_targets<'e>(
    path: &str,
    lookup: &foldhash::HashMap<String, &'e Target>,
) -> Option<Vec<&'e Target>> {
    // transformers 5 calls Mixtral's `block_sparse_moe` `mlp`; mlx-lm keeps the old name.
    let find = |p: String| {
        lookup.get(&p).copied().or_else(|| {
            let mixtral = p.replacen(".mlp.switch_mlp.", ".block_sparse_moe.switch_mlp.", 1);
            lookup.get(&mixtral).copied()
        })
    };
    if let Some(base) = path.strip_suffix(".gate_up_proj") {
        let gate = find(stacked_path(&format!("{base}.gate_proj")))?;
        let up = find(stacked_path(&format!("{base}.up_proj")))?;
        Some(vec![gate, up])
    } else {
        Some(vec![find(stacked_path(path))?])
    }
}

/// Compare a `target_parameters` wrapper's folded factors with the stacked modules it adapts:
/// `lora_A` `(E * r, in)`, `lora_B` `(out, r * E)` (gate and up stacked: twice the output).
fn check_fused(
    scan: &Scan,
    m: &Module,
    targets: &[&Target],
    mismatches: &mut Vec<ShapeMismatch>,
    problems: &mut Vec<Problem>,
) {
    let t = targets[0];
    let same = targets.iter().all(|x| {
        x.kind == Kind::Switch
            && (x.in_dims, x.out_dims, x.num_experts) == (t.in_dims, t.out_dims, t.num_experts)
    });
    let (Some(r), Some(e), Some(i), Some(o), true) =
        (m.rank, t.num_experts, t.in_dims, t.out_dims, same)
    else {
        problems.push(Problem::new(
            Code::NotChecked,
            Severity::Warning,
            Some(&m.path),
            "target_parameters factors are not checked against the base: the rank or the \
             model's expert layout is unknown"
                .into(),
        ));
        return;
    };
    let out = o.saturating_mul(targets.len() as u64);
    for &id in &m.tensor_ids {
        let tensor = scan.tensors.get(id as usize);
        let want = if tensor.name.ends_with(".lora_A.weight") {
            vec![e.saturating_mul(r), i]
        } else if tensor.name.ends_with(".lora_B.weight") {
            vec![out, r.saturating_mul(e)]
        } else {
            continue;
        };
        if tensor.shape.as_slice() != want.as_slice() {
            mismatches.push(ShapeMismatch {
                key: tensor.name.to_string(),
                saved: tensor.shape.to_vec(),
                expected: want,
            });
        }
    }
}

/// The fused-parameter key peft's `target_parameters` would name for a stacked module.
fn fused_key(path: &str) -> Option<String> {
    let (head, last) = path.rsplit_once('.')?;
    let prefix = head.strip_suffix("switch_mlp")?;
    let param = match last {
        "gate_proj" | "up_proj" => "gate_up_proj",
        "down_proj" => "down_proj",
        _ => return None,
    };
    Some(format!("{prefix}experts.{param}"))
}

/// What one module's check finds.
#[derive(Default)]
struct Findings<'s> {
    unmatched: bool,
    covered: Vec<&'s str>,
    missing: Vec<String>,
    unexpected: Vec<String>,
    mismatches: Vec<ShapeMismatch>,
    problems: Vec<Problem>,
}

/// What every module's check reads.
struct ModuleCx<'s> {
    scan: &'s Scan,
    lookup: &'s foldhash::HashMap<String, &'s Target>,
    ranks: &'s Ranks,
    dora: bool,
    peft: bool,
    flipped_known: &'s foldhash::HashSet<&'s str>,
}

/// A shape check's answer (the expected shape when the saved one is wrong) for a family, leaf,
/// expert slot or not, and saved shape.
type AnswerFor = ((Family, Leaf, bool, u32), Option<Shape>);

/// Follows a module's factors to tell whether they come A, B (then a magnitude) for each slot,
/// slots increasing: every A with its B, every B with its A.
#[derive(Debug, Default)]
struct PairOrder {
    /// The slot of an A waiting for its B.
    open: Option<Slot>,
    /// The slot of the last complete pair.
    last: Option<Slot>,
    broken: bool,
}

impl PairOrder {
    fn step(&mut self, slot: Slot, leaf: Leaf) {
        let fits = match leaf {
            Leaf::A => self.open.is_none() && self.last.is_none_or(|l| l < slot),
            Leaf::B => self.open == Some(slot),
            Leaf::M => self.open.is_none() && self.last == Some(slot),
        };
        self.broken |= !fits;
        match leaf {
            Leaf::A => self.open = Some(slot),
            Leaf::B => {
                self.open = None;
                self.last = Some(slot);
            }
            Leaf::M => {}
        }
    }

    fn complete(&self) -> bool {
        !self.broken && self.open.is_none()
    }
}

/// Check one saved module against the model's module at its path.
fn check_module<'s>(cx: &ModuleCx<'s>, m: &'s Module) -> Findings<'s> {
    let mut f = Findings::default();
    let fused = m.layout == Layout::PeftParamWrapper;
    let targets = if fused {
        fused_targets(&m.path, cx.lookup)
    } else {
        cx.lookup.get(&stacked_path(&m.path)).map(|&t| vec![t])
    };
    let Some(targets) = targets else {
        f.unexpected.extend(
            m.tensor_ids
                .iter()
                .map(|&i| cx.scan.tensors.get(i as usize).name.to_string()),
        );
        f.unmatched = true;
        return f;
    };
    f.covered.extend(targets.iter().map(|t| t.path.as_str()));
    if fused {
        check_fused(cx.scan, m, &targets, &mut f.mismatches, &mut f.problems);
        return f;
    }
    let t = targets[0];
    if m.layout == Layout::MlxFused {
        f.problems.push(Problem::new(
            Code::NotChecked,
            Severity::Warning,
            Some(&m.path),
            format!("{} factors are not checked against the base", m.layout),
        ));
        return f;
    }
    let want_rank = cx.ranks.for_module(&m.path).or(m.rank);
    let name = |id: u32| cx.scan.tensors.get(id as usize).name;
    // Whether the factors come as inference lists a complete module: A then B (then a DoRA
    // magnitude) for each slot, slots increasing. Then no factor lacks its partner, and the
    // experts seen are the distinct ones counted here; otherwise both are worked out afterwards.
    let mut order = PairOrder::default();
    let mut experts_in_range = 0u64;
    let mut answers: smallvec::SmallVec<[AnswerFor; 4]> = smallvec::SmallVec::new();
    // What each tensor is and its shape, as inference read them: no tensor entry is read again
    // unless it is reported (a module's entries are spread over its file).
    for (
        &id,
        &Place {
            family,
            leaf,
            slot,
            shape,
        },
    ) in m.tensor_ids.iter().zip(&m.places)
    {
        order.step(slot, leaf);
        let saved = m.shapes[shape as usize].as_slice();
        if let Slot::Expert(e) = slot {
            if t.num_experts.is_some_and(|n| e >= n) {
                f.unexpected.push(name(id).to_string());
                continue;
            }
            experts_in_range += u64::from(leaf == Leaf::A);
        }
        // The expected shape depends on the family, the leaf, whether the slot is an expert's
        // and (through the rank) the saved shape: a module's factors have a few of these.
        let key = (family, leaf, matches!(slot, Slot::Expert(_)), shape);
        let known = answers.iter().position(|(k, _)| *k == key);
        let wrong = if let Some(i) = known {
            answers[i].1.as_ref()
        } else {
            let wrong = want_rank
                .or_else(|| saved_rank(family, leaf, saved))
                .and_then(|r| expected_shape(family, leaf, slot, m.layout, t, r))
                .filter(|want| want.as_slice() != saved);
            if answers.len() == answers.inline_size() {
                answers.remove(0);
            }
            answers.push((key, wrong));
            answers.last().and_then(|a| a.1.as_ref())
        };
        if let Some(want) = wrong {
            f.mismatches.push(ShapeMismatch {
                key: name(id).to_string(),
                saved: saved.to_vec(),
                expected: want.to_vec(),
            });
        }
    }
    let paired = order.complete();
    if !paired {
        // Half pairs: name the missing partner of each lone factor (A without B, or B without
        // A). Sorted by slot, each slot's factors are side by side (the report is sorted at the
        // end).
        let mut factors: Vec<(Slot, Leaf, u32)> = m
            .places
            .iter()
            .zip(&m.tensor_ids)
            .map(|(p, &id)| (p.slot, p.leaf, id))
            .collect();
        if !factors.is_sorted_by_key(|f| (f.0, f.1)) {
            factors.sort_unstable_by_key(|f| (f.0, f.1));
        }
        for slot in factors.chunk_by(|a, b| a.0 == b.0) {
            for &(_, leaf, id) in slot {
                let other = match leaf {
                    Leaf::A => Leaf::B,
                    Leaf::B => Leaf::A,
                    Leaf::M => continue,
                };
                if !slot.iter().any(|f| f.1 == other) {
                    if let Some(p) = partner(name(id)) {
                        f.missing.push(p);
                    }
                }
            }
        }
    }
    if cx.dora && m.variant == Variant::Lora && t.kind != Kind::Switch {
        f.missing.push(if cx.peft {
            format!("{PEFT_PREFIX}{}.lora_magnitude_vector", m.path)
        } else {
            format!("{}.m", m.path)
        });
    }
    let n = t.num_experts.unwrap_or(0);
    // In order and paired, the in-range experts are distinct and increasing: n of them below n
    // are all of them.
    if m.layout == Layout::PeftPerExpert && !(paired && experts_in_range == n) {
        let mut experts_seen: Vec<u64> = m
            .places
            .iter()
            .filter_map(|p| match p.slot {
                Slot::Expert(e) if e < n => Some(e),
                _ => None,
            })
            .collect();
        if !experts_seen.is_sorted() {
            experts_seen.sort_unstable();
        }
        let mut seen = experts_seen.iter().copied().peekable();
        for e in 0..n {
            while seen.next_if(|&x| x < e).is_some() {}
            if seen.peek() != Some(&e) {
                let p = per_expert_path(&t.path, e);
                f.missing.push(format!("{PEFT_PREFIX}{p}.lora_A.weight"));
                f.missing.push(format!("{PEFT_PREFIX}{p}.lora_B.weight"));
            }
        }
    }
    let module_mismatches = &f.mismatches;
    if !module_mismatches.is_empty()
        && !cx.flipped_known.contains(m.path.as_str())
        && module_mismatches
            .iter()
            .all(|x| x.saved.len() == 2 && x.saved.iter().rev().eq(x.expected.iter()))
    {
        f.problems.push(Problem::new(
            Code::OrientationFlipped,
            Severity::Error,
            Some(&m.path),
            "every factor has the transposed shape of what the model needs: the adapter is in \
             the other framework's orientation (PEFT vs mlx) under these names"
                .into(),
        ));
    }
    f
}

/// Scan the adapter at `adapter`, read the base folder `base` and diff them. The headers of both
/// (and their shard indexes) are read in one parallel step. Errors of the adapter come first.
pub fn check_paths(
    adapter: &Path,
    opts: &ScanOptions,
    base: &Path,
    base_limits: &Limits,
) -> Result<(Scan, Expected, Report)> {
    let pending = crate::scan::Pending::new(adapter, opts)?;
    let pending_base = PendingBase::new(base, base_limits);
    let mut plans = vec![pending.plan()];
    if let Ok(b) = &pending_base {
        plans.push(b.plan());
    }
    let mut done = read_plans(&plans).into_iter();
    drop(plans);
    let scan = pending.finish(done.next().unwrap_or_default())?;
    let expected = pending_base?.finish(done.next().unwrap_or_default())?;
    let report = check(&scan, &expected)?;
    Ok((scan, expected, report))
}

/// Diff an adapter scan against what a model expects.
pub fn check(scan: &Scan, expected: &Expected) -> Result<Report> {
    let mut missing = Vec::new();
    let mut unexpected = Vec::new();
    let mut mismatches = Vec::new();
    let mut problems: Vec<Problem> = scan.problems.clone();
    problems.extend(expected.problems.iter().cloned());

    if scan.fine_tune_type == Some("full") && scan.modules.is_empty() {
        let params = expected.param_shapes();
        for t in scan.tensors.iter() {
            match params.get(t.name) {
                None => unexpected.push(t.name.to_string()),
                Some(&shape) if shape != t.shape.as_slice() => {
                    mismatches.push(ShapeMismatch {
                        key: t.name.to_string(),
                        saved: t.shape.to_vec(),
                        expected: shape.to_vec(),
                    });
                }
                Some(_) => {}
            }
        }
        return Ok(finish(missing, unexpected, mismatches, problems));
    }

    let lookup: foldhash::HashMap<String, &Target> = expected
        .targets
        .iter()
        .map(|t| (stacked_path(&t.path), t))
        .collect();
    let ranks = Ranks::new(scan.config.as_ref())?;
    let dora = scan.fine_tune_type == Some("dora");
    let peft = scan.format == Format::Peft;
    let flipped_known: foldhash::HashSet<&str> = scan
        .problems
        .iter()
        .filter(|p| p.code == Code::OrientationFlipped)
        .filter_map(|p| p.path.as_deref())
        .collect();

    let cx = ModuleCx {
        scan,
        lookup: &lookup,
        ranks: &ranks,
        dora,
        peft,
        flipped_known: &flipped_known,
    };
    // Modules are independent: checked in parallel, findings merged in module order.
    let findings: Vec<Findings<'_>> = crate::par::map(
        &scan.modules,
        scan.tensors.len() >= crate::par::MIN_PARALLEL,
        |m| check_module(&cx, m),
    );
    let mut covered: foldhash::HashSet<&str> = foldhash::HashSet::default();
    let mut unmatched: Vec<&Module> = Vec::new();
    for (m, f) in scan.modules.iter().zip(findings) {
        if f.unmatched {
            unmatched.push(m);
        }
        covered.extend(f.covered);
        missing.extend(f.missing);
        unexpected.extend(f.unexpected);
        mismatches.extend(f.mismatches);
        problems.extend(f.problems);
    }

    if let Some(c) = scan.config.as_ref().filter(|c| !c.full_tensors.is_empty()) {
        let shape_of: foldhash::HashMap<&str, &[u64]> = scan
            .tensors
            .iter()
            .map(|t| (t.name, t.info.shape.as_slice()))
            .collect();
        let params = expected.param_shapes();
        for name in &c.full_tensors {
            let Some(saved) = shape_of.get(name.as_str()) else {
                continue; // reported by the scan as full_tensor_missing
            };
            match params.get(name.as_str()) {
                None => unexpected.push(name.clone()),
                Some(&shape) if shape != *saved => mismatches.push(ShapeMismatch {
                    key: name.clone(),
                    saved: saved.to_vec(),
                    expected: shape.to_vec(),
                }),
                Some(_) => {}
            }
        }
    }
    let target_parameters = scan
        .config
        .as_ref()
        .map_or(&[][..], |c| c.target_parameters.as_slice());
    for t in promised(scan, expected) {
        if !covered.contains(t.path.as_str()) {
            match fused_key(&t.path)
                .and_then(|k| crate::infer::param_wrapper::saved_names(&k, target_parameters))
            {
                Some(names) if peft => missing.extend(names),
                _ => missing.extend(names_for(&t.path, t, peft, dora)),
            }
        }
    }
    if let Some(p) = prefix_hint(&unmatched, &lookup) {
        problems.push(p);
    }
    Ok(finish(missing, unexpected, mismatches, problems))
}

fn finish(
    mut missing: Vec<String>,
    mut unexpected: Vec<String>,
    mut shape_mismatch: Vec<ShapeMismatch>,
    mut problems: Vec<Problem>,
) -> Report {
    use crate::naming::natural::{natural_cmp, sort_natural};
    sort_natural(&mut missing, String::as_str);
    missing.dedup();
    sort_natural(&mut unexpected, String::as_str);
    unexpected.dedup();
    sort_natural(&mut shape_mismatch, |m| m.key.as_str());
    problems.sort_by(|a, b| {
        a.severity.cmp(&b.severity).then_with(|| {
            natural_cmp(
                a.path.as_deref().unwrap_or(""),
                b.path.as_deref().unwrap_or(""),
            )
        })
    });
    let ok = missing.is_empty()
        && unexpected.is_empty()
        && shape_mismatch.is_empty()
        && !problems.iter().any(|p| p.severity == Severity::Error);
    Report {
        ok,
        missing,
        unexpected,
        shape_mismatch,
        problems,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partners() {
        assert_eq!(partner("a.lora_a").as_deref(), Some("a.lora_b"));
        assert_eq!(
            partner("a.lora_B.weight").as_deref(),
            Some("a.lora_A.weight")
        );
        assert_eq!(
            partner("a.lora_embedding_A").as_deref(),
            Some("a.lora_embedding_B")
        );
        assert_eq!(partner("a.m"), None);
    }

    #[test]
    fn expected_shapes_per_family() {
        let lin = Target {
            path: "x".into(),
            kind: Kind::Linear,
            in_dims: Some(64),
            out_dims: Some(32),
            num_experts: None,
        };
        let sw = Target {
            kind: Kind::Switch,
            num_experts: Some(4),
            ..lin.clone()
        };
        let emb = Target {
            kind: Kind::Embedding,
            in_dims: Some(100),
            out_dims: Some(16),
            ..lin.clone()
        };
        let s = Slot::Single;
        assert_eq!(
            expected_shape(Family::Mlx, Leaf::A, s, Layout::MlxLinear, &lin, 8),
            Some(smallvec::smallvec![64, 8])
        );
        assert_eq!(
            expected_shape(Family::Mlx, Leaf::B, s, Layout::MlxLinear, &lin, 8),
            Some(smallvec::smallvec![8, 32])
        );
        assert_eq!(
            expected_shape(Family::Mlx, Leaf::M, s, Layout::MlxLinear, &lin, 8),
            Some(smallvec::smallvec![32])
        );
        assert_eq!(
            expected_shape(Family::Mlx, Leaf::A, s, Layout::MlxSwitch, &sw, 8),
            Some(smallvec::smallvec![4, 8, 64])
        );
        assert_eq!(
            expected_shape(Family::Mlx, Leaf::A, s, Layout::MlxSwitchLegacy, &sw, 8),
            Some(smallvec::smallvec![32, 64])
        );
        assert_eq!(
            expected_shape(Family::Mlx, Leaf::B, s, Layout::MlxSwitch, &sw, 8),
            Some(smallvec::smallvec![4, 32, 8])
        );
        assert_eq!(
            expected_shape(Family::Mlx, Leaf::M, s, Layout::MlxEmbedding, &emb, 8),
            Some(smallvec::smallvec![100])
        );
        assert_eq!(
            expected_shape(Family::Peft, Leaf::A, s, Layout::PeftLinear, &lin, 8),
            Some(smallvec::smallvec![8, 64])
        );
        assert_eq!(
            expected_shape(
                Family::PeftEmbedding,
                Leaf::B,
                s,
                Layout::PeftEmbedding,
                &emb,
                8
            ),
            Some(smallvec::smallvec![16, 8])
        );
        assert_eq!(
            expected_shape(
                Family::Peft,
                Leaf::B,
                Slot::Expert(1),
                Layout::PeftPerExpert,
                &sw,
                8
            ),
            Some(smallvec::smallvec![32, 8])
        );
    }
}
