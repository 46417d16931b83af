//! mlx-lm, mlx-vlm and Unsloth configs against the modules: fields mlx-lm needs, ranks, `keys`
//! and `num_layers`.
//!
//! May use: `naming`, `config`, `infer`, `rules` (the context).

use std::collections::{HashMap, HashSet};

use crate::config::{AdapterConfig, Schema};
use crate::infer::Module;
use crate::naming::files::CONFIG_NAME;
use crate::naming::paths::{key_covers, layer_index};
use crate::naming::ranges::compress_ranges;
use crate::problem::Code;
use crate::rules::{check_rank, Ctx};

pub(crate) fn check_mlx_config(c: &AdapterConfig, modules: &[Module], cx: &mut Ctx<'_>) {
    warn_schema(c, cx);
    warn_base_quantization(c, cx);
    if modules.is_empty() {
        return;
    }
    let vlm = c.schema == Schema::MlxVlmLegacy;
    if !vlm {
        check_required_fields(c, cx);
    }
    check_values(c, cx);
    check_module_ranks(c, modules, cx);
    check_keys(c, modules, vlm, cx);
    check_num_layers(c, modules, cx);
}

/// mlx-vlm's `base_quantization` (written by `--quantization-bits`): the adapter was trained on
/// a base quantized that way, which mlx-vlm's loader recreates from a float base first.
fn warn_base_quantization(c: &AdapterConfig, cx: &mut Ctx<'_>) {
    let Some(serde_json::Value::Object(q)) = c.raw.get("base_quantization") else {
        return;
    };
    if q.is_empty() {
        return;
    }
    let bits: std::collections::BTreeSet<u64> = q
        .values()
        .filter_map(|v| v.get("bits").and_then(serde_json::Value::as_u64))
        .collect();
    let bits: Vec<String> = bits.iter().map(ToString::to_string).collect();
    cx.warn(
        Code::BaseQuantizationRequired,
        None,
        format!(
            "trained on a quantized base (`base_quantization`: {} modules, {}-bit): mlx-vlm \
             quantizes a float base that way before loading the adapter; on an unquantized base \
             its outputs differ",
            q.len(),
            bits.join("/")
        ),
    );
}

/// Schemas that current mlx-lm cannot load as they are, or whose meaning is ambiguous.
fn warn_schema(c: &AdapterConfig, cx: &mut Ctx<'_>) {
    match c.schema {
        Schema::MlxLegacy => cx.warn(
            Code::LegacyConfig,
            None,
            "pre-0.19 mlx-lm config (`lora_layers`/`use_dora`, no `num_layers`/`fine_tune_type`): current mlx-lm fails on it with AttributeError".into(),
        ),
        Schema::MlxVlmLegacy => cx.warn(
            Code::LegacyConfig,
            None,
            "mlx-vlm's legacy LoRaLayer config (`rank`, `alpha`, `dropout`; mlx-vlm 0.7.10 still writes it for `.A`/`.B` factors): its scale is alpha / rank (mlx-vlm up to 0.4.4 took alpha itself as the scale); stock mlx-lm cannot load it".into(),
        ),
        Schema::Unknown => cx.warn(
            Code::ConfigUnrecognised,
            None,
            format!("{CONFIG_NAME} follows no known schema (no lora_parameters, num_layers, fine_tune_type, peft_type)"),
        ),
        _ => {}
    }
}

/// The fields mlx-lm's `load_adapters` reads without a default.
fn check_required_fields(c: &AdapterConfig, cx: &mut Ctx<'_>) {
    if !c.has_lora_parameters {
        cx.error(
            Code::ConfigFieldMissing,
            None,
            "no `lora_parameters`: mlx-lm's load_adapters fails with AttributeError".into(),
        );
    }
    if c.num_layers.is_none() {
        cx.error(
            Code::ConfigFieldMissing,
            None,
            "no `num_layers`: mlx-lm's load_adapters fails with AttributeError".into(),
        );
    }
    if c.has_lora_parameters && c.rank.is_none() {
        cx.error(
            Code::ConfigFieldMissing,
            None,
            "no `lora_parameters.rank`: mlx-lm's load_adapters fails with KeyError".into(),
        );
    }
    if c.has_lora_parameters && c.dropout.is_none() {
        cx.error(
            Code::ConfigFieldMissing,
            None,
            "no `lora_parameters.dropout`: mlx-lm's load_adapters fails with KeyError".into(),
        );
    }
    if c.scale.is_none() {
        if c.alpha.is_some() {
            cx.error(
                Code::ConfigAlphaInsteadOfScale,
                None,
                "the config gives `alpha` but no `scale`: mlx-lm applies `scale` directly (scale = alpha / rank in PEFT terms) and refuses a config without it".into(),
            );
        } else if c.has_lora_parameters || c.top_scale.is_none() {
            cx.error(
                Code::ConfigScaleMissing,
                None,
                "no `lora_parameters.scale`: the adapter's strength is unknown".into(),
            );
        }
    }
}

/// Rank, scale and dropout: the top-level mirrors agree with `lora_parameters`, and the values
/// are valid.
fn check_values(c: &AdapterConfig, cx: &mut Ctx<'_>) {
    if let (Some(a), Some(b)) = (c.rank, c.top_rank) {
        if a != b {
            cx.error(
                Code::ConfigRankConflict,
                None,
                format!("top-level rank {b} contradicts lora_parameters.rank {a}"),
            );
        }
    }
    if let (Some(a), Some(b)) = (c.scale, c.top_scale) {
        if (a - b).abs() > f64::EPSILON * a.abs().max(1.0) {
            cx.error(
                Code::ConfigRankConflict,
                None,
                format!("top-level scale {b} contradicts lora_parameters.scale {a}"),
            );
        }
    }
    if let Some(d) = c.dropout {
        if !(0.0..1.0).contains(&d) {
            cx.error(
                Code::ConfigValueInvalid,
                None,
                format!("dropout {d} is not a probability in [0, 1)"),
            );
        }
    }
    if c.rank == Some(0) {
        cx.error(
            Code::ConfigValueInvalid,
            None,
            "rank 0 in the config".into(),
        );
    }
}

/// Each module's rank against the config's: per-module entries win, then the global rank.
fn check_module_ranks(c: &AdapterConfig, modules: &[Module], cx: &mut Ctx<'_>) {
    let per_module: HashMap<&str, u64> = c
        .module_ranks
        .iter()
        .map(|(k, v)| (k.as_str(), *v))
        .collect();
    let global = c.rank.or(c.top_rank);
    for m in modules {
        if let Some(&r) = per_module.get(m.path.as_str()) {
            check_rank(cx, m, r, "the config's per-module rank");
        } else if let Some(r) = global {
            check_rank(cx, m, r, "the config");
        }
    }
}

/// The modules the config says are adapted: `lora_parameters.keys`, else Unsloth's paths.
fn listed_modules(c: &AdapterConfig) -> Option<&[String]> {
    c.keys.as_deref().or(c.module_paths.as_deref())
}

/// Which modules the config says are adapted, against the modules the adapter saves.
fn check_keys(c: &AdapterConfig, modules: &[Module], vlm: bool, cx: &mut Ctx<'_>) {
    if let (Some(keys), Some(paths)) = (&c.keys, &c.module_paths) {
        let a: HashSet<&String> = keys.iter().collect();
        let b: HashSet<&String> = paths.iter().collect();
        if a != b {
            cx.warn(
                Code::ConfigPathsConflict,
                None,
                "lora_parameters.keys and unsloth_mlx_lora_module_paths list different modules; loaders disagree on which wins".into(),
            );
        }
    }
    match listed_modules(c) {
        Some([]) => cx.error(
            Code::ConfigKeysEmpty,
            None,
            format!("the config lists no modules (`keys: []`) but the adapter holds {} LoRA modules; it cannot be reloaded", modules.len()),
        ),
        Some(keys) => {
            for k in keys {
                if !modules.iter().any(|m| key_covers(k, &m.path)) {
                    cx.error(
                        Code::ConfigKeyUnsaved,
                        Some(k),
                        format!("the config names `{k}` but the adapter has no tensors for it; a loader would add a zero-effect wrapper (or nothing at all)"),
                    );
                }
            }
            for m in modules {
                if !keys.iter().any(|k| key_covers(k, &m.path)) {
                    cx.error(
                        Code::ModuleNotInKeys,
                        Some(&m.path),
                        "the adapter saves this module but the config's keys do not name it; loaders refuse or drop its tensors".into(),
                    );
                }
            }
        }
        None if !vlm => {
            for m in modules.iter().filter(|m| layer_index(&m.path).is_none()) {
                cx.error(
                    Code::ModuleNotInKeys,
                    Some(&m.path),
                    "the module is outside the numbered layers and the config has no `keys`; mlx-lm only wraps modules inside the layers and refuses its tensors".into(),
                );
            }
            cx.warn(
                Code::ConfigKeysMissing,
                None,
                "no lora_parameters.keys: mlx-lm wraps every Linear, SwitchLinear and Embedding of the last num_layers blocks, including modules the adapter has no tensors for".into(),
            );
        }
        None => {}
    }
}

/// num_layers: relative keys and default keys only reach the last N blocks.
fn check_num_layers(c: &AdapterConfig, modules: &[Module], cx: &mut Ctx<'_>) {
    let full_paths = listed_modules(c)
        .is_some_and(|keys| keys.iter().all(|k| modules.iter().any(|m| m.path == *k)));
    if let (Some(n), false) = (c.num_layers, full_paths) {
        let layers: HashSet<u64> = modules
            .iter()
            .filter_map(|m| layer_index(&m.path))
            .collect();
        if n > 0 && layers.len() as u64 > n.unsigned_abs() {
            let mut sorted: Vec<u64> = layers.into_iter().collect();
            sorted.sort_unstable();
            cx.error(
                Code::ConfigNumLayersMismatch,
                None,
                format!(
                    "num_layers is {n} but the adapter has tensors in {} layers ({}); a loader wraps only the last {n}",
                    sorted.len(),
                    compress_ranges(&sorted)
                ),
            );
        }
    }
}
