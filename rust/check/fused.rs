//! PEFT `target_parameters` wrappers against the model's stacked experts: `gate_up_proj` against
//! `switch_mlp.gate_proj` and `up_proj` together, `down_proj` against `switch_mlp.down_proj`.
//!
//! May use: `naming`, `infer`, `problem`, `base` (targets), `check` (its records).

use crate::base::Target;
use crate::check::ShapeMismatch;
use crate::infer::{Kind, Module};
use crate::naming::experts::{hf_moe_block, mlx_moe_blocks, stacked_path};
use crate::problem::{Code, Problem, Severity};
use crate::scan::Scan;

/// The model's stacked modules that a `target_parameters` wrapper adapts:
/// `X.experts.gate_up_proj` -> `X.switch_mlp.gate_proj` and `X.switch_mlp.up_proj` (its output is
/// theirs, stacked), `X.experts.P` -> `X.switch_mlp.P`.
pub(crate) fn fused_targets<'e>(
    path: &str,
    lookup: &foldhash::HashMap<String, &'e Target>,
) -> Option<Vec<&'e Target>> {
    // transformers 5 calls Mixtral's `block_sparse_moe` `mlp`; mlx-lm keeps the old name.
    let find = |p: String| {
        let (block, leaf) = p.split_once(".switch_mlp.")?;
        mlx_moe_blocks(block)
            .iter()
            .find_map(|b| lookup.get(&format!("{b}.switch_mlp.{leaf}")).copied())
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
pub(crate) fn check_fused(
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
pub(crate) fn fused_key(path: &str) -> Option<String> {
    let (head, last) = path.rsplit_once('.')?;
    let block = head.strip_suffix(".switch_mlp")?;
    let param = match last {
        "gate_proj" | "up_proj" => "gate_up_proj",
        "down_proj" => "down_proj",
        _ => return None,
    };
    Some(format!("{}.experts.{param}", hf_moe_block(block)))
}
