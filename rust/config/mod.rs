//! `adapter_config.json`: the schemas real producers write, read with their types checked.
//!
//! Recognised: mlx-lm (current and the pre-0.19 `lora_layers`/`use_dora` form), Unsloth's mlx-lm
//! superset, mlx-vlm (legacy flat `rank`/`alpha` and the mlx-lm form) and PEFT. A known field of the
//! wrong type is an error (`ScanError::Config`); semantic disagreements with the tensors are
//! reported later as problems.
//!
//! `peft.rs` reads PEFT's own fields and holds peft's first-match rule for pattern keys
//! ([`PeftRanks`], [`peft_pattern`]); [`settings`] gives each module's scale and dropout.
//!
//! May use: `error`.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::{Result, ScanError};

mod peft;
pub mod settings;

pub use peft::{peft_pattern, PeftRanks};

/// Which producer's schema a config follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schema {
    /// mlx-lm (>= 0.19) and tools writing its schema (mlx-vlm >= 0.6, Unsloth, adapterscan).
    Mlx,
    /// mlx-lm before 0.19: `lora_layers`, `use_dora`, no `fine_tune_type`.
    MlxLegacy,
    /// mlx-vlm before 0.6: flat `rank`, `alpha`, `dropout`.
    MlxVlmLegacy,
    /// Hugging Face PEFT.
    Peft,
    /// Nothing recognisable.
    Unknown,
}

impl Schema {
    /// Stable name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Mlx => "mlx",
            Self::MlxLegacy => "mlx_legacy",
            Self::MlxVlmLegacy => "mlx_vlm_legacy",
            Self::Peft => "peft",
            Self::Unknown => "unknown",
        }
    }
}

/// A typed view of an adapter config. Absent and `null` fields are `None`.
#[derive(Debug, Clone)]
pub struct AdapterConfig {
    /// The file.
    pub path: PathBuf,
    /// The whole JSON object, key order kept.
    pub raw: Value,
    /// The schema it follows.
    pub schema: Schema,
    /// `fine_tune_type` as written.
    pub fine_tune_type: Option<String>,
    /// `num_layers` (mlx-lm) or `lora_layers` (legacy).
    pub num_layers: Option<i64>,
    /// `lora_parameters` is present (as an object).
    pub has_lora_parameters: bool,
    /// `lora_parameters.rank`.
    pub rank: Option<u64>,
    /// Top-level `rank` (Unsloth mirror, mlx-vlm legacy).
    pub top_rank: Option<u64>,
    /// `lora_parameters.scale`.
    pub scale: Option<f64>,
    /// Top-level `scale`.
    pub top_scale: Option<f64>,
    /// `lora_parameters.alpha` or top-level `alpha` (mlx-vlm legacy; wrong for mlx-lm).
    pub alpha: Option<f64>,
    /// `lora_parameters.dropout` (or PEFT `lora_dropout`).
    pub dropout: Option<f64>,
    /// `lora_parameters.keys`.
    pub keys: Option<Vec<String>>,
    /// Unsloth's `unsloth_mlx_lora_module_paths`, normalised to a list.
    pub module_paths: Option<Vec<String>>,
    /// Per-module ranks (Unsloth `unsloth_mlx_lora_module_ranks`), in file order.
    pub module_ranks: Vec<(String, u64)>,
    /// Per-module scales (Unsloth `unsloth_mlx_lora_module_scales`), in file order.
    pub module_scales: Vec<(String, f64)>,
    /// `use_dora` (legacy mlx-lm, PEFT).
    pub use_dora: Option<bool>,
    /// PEFT `r`.
    pub peft_r: Option<u64>,
    /// PEFT `lora_alpha`.
    pub peft_alpha: Option<f64>,
    /// PEFT `use_rslora`.
    pub use_rslora: bool,
    /// PEFT `target_modules`.
    pub target_modules: Option<TargetModules>,
    /// PEFT `rank_pattern`, in file order (the first match wins).
    pub rank_pattern: Vec<(String, u64)>,
    /// PEFT `alpha_pattern`, in file order.
    pub alpha_pattern: Vec<(String, f64)>,
    /// PEFT `layers_to_transform`.
    pub layers_to_transform: Option<Vec<u64>>,
    /// PEFT `modules_to_save`.
    pub modules_to_save: Vec<String>,
    /// PEFT `target_parameters`.
    pub target_parameters: Vec<String>,
    /// Full (non-LoRA) tensors the adapter declares it carries (`adapterscan.full_tensors`,
    /// written by `save_trainable_adapters`).
    pub full_tensors: Vec<String>,
}

/// PEFT `target_modules`: a list of names, or one regular expression matched against the whole path.
#[derive(Debug, Clone, PartialEq)]
pub enum TargetModules {
    /// Names matched as the last components of a module path.
    Names(Vec<String>),
    /// A regex (`re.fullmatch`).
    Regex(String),
}

struct Fields<'a> {
    path: &'a Path,
    obj: &'a Map<String, Value>,
    prefix: &'static str,
}

impl<'a> Fields<'a> {
    fn err(&self, field: &str, expected: &str, found: &Value) -> ScanError {
        let name = format!("{}{field}", self.prefix);
        ScanError::Config {
            path: self.path.to_path_buf(),
            message: format!("`{name}` must be {expected}, found {}", describe(found)),
            field: Some(name),
        }
    }

    fn get(&self, field: &str) -> Option<&'a Value> {
        self.obj.get(field).filter(|v| !v.is_null())
    }

    /// The fields of the object at `field`, named with `prefix` (`empty` when it is absent).
    fn nested(
        &self,
        field: &str,
        prefix: &'static str,
        empty: &'a Map<String, Value>,
    ) -> Result<Fields<'a>> {
        let obj = match self.get(field) {
            None => empty,
            Some(Value::Object(m)) => m,
            Some(v) => return Err(self.err(field, "an object", v)),
        };
        Ok(Fields {
            path: self.path,
            obj,
            prefix,
        })
    }

    fn uint(&self, field: &str) -> Result<Option<u64>> {
        self.get(field)
            .map(|v| {
                v.as_u64()
                    .ok_or_else(|| self.err(field, "a non-negative integer", v))
            })
            .transpose()
    }

    fn int(&self, field: &str) -> Result<Option<i64>> {
        self.get(field)
            .map(|v| v.as_i64().ok_or_else(|| self.err(field, "an integer", v)))
            .transpose()
    }

    fn number(&self, field: &str) -> Result<Option<f64>> {
        self.get(field)
            .map(|v| number_of(v).ok_or_else(|| self.err(field, "a number", v)))
            .transpose()
    }

    fn boolean(&self, field: &str) -> Result<Option<bool>> {
        self.get(field)
            .map(|v| {
                v.as_bool()
                    .ok_or_else(|| self.err(field, "true or false", v))
            })
            .transpose()
    }

    fn string(&self, field: &str) -> Result<Option<String>> {
        self.get(field)
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| self.err(field, "a string", v))
            })
            .transpose()
    }

    fn string_list(&self, field: &str) -> Result<Option<Vec<String>>> {
        let Some(v) = self.get(field) else {
            return Ok(None);
        };
        let Value::Array(items) = v else {
            return Err(self.err(field, "a list of strings", v));
        };
        items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| self.err(field, "a list of strings", v))
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    /// A list of module paths written as a string, a list, or a dict whose values are paths.
    fn path_list(&self, field: &str) -> Result<Option<Vec<String>>> {
        let Some(v) = self.get(field) else {
            return Ok(None);
        };
        let mut out = Vec::new();
        let bad = || self.err(field, "a path, a list of paths or a dict of paths", v);
        let mut push = |item: &Value| -> Result<()> {
            match item {
                Value::String(s) if !s.is_empty() => out.push(s.clone()),
                Value::String(_) | Value::Null => {}
                _ => return Err(bad()),
            }
            Ok(())
        };
        match v {
            Value::String(_) => push(v)?,
            Value::Array(items) => {
                for i in items {
                    push(i)?;
                }
            }
            Value::Object(m) => {
                for i in m.values() {
                    match i {
                        Value::Array(items) => {
                            for j in items {
                                push(j)?;
                            }
                        }
                        other => push(other)?,
                    }
                }
            }
            _ => return Err(bad()),
        }
        Ok(Some(out))
    }

    fn map_of<T>(
        &self,
        field: &str,
        expected: &str,
        conv: impl Fn(&Value) -> Option<T>,
    ) -> Result<Vec<(String, T)>> {
        let Some(v) = self.get(field) else {
            return Ok(Vec::new());
        };
        let Value::Object(m) = v else {
            return Err(self.err(field, &format!("an object of {expected}"), v));
        };
        m.iter()
            .map(|(k, val)| {
                conv(val)
                    .map(|t| (k.clone(), t))
                    .ok_or_else(|| self.err(&format!("{field}.{k}"), expected, val))
            })
            .collect()
    }
}

pub(crate) fn number_of(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        _ => None,
    }
}

pub(crate) fn describe(v: &Value) -> String {
    let kind = match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    };
    let mut text = v.to_string();
    if text.chars().count() > 60 {
        text = text.chars().take(57).collect::<String>() + "...";
    }
    format!("{kind} ({text})")
}

/// Parse config bytes.
pub fn parse_config(path: &Path, bytes: &[u8]) -> Result<AdapterConfig> {
    let raw = parse_json(path, bytes)?;
    let empty = Map::new();
    let top = Fields {
        path,
        obj: object_of(path, &raw)?,
        prefix: "",
    };
    let lp = top.nested("lora_parameters", "lora_parameters.", &empty)?;
    let has_lora_parameters = top.get("lora_parameters").is_some();
    // The fields are read (and a wrong type reported) in this order: the first error wins.
    let kind = Kind::read(&top, has_lora_parameters)?;
    let schema = kind.schema;
    let targets = peft::Targets::read(&top)?;
    let entries = ModuleEntries::read(&top, &empty)?;
    let mlx = MlxValues::read(&top, &lp, schema)?;
    let use_dora = top.boolean("use_dora")?;
    let peft = peft::Values::read(&top, schema)?;
    Ok(AdapterConfig {
        path: path.to_path_buf(),
        schema,
        fine_tune_type: kind.fine_tune_type,
        num_layers: kind.num_layers,
        has_lora_parameters,
        rank: mlx.rank,
        top_rank: mlx.top_rank,
        scale: mlx.scale,
        top_scale: mlx.top_scale,
        alpha: mlx.alpha,
        dropout: mlx.dropout,
        keys: mlx.keys,
        module_paths: mlx.module_paths,
        module_ranks: entries.ranks,
        module_scales: entries.scales,
        full_tensors: entries.full_tensors,
        use_dora,
        peft_r: peft.r,
        peft_alpha: peft.alpha,
        use_rslora: peft.use_rslora,
        target_modules: targets.target_modules,
        rank_pattern: peft.rank_pattern,
        alpha_pattern: peft.alpha_pattern,
        layers_to_transform: targets.layers_to_transform,
        modules_to_save: peft.modules_to_save,
        target_parameters: peft.target_parameters,
        raw,
    })
}

/// The bytes as JSON, an error naming the line and column where they are not.
fn parse_json(path: &Path, bytes: &[u8]) -> Result<Value> {
    serde_json::from_slice(bytes).map_err(|e| {
        let full = e.to_string();
        let message = full
            .rsplit_once(" at line ")
            .map_or(full.as_str(), |(m, _)| m);
        ScanError::Config {
            path: path.to_path_buf(),
            field: None,
            message: format!(
                "not valid JSON: {message} (line {}, column {})",
                e.line(),
                e.column()
            ),
        }
    })
}

/// The config's top-level object.
fn object_of<'v>(path: &Path, raw: &'v Value) -> Result<&'v Map<String, Value>> {
    let Value::Object(obj) = raw else {
        return Err(ScanError::Config {
            path: path.to_path_buf(),
            field: None,
            message: format!("expected a JSON object, found {}", describe(raw)),
        });
    };
    Ok(obj)
}

/// The fields that decide the schema, and the schema they decide.
struct Kind {
    schema: Schema,
    fine_tune_type: Option<String>,
    /// `num_layers`, else legacy `lora_layers`.
    num_layers: Option<i64>,
}

impl Kind {
    fn read(top: &Fields<'_>, has_lora_parameters: bool) -> Result<Self> {
        let fine_tune_type = top.string("fine_tune_type")?;
        let peft_type = top.string("peft_type")?;
        let num_layers = top.int("num_layers")?;
        let lora_layers = top.int("lora_layers")?;
        let is_peft_type = peft_type
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case("lora"));

        let schema = if lora_layers.is_some() && num_layers.is_none() && fine_tune_type.is_none() {
            Schema::MlxLegacy
        } else if has_lora_parameters || fine_tune_type.is_some() || num_layers.is_some() {
            Schema::Mlx
        } else if is_peft_type || top.get("r").is_some() || top.get("target_modules").is_some() {
            Schema::Peft
        } else if top.get("rank").is_some() && top.get("alpha").is_some() {
            Schema::MlxVlmLegacy
        } else {
            Schema::Unknown
        };
        Ok(Self {
            schema,
            fine_tune_type,
            num_layers: num_layers.or(lora_layers),
        })
    }
}

/// Per-module entries: Unsloth's rank and scale maps, then adapterscan's own block (per-module
/// rank/scale and declared full tensors).
struct ModuleEntries {
    ranks: Vec<(String, u64)>,
    scales: Vec<(String, f64)>,
    full_tensors: Vec<String>,
}

impl ModuleEntries {
    fn read<'a>(top: &Fields<'a>, empty: &'a Map<String, Value>) -> Result<Self> {
        let ours = top.nested("adapterscan", "adapterscan.", empty)?;
        let mut ranks = top.map_of("unsloth_mlx_lora_module_ranks", "integers", Value::as_u64)?;
        let mut scales = top.map_of("unsloth_mlx_lora_module_scales", "numbers", number_of)?;
        if let Some(v) = ours.get("modules") {
            let Value::Object(mods) = v else {
                return Err(ours.err("modules", "an object of module entries", v));
            };
            for (name, entry) in mods {
                let Value::Object(e) = entry else {
                    return Err(ours.err(&format!("modules.{name}"), "an object", entry));
                };
                let f = Fields {
                    path: top.path,
                    obj: e,
                    prefix: "adapterscan.modules.",
                };
                if let Some(r) = f.uint("rank")? {
                    ranks.push((name.clone(), r));
                }
                if let Some(s) = e.get("scale").and_then(number_of) {
                    scales.push((name.clone(), s));
                }
            }
        }
        Ok(Self {
            ranks,
            scales,
            full_tensors: ours.string_list("full_tensors")?.unwrap_or_default(),
        })
    }
}

/// mlx-lm's `lora_parameters` (and Unsloth's module paths), with the top-level mirrors and
/// fallbacks that mlx-vlm, Unsloth and PEFT write.
struct MlxValues {
    alpha: Option<f64>,
    rank: Option<u64>,
    top_rank: Option<u64>,
    scale: Option<f64>,
    top_scale: Option<f64>,
    dropout: Option<f64>,
    keys: Option<Vec<String>>,
    module_paths: Option<Vec<String>>,
}

impl MlxValues {
    fn read(top: &Fields<'_>, lp: &Fields<'_>, schema: Schema) -> Result<Self> {
        let alpha = match lp.number("alpha")? {
            Some(a) => Some(a),
            None if schema != Schema::Peft => top.number("alpha")?,
            None => None,
        };
        Ok(Self {
            alpha,
            rank: lp.uint("rank")?,
            top_rank: if schema == Schema::Peft {
                None
            } else {
                top.uint("rank")?
            },
            scale: lp.number("scale")?,
            top_scale: top.number("scale")?,
            dropout: match lp.number("dropout")? {
                Some(d) => Some(d),
                None if schema == Schema::Peft => top.number("lora_dropout")?,
                None => top.number("dropout")?,
            },
            keys: lp.string_list("keys")?,
            module_paths: top.path_list("unsloth_mlx_lora_module_paths")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<AdapterConfig> {
        parse_config(Path::new("adapter_config.json"), text.as_bytes())
    }

    #[test]
    fn reads_the_mlx_lm_schema() {
        let c = parse(r#"{"fine_tune_type":"lora","num_layers":16,"lora_parameters":{"rank":8,"dropout":0.0,"scale":20.0,"keys":["self_attn.q_proj"]},"model":"x"}"#).unwrap();
        assert_eq!(c.schema, Schema::Mlx);
        assert_eq!(c.rank, Some(8));
        assert_eq!(c.scale, Some(20.0));
        assert_eq!(c.num_layers, Some(16));
        assert_eq!(
            c.keys.as_deref(),
            Some(&["self_attn.q_proj".to_string()][..])
        );
    }

    #[test]
    fn recognises_each_schema() {
        assert_eq!(
            parse(r#"{"lora_layers":4,"use_dora":false,"lora_parameters":null}"#)
                .unwrap()
                .schema,
            Schema::MlxLegacy
        );
        assert_eq!(
            parse(r#"{"rank":8,"alpha":16,"dropout":0.0}"#)
                .unwrap()
                .schema,
            Schema::MlxVlmLegacy
        );
        let p = parse(r#"{"peft_type":"LORA","r":8,"lora_alpha":16,"target_modules":["q_proj"],"rank_pattern":{"q_proj":4},"use_rslora":true}"#).unwrap();
        assert_eq!(p.schema, Schema::Peft);
        assert_eq!(p.peft_r, Some(8));
        assert_eq!(p.rank_pattern, vec![("q_proj".to_string(), 4)]);
        assert!(p.use_rslora);
        assert_eq!(parse("{}").unwrap().schema, Schema::Unknown);
    }

    #[test]
    fn normalises_unsloth_paths() {
        let c = parse(
            r#"{"num_layers":2,"unsloth_mlx_lora_module_paths":"model.layers.0.self_attn.q_proj"}"#,
        )
        .unwrap();
        assert_eq!(
            c.module_paths.unwrap(),
            vec!["model.layers.0.self_attn.q_proj"]
        );
        let c =
            parse(r#"{"num_layers":2,"unsloth_mlx_lora_module_paths":{"a":"x.q","b":["y.q",""]}}"#)
                .unwrap();
        assert_eq!(c.module_paths.unwrap(), vec!["x.q", "y.q"]);
    }

    #[test]
    fn wrong_types_are_errors_naming_the_field() {
        let cases = [
            (r#"{"num_layers":"16"}"#, "num_layers"),
            (
                r#"{"lora_parameters":{"rank":"four"}}"#,
                "lora_parameters.rank",
            ),
            (
                r#"{"lora_parameters":{"rank":8.5}}"#,
                "lora_parameters.rank",
            ),
            (
                r#"{"lora_parameters":{"scale":"x"}}"#,
                "lora_parameters.scale",
            ),
            (
                r#"{"lora_parameters":{"keys":"q_proj"}}"#,
                "lora_parameters.keys",
            ),
            (r#"{"lora_parameters":[1]}"#, "lora_parameters"),
            (r#"{"fine_tune_type":3}"#, "fine_tune_type"),
            (r#"{"peft_type":"LORA","r":-1}"#, "r"),
            (
                r#"{"peft_type":"LORA","rank_pattern":{"q":"x"}}"#,
                "rank_pattern.q",
            ),
        ];
        for (text, field) in cases {
            let err = parse(text).unwrap_err();
            assert_eq!(err.code(), "invalid_config", "{text}");
            match err {
                ScanError::Config { field: f, .. } => assert_eq!(f.as_deref(), Some(field)),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(parse("[1]").unwrap_err().code(), "invalid_config");
        assert_eq!(parse("{").unwrap_err().code(), "invalid_config");
    }

    #[test]
    fn long_non_ascii_values_are_shortened_safely() {
        let text = format!(r#"{{"num_layers":"{}"}}"#, "é".repeat(100));
        let err = parse(&text).unwrap_err();
        assert!(err.to_string().contains("..."));
    }

    #[test]
    fn peft_patterns_follow_peft_first_match_rule() {
        let re = peft_pattern(Path::new("c"), "rank_pattern", "q_proj").unwrap();
        assert!(re.is_match("model.layers.0.self_attn.q_proj"));
        assert!(re.is_match("q_proj"));
        assert!(!re.is_match("model.layers.0.self_attn.xq_proj"));
        let re = peft_pattern(
            Path::new("c"),
            "rank_pattern",
            "model.layers.1.mlp.down_proj",
        )
        .unwrap();
        assert!(re.is_match("model.layers.1.mlp.down_proj"));
        assert!(!re.is_match("model.layers.11.mlp.down_proj"));
        assert!(peft_pattern(Path::new("c"), "rank_pattern", "(").is_err());
    }
}
