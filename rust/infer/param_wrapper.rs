//! PEFT `target_parameters` adapters: LoRA on fused expert parameters (peft's `ParamWrapper`).
//!
//! transformers 5 stores a MoE layer's experts as 3-D parameters of one module
//! (`mlp.experts.gate_up_proj`: `(E, 2 * I, H)`, `mlp.experts.down_proj`: `(E, H, I)`). peft
//! adapts each targeted parameter with a wrapper around the module, nesting one wrapper per
//! parameter in the order the module registers them: the first parameter's factors are saved under
//! `experts.base_layer[.base_layer...]`, the last one's under `experts`. Each wrapper saves one
//! pair with the expert axis folded into the rank: `lora_A` `(E * r, in)` (experts major) and
//! `lora_B` `(out, r * E)` (experts minor). The header alone cannot split `E * r`; the config's `r`
//! (or `rank_pattern`) can, and the factors of the two parameters must chain
//! (`gate_up` out = 2 x `down` in, `down` out = `gate_up` in), which confirms the nesting.
//!
//!
//! May use: `naming`, `problem`, `infer` (its records).

//! [`resolve`] names each wrapper by its parameter (`mlp.experts.gate_up_proj`), and fills in its
//! rank and expert count, so `check` can compare it with the model's stacked switch modules.

use crate::infer::analyze::shape_str;
use crate::infer::{Kind, Module, TensorView};
use crate::naming::layout::Layout;
use crate::naming::natural::sort_natural;
use crate::naming::paths::key_covers;
use crate::problem::{Code, Problem, Severity};

/// The order in which Hugging Face expert modules register their fused parameters.
const REGISTRATION_ORDER: &[&str] = &["gate_up_proj", "gate_proj", "up_proj", "down_proj"];

/// A wrapper's module path split into the wrapped module and its nesting depth.
fn unwrap_path(path: &str) -> (&str, usize) {
    let mut base = path;
    let mut depth = 0;
    while let Some(inner) = base.strip_suffix(".base_layer") {
        base = inner;
        depth += 1;
    }
    (base, depth)
}

/// The parameter names `target_parameters` selects on the module at `base`, in registration order.
fn targeted_params<'t>(base: &str, target_parameters: &'t [String]) -> Vec<&'t str> {
    let mut names: Vec<&str> = Vec::new();
    for t in target_parameters {
        let param = t.rsplit_once('.').map_or(t.as_str(), |(_, p)| p);
        let key = format!("{base}.{param}");
        if key_covers(t, &key) && !names.contains(&param) {
            names.push(param);
        }
    }
    names.sort_by_key(|p| {
        (
            REGISTRATION_ORDER
                .iter()
                .position(|x| x == p)
                .unwrap_or(usize::MAX),
            *p,
        )
    });
    names
}

/// The tensor names peft saves for the fused parameter `key` (`X.experts.gate_up_proj`), when
/// `target_parameters` selects it: the wrapper's depth follows the module's registration order.
pub fn saved_names(key: &str, target_parameters: &[String]) -> Option<Vec<String>> {
    let (base, param) = key.rsplit_once('.')?;
    let params = targeted_params(base, target_parameters);
    let index = params.iter().position(|p| *p == param)?;
    let depth = params.len() - 1 - index;
    let module = format!("{base}{}", ".base_layer".repeat(depth));
    Some(
        ["lora_A.weight", "lora_B.weight"]
            .iter()
            .map(|leaf| format!("{}{module}.{leaf}", crate::naming::leaves::PEFT_PREFIX))
            .collect(),
    )
}

/// The `(A, B)` shapes of a wrapper's pair, when it has exactly one 2-D pair.
fn pair_shapes<'a>(m: &Module, tensors: &'a [TensorView<'a>]) -> Option<(&'a [u64], &'a [u64])> {
    let mut a = None;
    let mut b = None;
    for &id in &m.tensor_ids {
        let t = &tensors[id as usize];
        if t.name.ends_with(".lora_A.weight") {
            a = a.xor(Some(t.shape));
        } else if t.name.ends_with(".lora_B.weight") {
            b = b.xor(Some(t.shape));
        }
    }
    match (a?, b?) {
        (a, b) if a.len() == 2 && b.len() == 2 && a[0] == b[1] => Some((a, b)),
        _ => None,
    }
}

/// Name each `target_parameters` wrapper by its parameter and fill in rank and expert count.
///
/// `rank_for` gives the config's rank for a parameter path (`rank_pattern` first match, else `r`).
/// Problems of the tensors alone that the config settles (`rank_needs_expert_count`) are dropped;
/// new ones are added for wrappers that the config cannot explain.
pub fn resolve(
    modules: &mut Vec<Module>,
    tensors: &[TensorView<'_>],
    target_parameters: &[String],
    rank_for: &dyn Fn(&str) -> Option<u64>,
    problems: &mut Vec<Problem>,
) {
    let groups = wrapper_groups(modules);
    if groups.is_empty() {
        return;
    }
    let mut renamed: Vec<(usize, String)> = Vec::new();
    for (base, mut members) in groups {
        members.sort_unstable();
        // Settled here, one way or the other.
        drop_settled(problems, &members, modules);
        let params = targeted_params(&base, target_parameters);
        // A wrapper's depth names its parameter; one lost wrapper leaves the others readable.
        if let Some(p) = unassignable(&base, &members, &params) {
            problems.push(p);
            continue;
        }
        // peft nests the first registered parameter innermost.
        let mut resolved: Vec<Resolved<'_>> = Vec::new();
        for &(depth, i) in &members {
            let param = params[params.len() - 1 - depth];
            let path = format!("{base}.{param}");
            let Some(pair) = pair_shapes(&modules[i], tensors) else {
                continue; // malformed pairs are reported by inference
            };
            if let Some(r) = read_wrapper(&mut modules[i], param, pair, &path, rank_for, problems) {
                resolved.push(r);
            }
            renamed.push((i, path));
        }
        check_chain(&base, &resolved, problems);
    }
    rename(modules, renamed, problems);
}

/// The wrappers grouped by the module they wrap: (wrapped module, [(depth, module index)]), in
/// the modules' order.
fn wrapper_groups(modules: &[Module]) -> Vec<(String, Vec<(usize, usize)>)> {
    let mut groups: Vec<(String, Vec<(usize, usize)>)> = Vec::new();
    for (i, m) in modules.iter().enumerate() {
        if m.layout != Layout::PeftParamWrapper {
            continue;
        }
        let (base, depth) = unwrap_path(&m.path);
        match groups.iter_mut().find(|(b, _)| b == base) {
            Some((_, members)) => members.push((depth, i)),
            None => groups.push((base.to_string(), vec![(depth, i)])),
        }
    }
    groups
}

/// Drop the `rank_needs_expert_count` problems of a group's wrappers (inference's, without the
/// config).
fn drop_settled(problems: &mut Vec<Problem>, members: &[(usize, usize)], modules: &[Module]) {
    problems.retain(|p| {
        p.code != Code::RankNeedsExpertCount
            || !members
                .iter()
                .any(|&(_, i)| p.path.as_deref() == Some(&modules[i].path))
    });
}

/// The error for a group whose depths (sorted) cannot name one targeted parameter each.
fn unassignable(base: &str, members: &[(usize, usize)], params: &[&str]) -> Option<Problem> {
    let k = params.len();
    let depths_ok =
        members.windows(2).all(|w| w[0].0 < w[1].0) && members.last().is_some_and(|(d, _)| *d < k);
    if members.len() <= k && depths_ok {
        return None;
    }
    Some(Problem::new(
        Code::ParamWrapperUnresolved,
        Severity::Error,
        Some(base),
        format!(
            "{} target_parameters wrapper(s) saved at depths {:?}, but the config's \
             target_parameters select {} parameter(s) of this module ({}): the factors \
             cannot be assigned to parameters (peft nests one wrapper per parameter)",
            members.len(),
            members.iter().map(|m| m.0).collect::<Vec<_>>(),
            params.len(),
            params.join(", ")
        ),
    ))
}

/// A wrapper whose folded axis the config's rank divides.
struct Resolved<'p> {
    param: &'p str,
    in_dims: u64,
    out_dims: u64,
    experts: u64,
}

/// Fill in a wrapper's kind and dims from its `(A, B)` shapes, and its rank and expert count from
/// the config's rank for `path` when that divides the folded axis.
fn read_wrapper<'p>(
    m: &mut Module,
    param: &'p str,
    (sa, sb): (&[u64], &[u64]),
    path: &str,
    rank_for: &dyn Fn(&str) -> Option<u64>,
    problems: &mut Vec<Problem>,
) -> Option<Resolved<'p>> {
    let folded = sa[0];
    m.kind = Kind::Switch;
    m.in_dims = Some(sa[1]);
    m.out_dims = Some(sb[0]);
    match rank_for(path) {
        None => problems.push(Problem::new(
            Code::RankNeedsExpertCount,
            Severity::Warning,
            Some(path),
            format!(
                "PEFT target_parameters factors {} and {} hold rank x experts = {folded}, \
                 and the config gives no rank to divide it by",
                shape_str(sa),
                shape_str(sb)
            ),
        )),
        Some(0) => {}
        Some(r) if folded % r != 0 => problems.push(Problem::new(
            Code::RankMismatch,
            Severity::Error,
            Some(path),
            format!(
                "factors {} and {} hold rank x experts = {folded}, which the config's rank \
                 {r} does not divide",
                shape_str(sa),
                shape_str(sb)
            ),
        )),
        Some(r) => {
            m.rank = Some(r);
            m.num_experts = Some(folded / r);
            return Some(Resolved {
                param,
                in_dims: sa[1],
                out_dims: sb[0],
                experts: folded / r,
            });
        }
    }
    None
}

/// gate_up_proj and down_proj of one module must chain, and gate_up_proj's output must split into
/// gate and up halves.
fn check_chain(base: &str, resolved: &[Resolved<'_>], problems: &mut Vec<Problem>) {
    let find = |p: &str| resolved.iter().find(|x| x.param == p);
    if let (Some(gu), Some(down)) = (find("gate_up_proj"), find("down_proj")) {
        // A header may give a dim near 2^64 (a tensor with no elements): no overflow here.
        if Some(gu.out_dims) != down.in_dims.checked_mul(2)
            || down.out_dims != gu.in_dims
            || gu.experts != down.experts
        {
            problems.push(Problem::new(
                Code::FusedShapesDisagree,
                Severity::Error,
                Some(base),
                format!(
                    "gate_up_proj ({} experts, {} > {}) and down_proj ({} experts, {} > {}) do \
                     not chain: gate_up_proj's output must be twice down_proj's input and \
                     down_proj's output gate_up_proj's input (factors saved under the wrong \
                     wrapper, or the wrong base)",
                    gu.experts, gu.in_dims, gu.out_dims, down.experts, down.in_dims, down.out_dims
                ),
            ));
        }
    }
    if let Some(gu) = find("gate_up_proj").filter(|gu| gu.out_dims % 2 != 0) {
        problems.push(Problem::new(
            Code::FusedShapesDisagree,
            Severity::Error,
            Some(&format!("{base}.gate_up_proj")),
            format!(
                "gate_up_proj's output width {} is odd: it cannot hold gate and up halves",
                gu.out_dims
            ),
        ));
    }
}

/// Give each resolved wrapper its parameter's path (a clash with a per-expert module is an
/// error), and restore the natural order.
fn rename(modules: &mut Vec<Module>, renamed: Vec<(usize, String)>, problems: &mut Vec<Problem>) {
    for (i, path) in renamed {
        if modules.iter().any(|m| m.path == path) {
            problems.push(Problem::new(
                Code::DuplicateModule,
                Severity::Error,
                Some(&path),
                "both per-expert and target_parameters factors adapt this module".into(),
            ));
        }
        modules[i].path = path;
    }
    sort_natural(modules, |m| m.path.as_str());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infer::{infer, InferOptions};
    use crate::read::dtype::Dtype;

    const P: &str = "base_model.model.model.layers.0.mlp.experts";

    fn run(
        spec: &[(String, Vec<u64>)],
        targets: &[&str],
        r: Option<u64>,
    ) -> (Vec<Module>, Vec<Problem>) {
        let views: Vec<TensorView<'_>> = spec
            .iter()
            .map(|(n, s)| TensorView {
                name: n,
                dtype: Dtype::from_name("F32").unwrap(),
                shape: s,
            })
            .collect();
        let mut inf = infer(
            &views,
            InferOptions {
                peft_target_parameters: true,
            },
        );
        let targets: Vec<String> = targets.iter().map(|s| (*s).to_string()).collect();
        resolve(
            &mut inf.modules,
            &views,
            &targets,
            &|_| r,
            &mut inf.problems,
        );
        (inf.modules, inf.problems)
    }

    fn qwen(e: u64, r: u64, h: u64, i: u64) -> Vec<(String, Vec<u64>)> {
        vec![
            (format!("{P}.base_layer.lora_A.weight"), vec![e * r, h]),
            (format!("{P}.base_layer.lora_B.weight"), vec![2 * i, r * e]),
            (format!("{P}.lora_A.weight"), vec![e * r, i]),
            (format!("{P}.lora_B.weight"), vec![h, r * e]),
        ]
    }

    const BOTH: &[&str] = &["mlp.experts.gate_up_proj", "mlp.experts.down_proj"];

    #[test]
    fn wrappers_are_named_by_parameter() {
        let (modules, problems) = run(&qwen(8, 4, 64, 48), BOTH, Some(4));
        assert!(problems.is_empty(), "{problems:?}");
        let got: Vec<_> = modules
            .iter()
            .map(|m| {
                (
                    m.path.as_str(),
                    m.rank,
                    m.num_experts,
                    m.in_dims,
                    m.out_dims,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "model.layers.0.mlp.experts.down_proj",
                    Some(4),
                    Some(8),
                    Some(48),
                    Some(64)
                ),
                (
                    "model.layers.0.mlp.experts.gate_up_proj",
                    Some(4),
                    Some(8),
                    Some(64),
                    Some(96)
                ),
            ]
        );
        assert!(modules.iter().all(|m| m.kind == Kind::Switch));
    }

    #[test]
    fn a_single_parameter_has_no_base_layer() {
        let spec = qwen(8, 4, 64, 48)[2..].to_vec();
        let (modules, problems) = run(&spec, &["down_proj"], Some(4));
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(modules[0].path, "model.layers.0.mlp.experts.down_proj");
        // The config's order does not matter: registration order decides the nesting.
        let (modules, _) = run(&qwen(8, 4, 64, 48), &["down_proj", "gate_up_proj"], Some(4));
        assert_eq!(modules[1].path, "model.layers.0.mlp.experts.gate_up_proj");
        assert_eq!(modules[1].in_dims, Some(64));
    }

    #[test]
    fn saved_names_follow_the_nesting() {
        let both: Vec<String> = BOTH.iter().map(|s| (*s).to_string()).collect();
        let names = |k| saved_names(k, &both).unwrap();
        assert_eq!(
            names("m.mlp.experts.gate_up_proj"),
            vec![
                "base_model.model.m.mlp.experts.base_layer.lora_A.weight",
                "base_model.model.m.mlp.experts.base_layer.lora_B.weight"
            ]
        );
        assert_eq!(
            names("m.mlp.experts.down_proj")[1],
            "base_model.model.m.mlp.experts.lora_B.weight"
        );
        assert_eq!(saved_names("m.mlp.experts.up_proj", &both), None);
    }

    #[test]
    fn unresolvable_wrappers_are_errors() {
        let codes = |p: &[Problem]| p.iter().map(|p| p.code).collect::<Vec<_>>();
        // No rank in the config: a warning, the path still named.
        let (modules, problems) = run(&qwen(8, 4, 64, 48), BOTH, None);
        assert_eq!(codes(&problems), vec!["rank_needs_expert_count"; 2]);
        assert_eq!(modules[0].path, "model.layers.0.mlp.experts.down_proj");
        // Rank that does not divide E * r.
        let (_, problems) = run(&qwen(8, 4, 64, 48), BOTH, Some(5));
        assert_eq!(codes(&problems), vec!["rank_mismatch"; 2]);
        // Two wrappers, one targeted parameter.
        let (_, problems) = run(&qwen(8, 4, 64, 48), &["down_proj"], Some(4));
        assert_eq!(codes(&problems), vec!["param_wrapper_unresolved"]);
        // Factors swapped between the wrappers: they no longer chain.
        let mut spec = qwen(8, 4, 64, 48);
        spec.swap(0, 2);
        spec.swap(1, 3);
        for s in &mut spec {
            s.0 = if s.0.contains("base_layer") {
                s.0.replace(".base_layer", "")
            } else {
                s.0.replace("experts.", "experts.base_layer.")
            };
        }
        let (_, problems) = run(&spec, BOTH, Some(4));
        assert_eq!(codes(&problems), vec!["fused_shapes_disagree"]);
    }

    #[test]
    fn dims_near_the_top_of_u64_do_not_overflow_the_chain_check() {
        // A header may describe an empty tensor with a huge dim; down_proj's input then doubles
        // past u64 (a panic in a debug build before). gate_up's output cannot match it.
        let huge = 1u64 << 63;
        let (_, problems) = run(
            &[
                (format!("{P}.base_layer.lora_A.weight"), vec![0, 64]),
                (format!("{P}.base_layer.lora_B.weight"), vec![96, 0]),
                (format!("{P}.lora_A.weight"), vec![0, huge]),
                (format!("{P}.lora_B.weight"), vec![64, 0]),
            ],
            BOTH,
            Some(4),
        );
        let codes: Vec<&str> = problems.iter().map(|p| p.code.name()).collect();
        assert!(!codes.is_empty(), "{codes:?}");
    }
}
