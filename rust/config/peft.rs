//! PEFT's fields of `adapter_config.json` (`target_modules`, `layers_to_transform`, `r`,
//! `lora_alpha`, the patterns, `modules_to_save`, `target_parameters`), and peft's first-match rule
//! for `rank_pattern` and `alpha_pattern` keys.
//!
//! May use: `error`, `config` (the typed config and its field reader).

use std::path::Path;

use serde_json::Value;

use crate::config::{number_of, AdapterConfig, Fields, Schema, TargetModules};
use crate::error::{Result, ScanError};

/// Which modules and layers PEFT adapts.
pub(super) struct Targets {
    pub(super) target_modules: Option<TargetModules>,
    pub(super) layers_to_transform: Option<Vec<u64>>,
}

impl Targets {
    pub(super) fn read(top: &Fields<'_>) -> Result<Self> {
        let target_modules = match top.get("target_modules") {
            None => None,
            Some(Value::String(s)) => Some(TargetModules::Regex(s.clone())),
            Some(_) => top.string_list("target_modules")?.map(TargetModules::Names),
        };
        let layers_to_transform = match top.get("layers_to_transform") {
            None => None,
            Some(v) if v.is_u64() => v.as_u64().map(|n| vec![n]),
            Some(_) => Some(
                top.get("layers_to_transform")
                    .and_then(Value::as_array)
                    .and_then(|a| a.iter().map(Value::as_u64).collect::<Option<Vec<_>>>())
                    .ok_or_else(|| {
                        top.err(
                            "layers_to_transform",
                            "an integer or a list of integers",
                            top.get("layers_to_transform").unwrap_or(&Value::Null),
                        )
                    })?,
            ),
        };
        Ok(Self {
            target_modules,
            layers_to_transform,
        })
    }
}

/// PEFT's ranks, alphas and saved extras.
pub(super) struct Values {
    pub(super) r: Option<u64>,
    pub(super) alpha: Option<f64>,
    pub(super) use_rslora: bool,
    pub(super) rank_pattern: Vec<(String, u64)>,
    pub(super) alpha_pattern: Vec<(String, f64)>,
    pub(super) modules_to_save: Vec<String>,
    pub(super) target_parameters: Vec<String>,
}

impl Values {
    pub(super) fn read(top: &Fields<'_>, schema: Schema) -> Result<Self> {
        Ok(Self {
            r: if schema == Schema::Peft {
                top.uint("r")?
            } else {
                None
            },
            alpha: top.number("lora_alpha")?,
            use_rslora: top.boolean("use_rslora")?.unwrap_or(false),
            rank_pattern: top.map_of("rank_pattern", "integers", Value::as_u64)?,
            alpha_pattern: top.map_of("alpha_pattern", "numbers", number_of)?,
            modules_to_save: top.string_list("modules_to_save")?.unwrap_or_default(),
            target_parameters: top.string_list("target_parameters")?.unwrap_or_default(),
        })
    }
}

/// PEFT's rank for a module or parameter path: the first `rank_pattern` key that matches (peft's
/// rule), else `r`.
pub struct PeftRanks {
    patterns: Vec<(regex::Regex, u64)>,
    r: Option<u64>,
}

impl PeftRanks {
    /// The config's patterns, compiled (a key that is not a regular expression is an error).
    pub fn new(c: &AdapterConfig) -> Result<Self> {
        Ok(Self {
            patterns: c
                .rank_pattern
                .iter()
                .map(|(k, v)| peft_pattern(&c.path, "rank_pattern", k).map(|re| (re, *v)))
                .collect::<Result<Vec<_>>>()?,
            r: c.peft_r,
        })
    }

    /// The rank of the first `rank_pattern` key matching `path`.
    pub fn from_pattern(&self, path: &str) -> Option<u64> {
        self.patterns
            .iter()
            .find(|(re, _)| re.is_match(path))
            .map(|(_, r)| *r)
    }

    /// The rank peft gives `path`.
    pub fn rank(&self, path: &str) -> Option<u64> {
        self.from_pattern(path).or(self.r)
    }
}

/// Compile a PEFT pattern key with peft's matching rule: `(.*\.)?(key)$` from the start.
pub fn peft_pattern(path: &Path, field: &str, key: &str) -> Result<regex::Regex> {
    regex::Regex::new(&format!(r"^(?:.*\.)?(?:{key})$")).map_err(|e| ScanError::Config {
        path: path.to_path_buf(),
        field: Some(format!("{field}.{key}")),
        message: format!("`{field}` key `{key}` is not a valid regular expression: {e}"),
    })
}
