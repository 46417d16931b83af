//! Inference: tensors grouped into LoRA modules, and each module's kind, variant, layout, rank,
//! dims and expert count read from its factors' names and shapes.
//!
//! The family of a factor (and so its orientation) is decided by its leaf name; shapes are only a
//! consistency check, so square factors cannot confuse it. Every layout of the formats reference
//! is recognised: mlx-lm LoRA/DoRA linear, switch (3-D and the legacy 2-D `lora_a`) and embedding,
//! layer-wrapped `.lora_a.weight`, AFM7 fused list leaves, mlx-vlm legacy `.A`/`.B`, and PEFT
//! linear, embedding, DoRA magnitude, per-expert keys and `target_parameters` wrappers.
//!
//! - [`group`]: tensors grouped by module path (in parallel runs).
//! - [`module`]: the [`Module`] record and its table of factor shapes.
//! - [`analyze`]: one module's factors read into kind, layout, rank and dims.
//! - [`param_wrapper`]: PEFT `target_parameters` modules, resolved with the config's rank.
//!
//! May use: `naming`, `read::dtype`, `read::table`, `problem`, `par`.

use serde::Serialize;
use smallvec::SmallVec;

pub use crate::naming::leaves::Family;
use crate::naming::leaves::{Leaf, Slot};
use crate::naming::natural::sort_natural;
use crate::problem::{Code, Problem, Severity};
use crate::read::dtype::Dtype;

mod analyze;
mod group;
pub mod module;
pub mod param_wrapper;
#[cfg(test)]
mod tests;

use analyze::analyze;
use group::{gather, group, locate, Member};
use module::{shape_table, INLINE_FACTORS};
pub use module::{Module, TensorIds};

/// What a LoRA module adapts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A dense linear layer.
    Linear,
    /// Stacked experts (mlx `SwitchLinear`, or PEFT per-expert keys grouped).
    Switch,
    /// An embedding table.
    Embedding,
}

impl Kind {
    /// Stable name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Linear => "linear",
            Self::Switch => "switch",
            Self::Embedding => "embedding",
        }
    }
}

/// LoRA or DoRA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    /// Plain low-rank update.
    Lora,
    /// Weight-decomposed (has a magnitude vector).
    Dora,
}

impl Variant {
    /// Stable name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Lora => "lora",
            Self::Dora => "dora",
        }
    }
}
/// A tensor as the inference sees it.
#[derive(Debug, Clone, Copy)]
pub struct TensorView<'a> {
    /// Full name, as stored.
    pub name: &'a str,
    /// Dtype.
    pub dtype: Dtype,
    /// Shape.
    pub shape: &'a [u64],
}
/// The result of grouping.
#[derive(Debug, Default)]
pub struct Inference {
    /// Modules, in natural path order.
    pub modules: Vec<Module>,
    /// Indices of tensors that are not adapter parameters.
    pub non_adapter: Vec<usize>,
    /// Problems found in the tensors alone.
    pub problems: Vec<Problem>,
    /// Families seen among the adapter tensors.
    pub families: Vec<Family>,
}
/// Options that change how tensors are read.
#[derive(Debug, Clone, Copy, Default)]
pub struct InferOptions {
    /// The config lists PEFT `target_parameters` (fused-expert `ParamWrapper` adapters).
    pub peft_target_parameters: bool,
}
/// What one module path yields: a module, or tensors that are not adapter parameters after all.
/// (Not boxed: the outcomes are collected in one vector, and a box per module would be one more
/// allocation for each.)
#[allow(clippy::large_enum_variant)]
enum Outcome {
    Module(Module, Vec<Problem>, SmallVec<[Family; 2]>),
    NotAdapter(Vec<usize>),
}

fn outcome(
    path: &str,
    members: &[Member],
    tensors: &[TensorView<'_>],
    opts: InferOptions,
) -> Outcome {
    // A lone `m`, `A` or `B` is some other parameter that happens to share the leaf name.
    let tentative = members
        .iter()
        .all(|(f, l, _, _)| (*f == Family::Mlx && *l == Leaf::M) || *f == Family::MlxVlmLegacy);
    let vlm_complete = members
        .iter()
        .any(|(f, l, _, _)| *f == Family::MlxVlmLegacy && *l == Leaf::A)
        && members
            .iter()
            .any(|(f, l, _, _)| *f == Family::MlxVlmLegacy && *l == Leaf::B);
    if tentative && !vlm_complete {
        return Outcome::NotAdapter(members.iter().map(|m| m.3).collect());
    }
    let mut fams: SmallVec<[Family; 2]> = SmallVec::new();
    for (f, l, _, _) in members {
        // A magnitude is shared by the families of its naming (`m`: mlx's; PEFT's
        // `lora_magnitude_vector`: linear and embedding); it does not make a module mixed.
        if *l == Leaf::M && matches!(f, Family::Mlx | Family::Peft) {
            continue;
        }
        if !fams.contains(f) {
            fams.push(*f);
        }
    }
    // A magnitude of the other naming than the factors' mixes them after all.
    for (f, l, _, _) in members {
        let other = match f {
            Family::Peft => fams.iter().any(|x| !x.is_peft()),
            Family::Mlx => fams.iter().any(|x| x.is_peft()),
            _ => false,
        };
        if *l == Leaf::M && other && !fams.contains(f) {
            fams.push(*f);
        }
    }
    if fams.is_empty() {
        // Only magnitudes: their own family.
        fams.push(members[0].0);
    }
    let family = fams[0];
    let mut mixed = None;
    if fams.len() > 1 {
        mixed = Some(Problem::new(
            Code::MixedFormats,
            Severity::Error,
            Some(path),
            format!("the module's tensors mix naming conventions ({fams:?})"),
        ));
    }
    // Natural order without comparing strings: by list/expert index, then A, B, magnitude.
    let mut order: SmallVec<[(Slot, Leaf, usize, Family); INLINE_FACTORS]> =
        members.iter().map(|m| (m.2, m.1, m.3, m.0)).collect();
    order.sort_unstable_by_key(|m| (m.0, m.1, m.2));
    let ids: TensorIds = order.iter().map(|m| m.2 as u32).collect();
    let (mut module, mut problems) = analyze(path, family, &order, tensors, opts);
    // After the analysis, which read the same shapes in the same order.
    let (shapes, places) = shape_table(&order, tensors);
    module.tensor_ids = ids;
    module.places = places;
    module.shapes = shapes;
    if let Some(p) = mixed {
        problems.insert(0, p);
    }
    Outcome::Module(module, problems, fams)
}

/// Group tensors into modules and infer each one (in parallel: tensors are grouped in chunks,
/// then modules are analysed independently; the result does not depend on the split).
pub fn infer(tensors: &[TensorView<'_>], opts: InferOptions) -> Inference {
    const CHUNK: usize = 8192;
    let parallel = tensors.len() >= crate::par::MIN_PARALLEL;
    let chunks: Vec<(usize, &[TensorView<'_>])> = tensors
        .chunks(CHUNK)
        .enumerate()
        .map(|(c, chunk)| (c * CHUNK, chunk))
        .collect();
    let runs = crate::par::map(&chunks, parallel, |&(offset, chunk)| {
        group(chunk, offset).finish()
    });
    let mut paths = locate(&runs);
    sort_natural(&mut paths, |p| p.0);
    let outcomes: Vec<Outcome> = crate::par::map(&paths, parallel, |(path, located)| {
        outcome(path, &gather(&runs, located), tensors, opts)
    });
    let mut non_adapter: Vec<usize> = runs.iter().flat_map(|r| &r.non_adapter).copied().collect();

    let mut out = Inference {
        modules: Vec::with_capacity(outcomes.len()),
        ..Inference::default()
    };
    let mut families: Vec<Family> = Vec::new();
    for o in outcomes {
        match o {
            Outcome::NotAdapter(ids) => non_adapter.extend(ids),
            Outcome::Module(module, problems, fams) => {
                for f in fams {
                    if !families.contains(&f) {
                        families.push(f);
                    }
                }
                out.problems.extend(problems);
                out.modules.push(module);
            }
        }
    }
    non_adapter.sort_unstable();
    out.non_adapter = non_adapter;
    out.families = families;
    out
}
