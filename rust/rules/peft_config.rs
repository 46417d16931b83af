//! PEFT configs against the modules: `r`/`lora_alpha`, `rank_pattern`, `target_modules` and
//! `layers_to_transform`.
//!
//! May use: `error`, `naming`, `config`, `infer`, `rules` (the context).

use crate::config::{peft_pattern, AdapterConfig, PeftRanks, TargetModules};
use crate::error::{Result, ScanError};
use crate::infer::{Kind, Module};
use crate::naming::experts::grouped;
use crate::naming::layout::Layout;
use crate::naming::paths::{key_covers, layer_index};
use crate::problem::Code;
use crate::rules::{check_rank, Ctx};

pub(crate) fn check_peft_config(
    c: &AdapterConfig,
    modules: &[Module],
    cx: &mut Ctx<'_>,
) -> Result<()> {
    if modules.is_empty() {
        return Ok(());
    }
    if c.peft_r.is_none() {
        cx.error(
            Code::ConfigFieldMissing,
            None,
            "no `r` in the PEFT config".into(),
        );
    }
    if c.peft_alpha.is_none() {
        cx.warn(
            Code::ConfigScaleMissing,
            None,
            "no `lora_alpha` in the PEFT config: peft would use its default of 8".into(),
        );
    }
    let ranks = PeftRanks::new(c)?;
    for (k, _) in &c.alpha_pattern {
        peft_pattern(&c.path, "alpha_pattern", k)?;
    }
    let target_regex = match &c.target_modules {
        Some(TargetModules::Regex(r)) => Some(regex::Regex::new(&format!("^(?:{r})$")).map_err(
            |e| ScanError::Config {
                path: c.path.clone(),
                field: Some("target_modules".into()),
                message: format!("`target_modules` is not a valid regular expression: {e}"),
            },
        )?),
        _ => None,
    };
    for m in modules {
        if m.layout == Layout::PeftParamWrapper {
            continue;
        }
        let expected = ranks.rank(&m.path);
        if let Some(r) = expected {
            check_rank(cx, m, r, "the PEFT config (r / rank_pattern)");
        }
        let targeted = match (&c.target_modules, &target_regex) {
            (Some(TargetModules::Names(names)), _) => names
                .iter()
                .any(|t| key_covers(t, &m.path) || key_covers(&grouped(t), &m.path)),
            (_, Some(re)) => re.is_match(&m.path) || m.kind == Kind::Switch,
            _ => true,
        };
        if !targeted {
            cx.error(
                Code::ModuleNotTargeted,
                Some(&m.path),
                "the adapter saves this module but PEFT target_modules does not name it".into(),
            );
        }
        if let (Some(allowed), Some(layer)) = (&c.layers_to_transform, layer_index(&m.path)) {
            if !allowed.contains(&layer) {
                cx.error(
                    Code::ModuleOutsideLayers,
                    Some(&m.path),
                    format!("layer {layer} is not in layers_to_transform"),
                );
            }
        }
    }
    if let Some(TargetModules::Names(names)) = &c.target_modules {
        for t in names {
            let g = grouped(t);
            if !modules
                .iter()
                .any(|m| key_covers(t, &m.path) || key_covers(&g, &m.path))
            {
                cx.warn(
                    Code::TargetUnmatched,
                    Some(t),
                    format!("PEFT target_modules names `{t}` but no saved module matches it"),
                );
            }
        }
    }
    Ok(())
}
