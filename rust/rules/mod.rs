//! Rules that judge an adapter from its tensors and config alone (no base model): the format and
//! fine-tune type, the config against the tensors, tensors that are not LoRA factors, and the
//! shard index against the shards.
//!
//! - [`format`]: the naming convention, and the fine-tune type declared against the one found.
//! - [`tensors`]: tensors that are not LoRA factors (full weights, PEFT extras).
//! - [`mlx_config`]: mlx-lm / mlx-vlm / Unsloth configs against the modules.
//! - [`peft_config`]: PEFT configs against the modules.
//! - [`index`]: a shard index against the headers of its shards.
//!
//! May use: `naming`, `read`, `config`, `infer`, `problem`, `par`.

use crate::config::{AdapterConfig, Schema};
use crate::error::Result;
use crate::infer::{Family, Kind, Module, Variant};
use crate::naming::files::CONFIG_NAME;
use crate::problem::{Code, Problem, Severity};

pub mod format;
pub mod index;
mod mlx_config;
mod peft_config;
mod tensors;

pub use format::Format;
use mlx_config::check_mlx_config;
use peft_config::check_peft_config;
use tensors::check_non_adapter;

pub(crate) struct Ctx<'a> {
    problems: &'a mut Vec<Problem>,
}

impl Ctx<'_> {
    pub(crate) fn error(&mut self, code: Code, path: Option<&str>, message: String) {
        self.problems
            .push(Problem::new(code, Severity::Error, path, message));
    }
    pub(crate) fn warn(&mut self, code: Code, path: Option<&str>, message: String) {
        self.problems
            .push(Problem::new(code, Severity::Warning, path, message));
    }
}

/// Decide the format and fine-tune type, and check the config against the tensors.
pub(crate) fn judge(
    config: Option<&AdapterConfig>,
    config_expected: bool,
    modules: &[Module],
    non_adapter: &[&str],
    families: &[Family],
    problems: &mut Vec<Problem>,
) -> Result<(Format, Option<&'static str>)> {
    let mut cx = Ctx { problems };
    let has_peft = families.iter().any(|f| f.is_peft());
    let has_mlx = families.iter().any(|f| !f.is_peft());
    let schema = config.map_or(Schema::Unknown, |c| c.schema);
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

    let any_dora = modules.iter().any(|m| m.variant == Variant::Dora);
    let inferred = if !modules.is_empty() {
        Some(if any_dora { "dora" } else { "lora" })
    } else if !non_adapter.is_empty() {
        Some("full")
    } else {
        None
    };
    let declared_raw: Option<String> = config.and_then(|c| match c.schema {
        Schema::Mlx => c.fine_tune_type.clone(),
        Schema::MlxLegacy | Schema::Peft => c
            .use_dora
            .map(|d| if d { "dora" } else { "lora" }.into())
            .or_else(|| (c.schema == Schema::Peft).then(|| "lora".to_string())),
        Schema::MlxVlmLegacy => Some("lora".into()),
        Schema::Unknown => c.fine_tune_type.clone(),
    });
    let declared: Option<&'static str> = match declared_raw.as_deref() {
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
    };
    // What a loader will do: the declared type, or mlx-lm's default of lora for its schema.
    let effective = declared.or(match schema {
        Schema::Mlx | Schema::MlxLegacy | Schema::MlxVlmLegacy | Schema::Peft
            if config.is_some() =>
        {
            Some("lora")
        }
        _ => inferred,
    });
    let fine_tune_type = declared.or(inferred);

    if config.is_none() && config_expected {
        cx.warn(
            Code::ConfigMissing,
            None,
            format!("no {CONFIG_NAME}: the scale is unknown and mlx-lm's load_adapters cannot load the adapter"),
        );
    }
    match effective {
        Some("full") if !modules.is_empty() => cx.error(
            Code::FineTuneTypeMismatch,
            None,
            format!("fine_tune_type is full but the adapter holds {} LoRA modules", modules.len()),
        ),
        Some("lora" | "dora") if modules.is_empty() && !non_adapter.is_empty() => cx.error(
            Code::FineTuneTypeMismatch,
            None,
            format!(
                "the config declares {} but the adapter holds no LoRA factors, only {} other tensors",
                effective.unwrap_or(""),
                non_adapter.len()
            ),
        ),
        _ => {}
    }
    if effective == Some("dora") {
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
    } else if effective == Some("lora") {
        for m in modules.iter().filter(|m| m.variant == Variant::Dora) {
            cx.error(
                Code::DoraMagnitudeUnexpected,
                Some(&m.path),
                "the module has a DoRA magnitude but the config declares lora".into(),
            );
        }
    }

    check_non_adapter(config, modules, non_adapter, effective, &mut cx);

    let mut dtypes: Vec<&str> = modules.iter().map(|m| m.dtype).collect();
    dtypes.sort_unstable();
    dtypes.dedup();
    if dtypes.len() > 1 {
        cx.warn(
            Code::MixedDtypes,
            None,
            format!("modules have different dtypes: {}", dtypes.join(", ")),
        );
    }

    if let Some(c) = config {
        if effective != Some("full") {
            match c.schema {
                Schema::Mlx | Schema::MlxLegacy | Schema::MlxVlmLegacy | Schema::Unknown => {
                    check_mlx_config(c, modules, &mut cx);
                }
                Schema::Peft => check_peft_config(c, modules, &mut cx)?,
            }
        }
    }
    Ok((format, fine_tune_type))
}

pub(crate) fn check_rank(cx: &mut Ctx<'_>, m: &Module, expected: u64, source: &str) {
    if let Some(r) = m.rank {
        if r != expected {
            cx.error(
                Code::ConfigRankMismatch,
                Some(&m.path),
                format!("the tensors have rank {r}, {source} says {expected}"),
            );
        }
    }
}
