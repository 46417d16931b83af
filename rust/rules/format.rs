//! The adapter's naming convention, and the fine-tune type its config declares against the one its
//! tensors show.
//!
//! May use: `config`, `infer`, `problem`, `rules` (the context).

use serde::Serialize;

use crate::config::{AdapterConfig, Schema};
use crate::infer::{Family, Kind, Module, Variant};
use crate::problem::Code;
use crate::rules::Ctx;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// mlx-lm / mlx-vlm / Unsloth naming.
    Mlx,
    /// Hugging Face PEFT naming.
    Peft,
    /// Neither, or both.
    Unknown,
}

impl Format {
    /// Stable name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Mlx => "mlx",
            Self::Peft => "peft",
            Self::Unknown => "unknown",
        }
    }
}

/// The format the factors' names show (the config's schema when there are none), with an error for
/// names of both formats and for a config whose schema the names contradict.
pub(crate) fn decide_format(schema: Schema, families: &[Family], cx: &mut Ctx<'_>) -> Format {
    let has_peft = families.iter().any(|f| f.is_peft());
    let has_mlx = families.iter().any(|f| !f.is_peft());
    let format = match (has_peft, has_mlx) {
        (true, true) => {
            cx.error(
                Code::MixedFormats,
                None,
                "the adapter mixes PEFT names (lora_A/lora_B) with mlx names (lora_a/lora_b)"
                    .into(),
            );
            Format::Unknown
        }
        (true, false) => Format::Peft,
        (false, true) => Format::Mlx,
        (false, false) => match schema {
            Schema::Peft => Format::Peft,
            Schema::Mlx | Schema::MlxLegacy | Schema::MlxVlmLegacy => Format::Mlx,
            Schema::Unknown => Format::Unknown,
        },
    };
    if (schema == Schema::Peft && has_mlx && !has_peft)
        || (matches!(schema, Schema::Mlx | Schema::MlxLegacy) && has_peft && !has_mlx)
    {
        cx.error(
            Code::MixedFormats,
            None,
            format!(
                "the config follows the {} schema but the tensors use {} names",
                schema.name(),
                if has_peft { "PEFT" } else { "mlx" }
            ),
        );
    }
    format
}

/// The fine-tune type (`lora`, `dora` or `full`) as the config declares it and the tensors show it.
pub(crate) struct FineTune {
    /// The type reported: the declared one, else the one the tensors show.
    pub(crate) reported: Option<&'static str>,
    /// What a loader will do: the declared type, or mlx-lm's default of lora for its schema.
    pub(crate) effective: Option<&'static str>,
    /// Why `effective` is what it is, for messages: the config declares it, or a loader takes
    /// it as its default (and what the config says instead, if anything).
    pub(crate) source: &'static str,
}

impl FineTune {
    /// Decide the type; a declared type that is none of the three is a warning.
    pub(crate) fn decide(
        config: Option<&AdapterConfig>,
        modules: &[Module],
        non_adapter: &[&str],
        cx: &mut Ctx<'_>,
    ) -> Self {
        let inferred = inferred_type(modules, non_adapter);
        let declared = declared_type(config, cx);
        let schema = config.map_or(Schema::Unknown, |c| c.schema);
        let effective = declared.or(match schema {
            Schema::Mlx | Schema::MlxLegacy | Schema::MlxVlmLegacy | Schema::Peft
                if config.is_some() =>
            {
                Some("lora")
            }
            _ => inferred,
        });
        let lp_dora = config
            .and_then(|c| c.raw.get("lora_parameters"))
            .and_then(|lp| lp.get("use_dora"))
            .and_then(serde_json::Value::as_bool)
            == Some(true);
        let source = match (declared, config) {
            (Some(_), _) => "the config declares",
            (None, Some(_)) if lp_dora => {
                "the config has no fine_tune_type (mlx-lm-lora's `lora_parameters.use_dora: true` \
                 says DoRA, but mlx-lm does not read it), so mlx-lm takes"
            }
            (None, Some(_)) => "the config has no fine_tune_type, so mlx-lm takes",
            (None, None) => "the tensors show",
        };
        Self {
            reported: declared.or(inferred),
            effective,
            source,
        }
    }

    /// The effective type against the tensors: LoRA modules under `full`, no factors under
    /// `lora`/`dora`.
    pub(crate) fn check_tensors(&self, modules: &[Module], non_adapter: &[&str], cx: &mut Ctx<'_>) {
        let effective = self.effective;
        match effective {
            Some("full") if !modules.is_empty() => cx.error(
                Code::FineTuneTypeMismatch,
                None,
                format!(
                    "fine_tune_type is full but the adapter holds {} LoRA modules",
                    modules.len()
                ),
            ),
            Some("lora" | "dora") if modules.is_empty() && !non_adapter.is_empty() => cx.error(
                Code::FineTuneTypeMismatch,
                None,
                format!(
                    "{} {} but the adapter holds no LoRA factors, only {} other tensors",
                    self.source,
                    effective.unwrap_or(""),
                    non_adapter.len()
                ),
            ),
            _ => {}
        }
    }

    /// DoRA magnitudes against the effective type: missing under `dora`, unexpected under `lora`.
    pub(crate) fn check_magnitudes(&self, modules: &[Module], cx: &mut Ctx<'_>) {
        if self.effective == Some("dora") {
            for m in modules
                .iter()
                .filter(|m| m.variant == Variant::Lora && m.kind != Kind::Switch)
            {
                cx.error(
                    Code::DoraMagnitudeMissing,
                    Some(&m.path),
                    "fine_tune_type is dora but the module has no magnitude `m`; a loader would use the base norm silently".into(),
                );
            }
        } else if self.effective == Some("lora") {
            for m in modules.iter().filter(|m| m.variant == Variant::Dora) {
                cx.error(
                    Code::DoraMagnitudeUnexpected,
                    Some(&m.path),
                    format!(
                        "the module has a DoRA magnitude but {} lora (adapterscan repair writes \
                         fine_tune_type from the tensors)",
                        self.source
                    ),
                );
            }
        }
    }
}

/// The type the tensors show: dora or lora by the factors, full for other tensors alone.
fn inferred_type(modules: &[Module], non_adapter: &[&str]) -> Option<&'static str> {
    let any_dora = modules.iter().any(|m| m.variant == Variant::Dora);
    if !modules.is_empty() {
        Some(if any_dora { "dora" } else { "lora" })
    } else if !non_adapter.is_empty() {
        Some("full")
    } else {
        None
    }
}

/// The type the config declares in its schema's way, warning of one that is none of the three.
fn declared_type(config: Option<&AdapterConfig>, cx: &mut Ctx<'_>) -> Option<&'static str> {
    let declared_raw: Option<String> = config.and_then(|c| match c.schema {
        Schema::Mlx => c.fine_tune_type.clone(),
        Schema::MlxLegacy | Schema::Peft => c
            .use_dora
            .map(|d| if d { "dora" } else { "lora" }.into())
            .or_else(|| (c.schema == Schema::Peft).then(|| "lora".to_string())),
        Schema::MlxVlmLegacy => Some("lora".into()),
        Schema::Unknown => c.fine_tune_type.clone(),
    });
    match declared_raw.as_deref() {
        Some("lora") => Some("lora"),
        Some("dora") => Some("dora"),
        Some("full") => Some("full"),
        Some(other) => {
            cx.warn(
                Code::FineTuneTypeUnknown,
                None,
                format!("fine_tune_type `{other}` is not lora, dora or full; mlx-lm silently treats it as lora"),
            );
            None
        }
        None => None,
    }
}
