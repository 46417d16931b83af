//! What the model expects of an adapter: the shape of each factor, the tensors a module should
//! have saved, the modules the config promises, and a path prefix that would make them fit.
//!
//! May use: `config`, `naming`, `infer`, `problem`, `base` (targets), `scan`.

use std::collections::{HashMap, HashSet};

use crate::base::{Expected, Target};
use crate::check::fused::fused_key;
use crate::config::{AdapterConfig, PeftRanks, Schema, TargetModules};
use crate::error::Result;
use crate::infer::{Kind, Module};
use crate::naming::experts::{per_expert_path, stacked_path};
use crate::naming::layout::Layout;
use crate::naming::leaves::{Family, Leaf, Slot, PEFT_PREFIX};
use crate::naming::paths::{key_covers, layer_split};
use crate::problem::{Code, Problem, Severity};
use crate::read::table::Shape;
use crate::scan::Scan;

/// Per-module rank the config promises.
pub(crate) struct Ranks {
    per_module: HashMap<String, u64>,
    peft: Option<PeftRanks>,
    global: Option<u64>,
}

impl Ranks {
    pub(crate) fn new(config: Option<&AdapterConfig>) -> Result<Self> {
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

    pub(crate) fn for_module(&self, path: &str) -> Option<u64> {
        self.per_module
            .get(path)
            .copied()
            .or_else(|| self.peft.as_ref()?.from_pattern(path))
            .or(self.global)
    }
}

/// The shape a factor must have, in the naming family it was saved under.
pub(crate) fn expected_shape(
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
pub(crate) fn saved_rank(family: Family, leaf: Leaf, shape: &[u64]) -> Option<u64> {
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
pub(crate) fn names_for(path: &str, t: &Target, format_peft: bool, dora: bool) -> Vec<String> {
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
pub(crate) fn partner(key: &str) -> Option<String> {
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
pub(crate) fn promised<'e>(scan: &Scan, expected: &'e Expected) -> Vec<&'e Target> {
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
pub(crate) fn prefix_hint(
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
