//! Module paths: where the layer index is, whether a config key covers a path, which module names
//! are embeddings.
//!
//! May use: nothing else of the crate.

/// The names of the containers whose numbered children are layers (`model.layers.3`, `h.0`).
const LAYER_CONTAINERS: &[&str] = &["layers", "h", "blocks", "layer", "block"];

/// Whether the children of `name` are layers: one of [`LAYER_CONTAINERS`], or a second list of
/// layers a model's `layers` joins to the first (afm7's `kv_reuse_layers`).
fn is_layer_container(name: &str) -> bool {
    LAYER_CONTAINERS.contains(&name) || name.ends_with("_layers")
}

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
        if prev.is_some_and(is_layer_container) {
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

pub(crate) fn template_of(path: &str) -> (String, Option<u64>) {
    let mut prev = "";
    let mut out = Vec::new();
    let mut layer = None;
    for part in path.split('.') {
        if layer.is_none() && is_layer_container(prev) {
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

pub(crate) fn key_covers(key: &str, path: &str) -> bool {
    path == key
        || (path.len() > key.len()
            && path.ends_with(key)
            && path.as_bytes()[path.len() - key.len() - 1] == b'.')
}

const EMBEDDING_NAMES: &[&str] = &[
    "embed_tokens",
    "wte",
    "word_embeddings",
    "tok_embeddings",
    "token_embedding",
    "token_embd",
    "embedding",
    "embeddings",
    "embed",
    // Position embeddings (gpt2's `wpe`) are nn.Embedding too.
    "wpe",
    "embed_positions",
    "position_embeddings",
];

pub(crate) fn looks_like_embedding(path: &str) -> bool {
    let last = path.rsplit('.').next().unwrap_or(path);
    EMBEDDING_NAMES.contains(&last)
}

/// Model types whose MoE router is mlx-lm's `MoEGate` (a module holding a plain `weight`), which
/// mlx-lm never wraps (joyai_llm_flash and kimi_k2 are deepseek_v3 to mlx-lm).
const MOE_GATE_MODELS: &[&str] = &[
    "bailing_moe_v3",
    "deepseek",
    "deepseek_v2",
    "deepseek_v3",
    "deepseek_v32",
    "deepseek_v41",
    "dots1",
    "exaone_moe",
    "glm4_moe",
    "glm4_moe_lite",
    "glm_moe_dsa",
    "joyai_llm_flash",
    "kimi_k2",
    "kimi_k25",
    "kimi_vl",
    "laguna",
    "mimo_v2_flash",
    "muse_spark",
    "nemotron_h",
    "solar_open",
];

/// Model types whose mlx-lm classes keep each expert as its own Linear (`ffn.experts.{e}.w1`),
/// where other per-expert checkpoints are stacked into a `SwitchLinear` when loaded.
const EXPERT_LIST_MODELS: &[&str] = &["dbrx"];

/// Whether `model_type`'s mlx-lm classes keep per-expert Linears as they are, unstacked.
pub fn keeps_expert_lists(model_type: Option<&str>) -> bool {
    model_type.is_some_and(|t| EXPERT_LIST_MODELS.contains(&t))
}

/// Weights mlx-lm never wraps although their headers look like a Linear's or a SwitchLinear's:
/// convolutions (`conv1d`, `q_conv1d`, `conv.conv`: `(C, K, 1)`), norms with a 2-D weight
/// (`g_norm`), MLA's `MultiLinear` (`embed_q`, `unembed_out`) and the non-Linear routers of
/// `model_type` (`MoEGate` and its kind). Only a base read from its headers needs this; a base
/// built with mlx-lm's classes knows it.
pub fn never_wrapped(model_type: Option<&str>, path: &str) -> bool {
    let last = path.rsplit('.').next().unwrap_or(path);
    matches!(last, "conv" | "embed_q" | "unembed_out")
        || last.ends_with("conv1d")
        || last.ends_with("norm")
        || (last == "gate" && model_type.is_some_and(|t| MOE_GATE_MODELS.contains(&t)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_mlx_lm_never_wraps() {
        assert!(never_wrapped(None, "model.layers.0.linear_attn.conv1d"));
        assert!(never_wrapped(
            Some("llama"),
            "model.layers.0.self_attn.embed_q"
        ));
        assert!(never_wrapped(
            Some("deepseek_v3"),
            "model.layers.3.mlp.gate"
        ));
        assert!(never_wrapped(
            Some("nemotron_h"),
            "backbone.layers.1.mixer.gate"
        ));
        // Qwen3-MoE's router is an nn.Linear: wrapped.
        assert!(!never_wrapped(Some("qwen3_moe"), "model.layers.0.mlp.gate"));
        assert!(!never_wrapped(None, "model.layers.0.mlp.gate"));
        assert!(!never_wrapped(
            Some("deepseek_v3"),
            "model.layers.0.mlp.gate_proj"
        ));
    }

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
        assert_eq!(layer_index("model.kv_reuse_layers.0.mlp.up_proj"), Some(0));
    }
}
