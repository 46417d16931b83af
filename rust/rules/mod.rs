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
//! May use: `error`, `naming`, `read`, `config`, `infer`, `problem`, `par`.

use crate::config::{AdapterConfig, Schema};
use crate::error::Result;
use crate::infer::{Family, Module};
use crate::naming::files::CONFIG_NAME;
use crate::naming::leaves::PEFT_PREFIX;
use crate::problem::{Code, Problem, Severity};

pub mod format;
pub mod index;
mod mlx_config;
mod peft_config;
mod peft_variants;
pub mod save_id;
mod tensors;

pub use format::Format;
use format::{decide_format, FineTune};
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
    let schema = config.map_or(Schema::Unknown, |c| c.schema);
    let format = decide_format(schema, families, &mut cx);
    let fine_tune = FineTune::decide(config, modules, non_adapter, &mut cx);
    if config.is_none() && config_expected {
        cx.warn(
            Code::ConfigMissing,
            None,
            format!("no {CONFIG_NAME}: the scale is unknown and mlx-lm's load_adapters cannot load the adapter"),
        );
    }
    fine_tune.check_tensors(modules, non_adapter, &mut cx);
    fine_tune.check_magnitudes(modules, &mut cx);
    check_non_adapter(config, modules, non_adapter, fine_tune.effective, &mut cx);
    let extras: Vec<(Code, &str)> = non_adapter
        .iter()
        .map(|n| n.strip_prefix(PEFT_PREFIX).unwrap_or(n))
        .filter_map(|n| peft_variants::variant_tensor(n).map(|code| (code, n)))
        .collect();
    let peft_config = config.filter(|c| c.schema == Schema::Peft);
    peft_variants::check_peft_variants(peft_config, &extras, &mut cx);
    check_dtypes(modules, &mut cx);
    if let Some(c) = config {
        if fine_tune.effective != Some("full") {
            check_config(c, modules, &mut cx)?;
        }
    }
    Ok((format, fine_tune.reported))
}

/// The config against the modules, by the rules of its schema.
fn check_config(c: &AdapterConfig, modules: &[Module], cx: &mut Ctx<'_>) -> Result<()> {
    match c.schema {
        Schema::Mlx | Schema::MlxLegacy | Schema::MlxVlmLegacy | Schema::Unknown => {
            check_mlx_config(c, modules, cx);
        }
        Schema::Peft => check_peft_config(c, modules, cx)?,
    }
    Ok(())
}

/// Modules of different dtypes.
fn check_dtypes(modules: &[Module], cx: &mut Ctx<'_>) {
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
