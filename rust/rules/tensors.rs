//! Tensors that are not LoRA factors: declared full tensors, PEFT's saved base layers,
//! trainable-token deltas and `modules_to_save`, and anything else (an error).
//!
//! May use: `naming`, `config`, `infer`, `rules` (the context).

use std::collections::HashSet;

use crate::config::AdapterConfig;
use crate::infer::{Kind, Module};
use crate::naming::leaves::PEFT_PREFIX;
use crate::naming::paths::key_covers;
use crate::problem::Code;
use crate::rules::peft_variants::variant_tensor;
use crate::rules::Ctx;

pub(crate) fn check_non_adapter(
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
                Code::NoAdapterTensors,
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
                Code::FullTensorMissing,
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
                    Code::PeftBaseLayerSaved,
                    Some(stripped),
                    "PEFT saved the full embedding next to its LoRA factors (it does so when an embedding is targeted); an mlx adapter cannot hold it".into(),
                );
                continue;
            }
        }
        if stripped.ends_with(".trainable_tokens_delta") {
            cx.warn(
                Code::PeftTrainableTokens,
                Some(stripped),
                "PEFT trainable_token_indices deltas cannot be represented as an mlx LoRA adapter"
                    .into(),
            );
            continue;
        }
        if variant_tensor(stripped).is_some() {
            continue; // a PEFT variant's own tensor, reported with its variant
        }
        if to_save.iter().any(|s| key_covers(s, module)) {
            cx.warn(
                Code::PeftModulesToSave,
                Some(stripped),
                "a full weight from PEFT modules_to_save; an mlx LoRA adapter cannot hold it"
                    .into(),
            );
            continue;
        }
        cx.error(
            Code::NonAdapterTensor,
            Some(stripped),
            format!("`{name}` is not a LoRA parameter (lora_a/lora_b/m or PEFT lora_A/lora_B); a loader would overwrite a base weight or refuse the adapter"),
        );
    }
}
