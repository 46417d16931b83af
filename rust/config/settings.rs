//! The scale and dropout a config gives each module: the one reading of every producer's
//! per-module fields, which loaders, `repair` and `convert` all ask for.
//!
//! - mlx-lm, mlx-vlm and Unsloth configs: `adapterscan.modules.<path>.scale` (a number, or one
//!   per output feature), else Unsloth's `unsloth_mlx_lora_module_scales.<path>`, else
//!   `lora_parameters.scale`, else the top-level `scale`; mlx-vlm's legacy `{rank, alpha,
//!   dropout}` config: alpha / rank, as mlx-vlm reads it; dropout from `adapterscan.modules.<path>.dropout`, else
//!   `lora_parameters.dropout`, else the top-level `dropout`, else 0.
//! - PEFT: `alpha / r` (`alpha / sqrt(r)` with `use_rslora`), `alpha` from the first
//!   `alpha_pattern` key that matches (peft's rule), else `lora_alpha`, else peft's default of 8;
//!   `r` is the module's rank; dropout from `lora_dropout`, else 0.
//!
//! May use: `error`, `config` (the typed config).

use serde_json::{Map, Value};

use crate::config::{describe, number_of, peft_pattern, AdapterConfig, Schema};
use crate::error::{Result, ScanError};

/// peft's `lora_alpha` default.
pub const PEFT_DEFAULT_ALPHA: f64 = 8.0;

/// mlx-vlm's legacy `{rank, alpha}` config: its `LoRaLayer` scales by alpha / rank.
fn legacy_vlm_scale(c: &AdapterConfig) -> Option<f64> {
    let rank = c.top_rank.filter(|&r| r > 0)?;
    #[allow(clippy::cast_precision_loss)] // ranks are far below 2^52
    c.alpha.map(|a| a / rank as f64)
}

/// A module's scale.
#[derive(Debug, Clone, PartialEq)]
pub enum Scale {
    /// One scale for the module.
    One(f64),
    /// One scale per output feature.
    PerOutput(Vec<f64>),
}

/// What a config says of one module.
#[derive(Debug, Clone, PartialEq)]
pub struct ModuleSettings {
    /// Its scale, if the config records one.
    pub scale: Option<Scale>,
    /// Its dropout probability.
    pub dropout: f64,
}

/// What peft gives a module of rank `rank` when there is no config at all: its default
/// `lora_alpha` over the rank, no dropout.
pub fn peft_defaults(rank: Option<u64>) -> ModuleSettings {
    #[allow(clippy::cast_precision_loss)] // ranks are far below 2^52
    let scale = rank
        .filter(|&r| r > 0)
        .map(|r| Scale::One(PEFT_DEFAULT_ALPHA / r as f64));
    ModuleSettings {
        scale,
        dropout: 0.0,
    }
}

/// The per-module settings of one config, its patterns compiled once.
pub struct Settings<'c> {
    config: &'c AdapterConfig,
    /// `adapterscan.modules`, when it is an object.
    modules: Option<&'c Map<String, Value>>,
    /// PEFT `alpha_pattern`, compiled, in file order.
    alpha_pattern: Vec<(regex::Regex, f64)>,
}

impl<'c> Settings<'c> {
    /// The settings of `config` (a PEFT pattern that is not a regular expression is an error).
    pub fn new(config: &'c AdapterConfig) -> Result<Self> {
        let modules = config
            .raw
            .get("adapterscan")
            .and_then(|v| v.get("modules"))
            .and_then(Value::as_object);
        let alpha_pattern = if config.schema == Schema::Peft {
            config
                .alpha_pattern
                .iter()
                .map(|(k, v)| peft_pattern(&config.path, "alpha_pattern", k).map(|re| (re, *v)))
                .collect::<Result<Vec<_>>>()?
        } else {
            Vec::new()
        };
        Ok(Self {
            config,
            modules,
            alpha_pattern,
        })
    }

    /// The settings of the module at `path`, whose tensors have rank `rank`.
    pub fn of(&self, path: &str, rank: Option<u64>) -> Result<ModuleSettings> {
        if self.config.schema == Schema::Peft {
            Ok(self.peft(path, rank))
        } else {
            self.mlx(path)
        }
    }

    fn peft(&self, path: &str, rank: Option<u64>) -> ModuleSettings {
        let c = self.config;
        let alpha = self
            .alpha_pattern
            .iter()
            .find(|(re, _)| re.is_match(path))
            .map(|(_, a)| *a)
            .or(c.peft_alpha)
            .unwrap_or(PEFT_DEFAULT_ALPHA);
        let scale = rank.filter(|&r| r > 0).map(|r| {
            #[allow(clippy::cast_precision_loss)] // ranks are far below 2^52
            let r = r as f64;
            Scale::One(alpha / if c.use_rslora { r.sqrt() } else { r })
        });
        ModuleSettings {
            scale,
            dropout: c.dropout.unwrap_or(0.0),
        }
    }

    fn mlx(&self, path: &str) -> Result<ModuleSettings> {
        let c = self.config;
        let entry = match self.modules.and_then(|m| m.get(path)) {
            None => None,
            Some(Value::Object(e)) => Some(e),
            Some(other) => {
                return Err(self.err(path, "", "an object", other));
            }
        };
        let own = |field: &str| entry.and_then(|e| e.get(field)).filter(|v| !v.is_null());
        let scale = match own("scale") {
            Some(v) => Some(self.scale_of(path, v)?),
            None => c
                .module_scales
                .iter()
                .rev()
                .find(|(p, _)| p == path)
                .map(|(_, s)| *s)
                .or(c.scale)
                .or(if c.schema == Schema::MlxVlmLegacy {
                    legacy_vlm_scale(c)
                } else {
                    c.top_scale
                })
                .map(Scale::One),
        };
        let dropout = match own("dropout") {
            Some(v) => number_of(v).ok_or_else(|| self.err(path, ".dropout", "a number", v))?,
            None => c.dropout.unwrap_or(0.0),
        };
        Ok(ModuleSettings { scale, dropout })
    }

    fn scale_of(&self, path: &str, v: &Value) -> Result<Scale> {
        if let Some(s) = number_of(v) {
            return Ok(Scale::One(s));
        }
        v.as_array()
            .and_then(|items| items.iter().map(number_of).collect::<Option<Vec<f64>>>())
            .filter(|items| !items.is_empty())
            .map(Scale::PerOutput)
            .ok_or_else(|| self.err(path, ".scale", "a number or a list of numbers", v))
    }

    fn err(&self, path: &str, field: &str, expected: &str, found: &Value) -> ScanError {
        let name = format!("adapterscan.modules.{path}{field}");
        ScanError::Config {
            path: self.config.path.clone(),
            message: format!("`{name}` must be {expected}, found {}", describe(found)),
            field: Some(name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_config;
    use std::path::Path;

    fn settings(text: &str, path: &str, rank: Option<u64>) -> Result<ModuleSettings> {
        let c = parse_config(Path::new("adapter_config.json"), text.as_bytes())?;
        Settings::new(&c)?.of(path, rank)
    }

    #[test]
    fn mlx_per_module_entries_win_then_unsloth_then_global() {
        let text = r#"{"fine_tune_type":"lora","num_layers":2,"scale":3.0,
            "lora_parameters":{"rank":8,"scale":20.0,"dropout":0.1},
            "unsloth_mlx_lora_module_scales":{"a":5.0,"b":6.0},
            "adapterscan":{"modules":{"a":{"scale":[1.0,2.0],"dropout":0.3},"c":{"rank":8}}}}"#;
        let a = settings(text, "a", Some(8)).unwrap();
        assert_eq!(a.scale, Some(Scale::PerOutput(vec![1.0, 2.0])));
        assert!((a.dropout - 0.3).abs() < 1e-12);
        let b = settings(text, "b", Some(8)).unwrap();
        assert_eq!(b.scale, Some(Scale::One(6.0)));
        assert!((b.dropout - 0.1).abs() < 1e-12);
        assert_eq!(
            settings(text, "c", None).unwrap().scale,
            Some(Scale::One(20.0))
        );
        // The top-level scale stands in for a missing lora_parameters.scale...
        let top =
            r#"{"fine_tune_type":"lora","num_layers":2,"scale":3.0,"lora_parameters":{"rank":8}}"#;
        assert_eq!(
            settings(top, "x", None).unwrap().scale,
            Some(Scale::One(3.0))
        );
        assert!(settings(top, "x", None).unwrap().dropout.abs() < 1e-12);
        // mlx-vlm's legacy config: alpha / rank, as its LoRaLayer scales.
        let vlm = r#"{"rank":8,"alpha":16,"dropout":0.1}"#;
        assert_eq!(
            settings(vlm, "x", None).unwrap().scale,
            Some(Scale::One(2.0))
        );
        let none = r#"{"fine_tune_type":"lora","num_layers":2,"lora_parameters":{"rank":8}}"#;
        assert_eq!(settings(none, "x", None).unwrap().scale, None);
    }

    #[test]
    fn mlx_entries_of_the_wrong_type_are_config_errors() {
        // A module entry that is not an object fails already when the config is read.
        for (entry, field) in [
            (r#""no""#, "adapterscan.modules.a"),
            (r#"{"scale":"big"}"#, "adapterscan.modules.a.scale"),
            (r#"{"scale":[]}"#, "adapterscan.modules.a.scale"),
            (r#"{"dropout":[0.1]}"#, "adapterscan.modules.a.dropout"),
        ] {
            let text = format!(
                r#"{{"fine_tune_type":"lora","num_layers":2,"lora_parameters":{{"rank":8,"scale":1.0}},"adapterscan":{{"modules":{{"a":{entry}}}}}}}"#
            );
            let err = settings(&text, "a", Some(8)).unwrap_err();
            assert_eq!(err.code(), "invalid_config", "{entry}");
            assert!(err.to_string().contains(field), "{err}");
        }
    }

    #[test]
    fn peft_alpha_by_first_match_over_rank_or_sqrt_rank() {
        let text = r#"{"peft_type":"LORA","r":8,"lora_alpha":16,"lora_dropout":0.05,
            "alpha_pattern":{"q_proj":4,"layers.0.self_attn.q_proj":100}}"#;
        // peft's rule: the first key that matches wins, even when a later one is more specific.
        let q = settings(text, "model.layers.0.self_attn.q_proj", Some(8)).unwrap();
        assert_eq!(q.scale, Some(Scale::One(0.5)));
        assert!((q.dropout - 0.05).abs() < 1e-12);
        let v = settings(text, "model.layers.0.self_attn.v_proj", Some(4)).unwrap();
        assert_eq!(v.scale, Some(Scale::One(4.0)));
        // `xq_proj` does not end with the key at a component boundary.
        let xq = settings(text, "model.layers.0.self_attn.xq_proj", Some(8)).unwrap();
        assert_eq!(xq.scale, Some(Scale::One(2.0)));
        let rs = r#"{"peft_type":"LORA","r":16,"lora_alpha":8,"use_rslora":true}"#;
        assert_eq!(
            settings(rs, "x", Some(16)).unwrap().scale,
            Some(Scale::One(2.0))
        );
        let default = r#"{"peft_type":"LORA","r":4}"#;
        assert_eq!(
            settings(default, "x", Some(4)).unwrap().scale,
            Some(Scale::One(2.0))
        );
        assert_eq!(settings(default, "x", None).unwrap().scale, None);
    }
}
