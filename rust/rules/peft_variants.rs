//! PEFT variants an mlx LoRA cannot represent, from the config (peft writes every variant's field
//! in every config, so a field counts only when set) and from the tensors they add.
//!
//! Refused (an error): `lora_bias` (a bias on B), aLoRA (active only after its invocation
//! tokens), QALoRA (A over pooled input groups), BD-LoRA (block-diagonal factors stored
//! compressed), KaSA (a diagonal between B and A), Arrow (routing among task adapters),
//! MonteCLoRA and VeLoRA (sampled or grouped extras). Warned: initialisations that changed the
//! base weights when the adapter was made (PiSSA, OLoRA, CorDA, LoftQ, LoRA-GA): the factors are
//! standard, but they reproduce the trained model only on that modified base.
//!
//! May use: `config`, `problem`, `rules` (the context).

use serde_json::Value;

use crate::config::AdapterConfig;
use crate::problem::Code;
use crate::rules::Ctx;

/// A variant: its config field, its code, what MLX lacks, and the leaf of the tensors it adds.
struct PeftVariant {
    field: &'static str,
    code: Code,
    reason: &'static str,
    /// The last components of its extra tensors (`lora_B.bias`), or none.
    tensors: &'static [&'static str],
}

const VARIANTS: &[PeftVariant] = &[
    PeftVariant {
        field: "lora_bias",
        code: Code::PeftLoraBias,
        reason: "its lora_B has a bias, which mlx-lm's LoRA layers do not",
        tensors: &["lora_B.bias"],
    },
    PeftVariant {
        field: "alora_invocation_tokens",
        code: Code::PeftAlora,
        reason: "aLoRA acts only after its invocation tokens; loaded as plain LoRA it changes \
                 every output",
        tensors: &[],
    },
    PeftVariant {
        field: "use_qalora",
        code: Code::PeftQalora,
        reason: "QALoRA's lora_A reads the input pooled in groups (qalora_group_size), which \
                 mlx-lm's LoRA does not",
        tensors: &[],
    },
    PeftVariant {
        field: "use_bdlora",
        code: Code::PeftBdlora,
        reason: "BD-LoRA stores block-diagonal factors compressed (one block per row group)",
        tensors: &[],
    },
    PeftVariant {
        field: "kasa_config",
        code: Code::PeftKasa,
        reason: "KaSA scales the update by a learned diagonal (lora_diag) and truncated the \
                 base weights when it was made",
        tensors: &["lora_diag"],
    },
    PeftVariant {
        field: "arrow_config",
        code: Code::PeftArrow,
        reason: "Arrow routes each token among task adapters; its own factors are not the update",
        tensors: &[],
    },
    PeftVariant {
        field: "monteclora_config",
        code: Code::PeftMonteclora,
        reason: "MonteCLoRA samples its update from learned distributions",
        tensors: &["lora_monteclora_sampler"],
    },
    PeftVariant {
        field: "velora_config",
        code: Code::PeftVelora,
        reason: "VeLoRA groups the input through an extra embedding (lora_velora_embed)",
        tensors: &["lora_velora_embed"],
    },
];

/// `init_lora_weights` values whose initialisation changed the base weights.
const BASE_CHANGING_INITS: &[(&str, &str)] = &[
    ("pissa", "PiSSA"),
    ("olora", "OLoRA"),
    ("corda", "CorDA"),
    ("loftq", "LoftQ"),
    ("lora_ga", "LoRA-GA"),
];

/// Whether a config field is set: peft writes `null`, `false`, `{}` or `[]` for an unused one.
fn set(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null | Value::Bool(false)) => false,
        Some(Value::Object(m)) => !m.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(_) => true,
    }
}

/// The variant whose extra tensors `name` (without PEFT's prefix) is one of.
pub(crate) fn variant_tensor(name: &str) -> Option<Code> {
    VARIANTS.iter().find_map(|v| {
        v.tensors
            .iter()
            .any(|leaf| {
                name.ends_with(&format!(".{leaf}"))
                    || name.contains(&format!(".{leaf}."))
                    || name == *leaf
            })
            .then_some(v.code)
    })
}

/// The config's variants, and the tensors of variants it does not declare.
pub(crate) fn check_peft_variants(
    c: Option<&AdapterConfig>,
    extras: &[(Code, &str)],
    cx: &mut Ctx<'_>,
) {
    let mut declared = Vec::new();
    if let Some(c) = c {
        for v in VARIANTS.iter().filter(|v| set(c.raw.get(v.field))) {
            declared.push(v.code);
            cx.error(
                v.code,
                None,
                format!(
                    "a PEFT variant an mlx LoRA cannot represent (`{}` is set): {}",
                    v.field, v.reason
                ),
            );
        }
        if let Some(Value::String(init)) = c.raw.get("init_lora_weights") {
            let method = init.split('_').next().unwrap_or(init);
            let known = BASE_CHANGING_INITS
                .iter()
                .find(|(k, _)| init == k || method == *k)
                .map(|(_, name)| *name);
            if let Some(name) = known {
                cx.warn(
                    Code::PeftBaseChangingInit,
                    None,
                    format!(
                        "initialised with {name} (`init_lora_weights: {init}`), which changed the \
                         base weights: the factors reproduce the trained model only on that \
                         modified base, not on the original one"
                    ),
                );
            }
        }
    }
    for v in VARIANTS {
        let mut names = extras
            .iter()
            .filter(|(code, _)| *code == v.code)
            .map(|(_, n)| *n);
        let Some(first) = names.next() else { continue };
        if declared.contains(&v.code) {
            continue;
        }
        cx.error(
            v.code,
            Some(first),
            format!(
                "{} tensors of a PEFT variant an mlx LoRA cannot represent ({}), although the \
                 config does not set `{}`",
                1 + names.count(),
                v.reason,
                v.field
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_count_only_when_set() {
        let v = |t: &str| serde_json::from_str::<Value>(t).unwrap();
        for unset in ["null", "false", "{}", "[]"] {
            assert!(!set(Some(&v(unset))), "{unset}");
        }
        for on in ["true", "[5, 9]", r#"{"beta": 1}"#, "16"] {
            assert!(set(Some(&v(on))), "{on}");
        }
        assert!(!set(None));
    }

    #[test]
    fn extra_tensors_name_their_variant() {
        assert_eq!(
            variant_tensor("model.layers.0.self_attn.q_proj.lora_B.bias"),
            Some(Code::PeftLoraBias)
        );
        assert_eq!(
            variant_tensor("model.layers.0.q_proj.lora_diag"),
            Some(Code::PeftKasa)
        );
        assert_eq!(
            variant_tensor("model.layers.0.q_proj.lora_monteclora_sampler.std_prior"),
            Some(Code::PeftMonteclora)
        );
        assert_eq!(
            variant_tensor("model.layers.0.q_proj.lora_velora_embed"),
            Some(Code::PeftVelora)
        );
        assert_eq!(variant_tensor("model.layers.0.q_proj.bias"), None);
    }
}
