//! One saved module against the model's module at its path: its target, the shape of each
//! factor, half pairs, DoRA magnitudes, missing experts and a flipped orientation.
//!
//! May use: `naming`, `infer`, `problem`, `base` (targets), `check` (its records and rules).

use crate::base::Target;
use crate::check::expect::{expected_shape, partner, saved_rank, Ranks};
use crate::check::fused::{check_fused, fused_targets};
use crate::check::ShapeMismatch;
use crate::infer::module::Place;
use crate::infer::{Kind, Module, Variant};
use crate::naming::experts::{per_expert_path, stacked_path};
use crate::naming::layout::Layout;
use crate::naming::leaves::{Family, Leaf, Slot, PEFT_PREFIX};
use crate::problem::{Code, Problem, Severity};
use crate::read::table::Shape;
use crate::scan::Scan;

/// What one module's check finds.
#[derive(Default)]
pub(crate) struct Findings<'s> {
    pub(crate) unmatched: bool,
    pub(crate) covered: Vec<&'s str>,
    pub(crate) missing: Vec<String>,
    pub(crate) unexpected: Vec<String>,
    pub(crate) mismatches: Vec<ShapeMismatch>,
    pub(crate) problems: Vec<Problem>,
}

/// What every module's check reads.
pub(crate) struct ModuleCx<'s> {
    pub(crate) scan: &'s Scan,
    pub(crate) lookup: &'s foldhash::HashMap<String, &'s Target>,
    pub(crate) ranks: &'s Ranks,
    pub(crate) dora: bool,
    pub(crate) peft: bool,
    pub(crate) flipped_known: &'s foldhash::HashSet<&'s str>,
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
pub(crate) fn check_module<'s>(cx: &ModuleCx<'s>, m: &'s Module) -> Findings<'s> {
    let mut f = Findings::default();
    let Some(t) = target(cx, m, &mut f) else {
        return f;
    };
    let (paired, experts_in_range) = check_shapes(cx, m, t, &mut f);
    if !paired {
        name_missing_partners(cx, m, &mut f);
    }
    if cx.dora && m.variant == Variant::Lora && t.kind != Kind::Switch {
        f.missing.push(if cx.peft {
            format!("{PEFT_PREFIX}{}.lora_magnitude_vector", m.path)
        } else {
            format!("{}.m", m.path)
        });
    }
    // In order and paired, the in-range experts are distinct and increasing: n of them below n
    // are all of them.
    let n = t.num_experts.unwrap_or(0);
    if m.layout == Layout::PeftPerExpert && !(paired && experts_in_range == n) {
        name_missing_experts(m, t, &mut f);
    }
    flag_orientation(cx, m, &mut f);
    f
}

/// The model's module to compare `m` with: none when `m` has no module to go to (its tensors
/// are unexpected), is a `target_parameters` wrapper (checked against its stacked modules here)
/// or holds AFM7 fused factors (not checked).
fn target<'s>(cx: &ModuleCx<'s>, m: &'s Module, f: &mut Findings<'s>) -> Option<&'s Target> {
    let fused = m.layout == Layout::PeftParamWrapper;
    let targets = if fused {
        fused_targets(&m.path, cx.lookup)
    } else {
        // PEFT names experts as Hugging Face does (`experts.X`, grouped), which mlx-lm stacks
        // under `switch_mlp`; an mlx adapter's path must be the model's own.
        cx.lookup
            .get(&stacked_path(&m.path))
            .filter(|t| cx.peft || t.path == m.path)
            .map(|&t| vec![t])
    };
    let Some(targets) = targets else {
        f.unexpected.extend(
            m.tensor_ids
                .iter()
                .map(|&i| cx.scan.tensors.get(i as usize).name.to_string()),
        );
        f.unmatched = true;
        return None;
    };
    f.covered.extend(targets.iter().map(|t| t.path.as_str()));
    if fused {
        check_fused(cx.scan, m, &targets, &mut f.mismatches, &mut f.problems);
        return None;
    }
    if m.layout == Layout::MlxFused {
        f.problems.push(Problem::new(
            Code::NotChecked,
            Severity::Warning,
            Some(&m.path),
            format!("{} factors are not checked against the base", m.layout),
        ));
        return None;
    }
    Some(targets[0])
}

/// Compare each factor's shape with the one `t` needs. Returns whether the factors came as
/// complete pairs in order, and how many experts in `t`'s range have an A.
fn check_shapes(cx: &ModuleCx<'_>, m: &Module, t: &Target, f: &mut Findings<'_>) -> (bool, u64) {
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
    (order.complete(), experts_in_range)
}

/// Half pairs: name the missing partner of each lone factor (A without B, or B without A).
fn name_missing_partners(cx: &ModuleCx<'_>, m: &Module, f: &mut Findings<'_>) {
    let name = |id: u32| cx.scan.tensors.get(id as usize).name;
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

/// Name both factors of every expert of `t` that `m` lacks.
fn name_missing_experts(m: &Module, t: &Target, f: &mut Findings<'_>) {
    let n = t.num_experts.unwrap_or(0);
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

/// When every mismatch is a transposed 2-D shape, say the adapter is in the other framework's
/// orientation (once: the scan may have said so already).
fn flag_orientation(cx: &ModuleCx<'_>, m: &Module, f: &mut Findings<'_>) {
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
}
