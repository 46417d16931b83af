//! Inference on tensor lists written by hand: every layout, the problems of each, and
//! properties over generated names (grouping, no panics).
//!
//! May use: anything (tests).

use super::*;
use crate::infer::analyze::join_experts;
use crate::naming::experts::expert_split_into;
use crate::naming::layout::Layout;
use crate::naming::leaves::{classify, Slot, PEFT_PREFIX};
use crate::naming::ranges::compress_ranges;
use std::collections::HashMap;

fn run(spec: &[(&str, &str, &[u64])]) -> Inference {
    run_with(spec, InferOptions::default())
}

fn run_with(spec: &[(&str, &str, &[u64])], opts: InferOptions) -> Inference {
    let views: Vec<TensorView<'_>> = spec
        .iter()
        .map(|(n, d, s)| TensorView {
            name: n,
            dtype: Dtype::from_name(d).unwrap(),
            shape: s,
        })
        .collect();
    infer(&views, opts)
}

fn codes(inf: &Inference) -> Vec<&'static str> {
    inf.problems.iter().map(|p| p.code.name()).collect()
}

#[test]
fn mlx_linear_square_factors_follow_the_names() {
    let inf = run(&[
        ("model.layers.0.self_attn.q_proj.lora_a", "F32", &[8, 8]),
        ("model.layers.0.self_attn.q_proj.lora_b", "F32", &[8, 8]),
    ]);
    assert!(inf.problems.is_empty());
    let m = &inf.modules[0];
    assert_eq!(m.path, "model.layers.0.self_attn.q_proj");
    assert_eq!(
        (m.kind, m.variant, m.rank),
        (Kind::Linear, Variant::Lora, Some(8))
    );
    assert_eq!(m.layout, Layout::MlxLinear);
}

#[test]
fn mlx_linear_and_flipped() {
    let inf = run(&[
        ("a.q_proj.lora_a", "F32", &[64, 4]),
        ("a.q_proj.lora_b", "F32", &[4, 32]),
        ("a.v_proj.lora_a", "F32", &[4, 64]),
        ("a.v_proj.lora_b", "F32", &[32, 4]),
    ]);
    let q = &inf.modules[0];
    assert_eq!(
        (q.rank, q.in_dims, q.out_dims),
        (Some(4), Some(64), Some(32))
    );
    assert_eq!(codes(&inf), vec!["orientation_flipped"]);
    assert_eq!(inf.problems[0].path.as_deref(), Some("a.v_proj"));
}

#[test]
fn transposed_factors_of_a_square_weight_are_flipped_not_rank_64() {
    // in == out == 64, rank 4: the transposed pair chains both ways; the sane reading wins.
    let inf = run(&[("q.lora_a", "F32", &[4, 64]), ("q.lora_b", "F32", &[64, 4])]);
    assert_eq!(codes(&inf), vec!["orientation_flipped"]);
    let q = &inf.modules[0];
    assert_eq!(
        (q.rank, q.in_dims, q.out_dims),
        (Some(4), Some(64), Some(64))
    );
    // The PEFT names with mlx-oriented data, same story.
    let inf = run(&[
        ("q.lora_A.weight", "F32", &[64, 4]),
        ("q.lora_B.weight", "F32", &[4, 64]),
    ]);
    assert_eq!(codes(&inf), vec!["orientation_flipped"]);
    assert_eq!(inf.modules[0].rank, Some(4));
}

#[test]
fn switch_layouts() {
    let inf = run(&[
        ("l.switch_mlp.up_proj.lora_a", "F32", &[4, 8, 64]),
        ("l.switch_mlp.up_proj.lora_b", "F32", &[4, 32, 8]),
        ("l.switch_mlp.down_proj.lora_a", "F32", &[32, 32]),
        ("l.switch_mlp.down_proj.lora_b", "F32", &[4, 64, 8]),
        ("l.switch_mlp.gate_proj.lora_a", "F32", &[4, 8, 64]),
        ("l.switch_mlp.gate_proj.lora_b", "F32", &[5, 32, 8]),
    ]);
    let by: HashMap<_, _> = inf.modules.iter().map(|m| (m.path.as_str(), m)).collect();
    let up = by["l.switch_mlp.up_proj"];
    assert_eq!(
        (
            up.kind,
            up.rank,
            up.in_dims,
            up.out_dims,
            up.num_experts,
            up.layout
        ),
        (
            Kind::Switch,
            Some(8),
            Some(64),
            Some(32),
            Some(4),
            Layout::MlxSwitch
        )
    );
    let down = by["l.switch_mlp.down_proj"];
    assert_eq!(
        (
            down.rank,
            down.in_dims,
            down.out_dims,
            down.num_experts,
            down.layout
        ),
        (
            Some(8),
            Some(32),
            Some(64),
            Some(4),
            Layout::MlxSwitchLegacy
        )
    );
    assert!(codes(&inf).contains(&"legacy_switch_layout"));
    assert!(codes(&inf).contains(&"expert_count_mismatch"));
}

#[test]
fn dora_embedding_and_linear() {
    let inf = run(&[
        ("model.embed_tokens.lora_a", "F32", &[100, 4]),
        ("model.embed_tokens.lora_b", "F32", &[4, 16]),
        ("model.embed_tokens.m", "F32", &[100]),
        ("x.proj.lora_a", "F32", &[16, 4]),
        ("x.proj.lora_b", "F32", &[4, 100]),
        ("x.proj.m", "F32", &[100]),
        ("y.emb.lora_a", "F32", &[16, 4]),
        ("y.emb.lora_b", "F32", &[4, 20]),
        ("y.emb.m", "F32", &[7]),
        ("model.norm.m", "F32", &[7]),
    ]);
    assert_eq!(inf.modules[0].path, "model.embed_tokens");
    assert_eq!(inf.modules[0].kind, Kind::Embedding);
    assert_eq!(inf.modules[0].variant, Variant::Dora);
    let proj = inf.modules.iter().find(|m| m.path == "x.proj").unwrap();
    assert_eq!((proj.kind, proj.variant), (Kind::Linear, Variant::Dora));
    assert_eq!(codes(&inf), vec!["bad_factor_shape"]);
    // A lone `m` is not an adapter tensor.
    assert_eq!(inf.non_adapter.len(), 1);
}

#[test]
fn experts_join_in_order_with_gaps_and_one_sided_entries() {
    let e = |x: u64, i: usize| (Slot::Expert(x), i);
    // A's factors for expert 2 twice (the later tensor counts); B lacks expert 0, has 5.
    let a = [(Slot::Single, 9), e(0, 1), e(2, 3), e(2, 4), e(3, 6)];
    let b = [e(2, 7), e(3, 8), e(5, 2)];
    assert_eq!(
        join_experts(&a, &b),
        vec![
            (0, Some(1), None),
            (2, Some(4), Some(7)),
            (3, Some(6), Some(8)),
            (5, None, Some(2)),
        ]
    );
    assert!(join_experts(&[], &[]).is_empty());
    let top = [e(u64::MAX, 0)];
    assert_eq!(join_experts(&top, &top), vec![(u64::MAX, Some(0), Some(0))]);
}

#[test]
fn a_huge_expert_index_is_reported_as_ranges_without_listing_them() {
    let name = |e: u64, l: &str| {
        format!("base_model.model.model.layers.0.mlp.experts.{e}.down_proj.lora_{l}.weight")
    };
    let mut spec: Vec<(String, &str, Vec<u64>)> = Vec::new();
    for e in [0u64, 7, 1_000_000_000_000, u64::MAX] {
        spec.push((name(e, "A"), "F32", vec![4, 16]));
        spec.push((name(e, "B"), "F32", vec![8, 4]));
    }
    let spec: Vec<(&str, &str, &[u64])> = spec
        .iter()
        .map(|(n, d, s)| (n.as_str(), *d, s.as_slice()))
        .collect();
    let inf = run(&spec);
    let m = &inf.modules[0];
    assert_eq!(m.num_experts, Some(u64::MAX));
    assert_eq!(codes(&inf), vec!["missing_experts"]);
    let gaps = u64::MAX - 3; // 2^64 indices, 4 present
    assert_eq!(
        inf.problems[0].message,
        format!(
            "{gaps} of {} experts have no factors: 1-6, 8-999999999999, 1000000000001-{}",
            u64::MAX,
            u64::MAX - 1
        )
    );
}

#[test]
fn long_range_lists_are_cut() {
    let values: Vec<u64> = (0..200).map(|x| x * 2).collect();
    let text = compress_ranges(&values);
    assert!(text.starts_with("0, 2, 4, "));
    assert!(text.ends_with(", 126, and 136 more ranges"), "{text}");
    assert_eq!(
        compress_ranges(&[u64::MAX - 1, u64::MAX]),
        format!("{}-{}", u64::MAX - 1, u64::MAX)
    );
}

#[test]
fn peft_keys_and_per_expert_grouping() {
    let mut spec: Vec<(String, &str, Vec<u64>)> = vec![
        (
            "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight".into(),
            "BF16",
            vec![8, 64],
        ),
        (
            "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight".into(),
            "BF16",
            vec![32, 8],
        ),
        (
            "base_model.model.model.embed_tokens.lora_embedding_A".into(),
            "BF16",
            vec![8, 100],
        ),
        (
            "base_model.model.model.embed_tokens.lora_embedding_B".into(),
            "BF16",
            vec![64, 8],
        ),
        (
            "base_model.model.model.embed_tokens.base_layer.weight".into(),
            "BF16",
            vec![100, 64],
        ),
    ];
    for e in [0u64, 1, 3] {
        spec.push((
            format!("base_model.model.model.layers.0.mlp.experts.{e}.up_proj.lora_A.weight"),
            "BF16",
            vec![8, 64],
        ));
        spec.push((
            format!("base_model.model.model.layers.0.mlp.experts.{e}.up_proj.lora_B.weight"),
            "BF16",
            vec![16, 8],
        ));
    }
    let borrowed: Vec<(&str, &str, &[u64])> = spec
        .iter()
        .map(|(a, b, c)| (a.as_str(), *b, c.as_slice()))
        .collect();
    let inf = run(&borrowed);
    let by: HashMap<_, _> = inf.modules.iter().map(|m| (m.path.as_str(), m)).collect();
    let q = by["model.layers.0.self_attn.q_proj"];
    assert_eq!(
        (q.rank, q.in_dims, q.out_dims, q.layout),
        (Some(8), Some(64), Some(32), Layout::PeftLinear)
    );
    let emb = by["model.embed_tokens"];
    assert_eq!(
        (emb.kind, emb.rank, emb.in_dims, emb.out_dims),
        (Kind::Embedding, Some(8), Some(100), Some(64))
    );
    let ex = by["model.layers.0.mlp.experts.up_proj"];
    assert_eq!(
        (ex.kind, ex.num_experts, ex.rank, ex.layout),
        (Kind::Switch, Some(4), Some(8), Layout::PeftPerExpert)
    );
    assert_eq!(ex.tensor_ids.len(), 6);
    assert_eq!(codes(&inf), vec!["missing_experts"]);
    assert!(inf.problems[0].message.contains(": 2"));
    assert_eq!(inf.non_adapter.len(), 1);
}

#[test]
fn unpaired_and_rank_mismatch() {
    let inf = run(&[
        ("p.lora_a", "F32", &[8, 4]),
        ("q.lora_a", "F32", &[8, 4]),
        ("q.lora_b", "F32", &[3, 5]),
    ]);
    assert_eq!(codes(&inf), vec!["unpaired_factor", "rank_mismatch"]);
    assert_eq!(inf.modules[1].rank, None);
}

#[test]
fn a_rank_above_one_side_is_a_router_not_a_degenerate_rank() {
    // mlx-lm wraps a 64 -> 4 router with rank 8 by default: above out_dims, below in_dims.
    let router = run(&[
        ("m.mlp.gate.lora_a", "F32", &[64, 8]),
        ("m.mlp.gate.lora_b", "F32", &[8, 4]),
    ]);
    assert_eq!(codes(&router), Vec::<&str>::new());
    let above_both = run(&[
        ("m.mlp.gate.lora_a", "F32", &[64, 80]),
        ("m.mlp.gate.lora_b", "F32", &[80, 4]),
    ]);
    assert_eq!(codes(&above_both), vec!["degenerate_rank"]);
    assert_eq!(
        above_both.problems[0].severity,
        crate::problem::Severity::Warning
    );
    let zero = run(&[
        ("m.q.lora_a", "F32", &[64, 0]),
        ("m.q.lora_b", "F32", &[0, 4]),
    ]);
    assert_eq!(codes(&zero), vec!["degenerate_rank"]);
    assert_eq!(zero.problems[0].severity, crate::problem::Severity::Error);
}

#[test]
fn a_peft_embedding_with_a_dora_magnitude_is_one_module() {
    let inf = run(&[
        (
            "base_model.model.model.embed_tokens.lora_embedding_A",
            "F32",
            &[4, 128],
        ),
        (
            "base_model.model.model.embed_tokens.lora_embedding_B",
            "F32",
            &[64, 4],
        ),
        (
            "base_model.model.model.embed_tokens.lora_magnitude_vector",
            "F32",
            &[64],
        ),
    ]);
    assert_eq!(codes(&inf), Vec::<&str>::new());
    let m = &inf.modules[0];
    assert_eq!(
        (m.kind, m.variant, m.layout),
        (Kind::Embedding, Variant::Dora, Layout::PeftEmbedding)
    );
    // A magnitude of the other naming still mixes them.
    let mixed = run(&[
        ("m.q.lora_a", "F32", &[64, 4]),
        ("m.q.lora_b", "F32", &[4, 64]),
        ("m.q.lora_magnitude_vector", "F32", &[64]),
    ]);
    assert_eq!(codes(&mixed), vec!["mixed_formats"]);
}

#[test]
fn layer_wrapped_fused_and_vlm_legacy() {
    let inf = run(&[
        ("a.lora_a.weight", "F32", &[4, 64]),
        ("a.lora_b.weight", "F32", &[32, 4]),
        ("b.qkv_proj.lora_a.0", "F32", &[64, 4]),
        ("b.qkv_proj.lora_a.1", "F32", &[64, 4]),
        ("b.qkv_proj.lora_b.0", "F32", &[4, 64]),
        ("b.qkv_proj.lora_b.1", "F32", &[4, 16]),
        ("language_model.c.A", "F32", &[64, 10]),
        ("language_model.c.B", "F32", &[10, 64]),
    ]);
    let by: HashMap<_, _> = inf.modules.iter().map(|m| (m.path.as_str(), m)).collect();
    assert_eq!(
        (by["a"].rank, by["a"].in_dims, by["a"].layout),
        (Some(4), Some(64), Layout::MlxLayer)
    );
    assert_eq!(
        (by["b.qkv_proj"].rank, by["b.qkv_proj"].out_dims),
        (Some(4), Some(80))
    );
    assert_eq!(
        (by["language_model.c"].rank, by["language_model.c"].layout),
        (Some(10), Layout::MlxVlmLegacy)
    );
    assert_eq!(codes(&inf), vec!["layer_wrapped_factors"]);
}

#[test]
fn param_wrapper_needs_expert_count() {
    let inf = run_with(
        &[
            (
                "base_model.model.model.layers.0.mlp.experts.base_layer.lora_A.weight",
                "F32",
                &[32, 64],
            ),
            (
                "base_model.model.model.layers.0.mlp.experts.base_layer.lora_B.weight",
                "F32",
                &[256, 32],
            ),
        ],
        InferOptions {
            peft_target_parameters: true,
        },
    );
    let m = &inf.modules[0];
    assert_eq!(
        (m.kind, m.rank, m.layout),
        (Kind::Switch, None, Layout::PeftParamWrapper)
    );
    assert_eq!(codes(&inf), vec!["rank_needs_expert_count"]);
}

proptest::proptest! {
    /// Grouping (which reuses the split of recent per-expert paths) puts every tensor where
    /// splitting each path on its own would, whether the tensors are grouped in one run or
    /// in two appended.
    #[test]
    fn grouping_matches_splitting_each_path(
        split in 0usize..40,
        items in proptest::collection::vec((
            proptest::sample::select(vec!["m.", "m.experts.", "xexperts.", "m.experts.7.experts.", "n.experts.9x."]),
            proptest::sample::select(vec!["0", "1", "01", "12", "", "99999999999999999999", "3x"]),
            proptest::sample::select(vec![".gate_proj.", ".up_proj.", ".", ".experts.2.down."]),
            proptest::sample::select(vec!["lora_A.weight", "lora_B.weight", "lora_a"]),
        ), 0..40),
    ) {
        let names: Vec<String> = items
            .iter()
            .map(|(a, e, b, leaf)| format!("{PEFT_PREFIX}{a}{e}{b}{leaf}"))
            .collect();
        let views: Vec<TensorView<'_>> = names
            .iter()
            .map(|n| TensorView { name: n, dtype: Dtype::from_name("F32").unwrap(), shape: &[] })
            .collect();
        let one = [group(&views, 0).finish()];
        let at = split.min(views.len());
        let two = [group(&views[..at], 0).finish(), group(&views[at..], at).finish()];
        let mut naive: Vec<(String, Slot, usize)> = Vec::new();
        for (i, t) in views.iter().enumerate() {
            let stripped = t.name.strip_prefix(PEFT_PREFIX).unwrap();
            let Some((path, family, _, slot)) = classify(stripped) else { continue };
            let mut key = String::new();
            let split = if family.is_peft() { expert_split_into(path, &mut key) } else { None };
            match split {
                Some(e) => naive.push((key, Slot::Expert(e), i)),
                None => naive.push((path.to_string(), slot, i)),
            }
        }
        let mut paths_seen = Vec::new();
        for runs in [&one[..], &two[..]] {
            let located = locate(runs);
            let mut grouped: Vec<(String, Slot, usize)> = located
                .iter()
                .flat_map(|(k, l)| gather(runs, l).iter().map(|m| (k.to_string(), m.2, m.3)).collect::<Vec<_>>())
                .collect();
            // Each path's factors are in tensor order.
            proptest::prop_assert!(grouped.windows(2).all(|w| w[0].0 != w[1].0 || w[0].2 < w[1].2));
            grouped.sort_by_key(|g| g.2);
            proptest::prop_assert_eq!(&grouped, &naive);
            let non_adapter: usize = runs.iter().map(|r| r.non_adapter.len()).sum();
            proptest::prop_assert_eq!(non_adapter + grouped.len(), views.len());
            paths_seen.push(located.iter().map(|l| l.0.to_string()).collect::<Vec<_>>());
        }
        proptest::prop_assert_eq!(&paths_seen[0], &paths_seen[1]);
    }

    /// Any mix of names and shapes infers without panicking, and every tensor is accounted for.
    #[test]
    fn inference_never_panics(
        items in proptest::collection::vec((
            proptest::sample::select(vec!["", "m.", "base_model.model.x.", "x.experts.3.", "y.experts.0.", "q.lora_a."]),
            proptest::sample::select(vec!["lora_a", "lora_b", "m", "A", "B", "lora_A.weight", "lora_B.weight",
                "lora_embedding_A", "lora_embedding_B", "lora_magnitude_vector", "lora_a.weight", "lora_b.weight",
                "lora_a.0", "lora_b.1", "weight", "é"]),
            proptest::collection::vec(0u64..6, 0..4),
        ), 0..12),
        param_wrapper in proptest::bool::ANY,
    ) {
        let names: Vec<String> = items.iter().map(|(p, l, _)| format!("{p}{l}")).collect();
        let mut seen = std::collections::HashSet::new();
        let views: Vec<TensorView<'_>> = items
            .iter()
            .zip(&names)
            .filter(|(_, n)| seen.insert(n.as_str()))
            .map(|((_, _, s), n)| TensorView { name: n, dtype: Dtype::from_name("F32").unwrap(), shape: s })
            .collect();
        let inf = infer(&views, InferOptions { peft_target_parameters: param_wrapper });
        let in_modules: usize = inf.modules.iter().map(|m| m.tensor_ids.len()).sum();
        proptest::prop_assert_eq!(in_modules + inf.non_adapter.len(), views.len());
    }
}
