//! The `inspect --json` contract: the documented object, written straight from the scan.
//!
//! May use: `naming`, `infer`, `read::table`, `rules::Format`, `problem`, `scan`.

use serde::Serialize;

use crate::infer::{Kind, Variant};
use crate::problem::Problem;
use crate::read::table::Tensors;
use crate::rules::Format;
use crate::scan::Scan;

impl Scan {
    /// The scan as the documented JSON object.
    pub fn to_json(&self, pretty: bool) -> String {
        let files: Vec<JsonFile<'_>> = self
            .files
            .iter()
            .map(|f| JsonFile {
                path: f.path.to_string_lossy(),
                header_bytes: f.header_bytes,
                tensor_count: f.tensor_count,
            })
            .collect();
        let view = JsonScan {
            path: self.path.to_string_lossy(),
            format: self.format,
            fine_tune_type: self.fine_tune_type,
            tensor_count: self.tensors.len(),
            total_bytes: self.total_bytes(),
            files,
            config: self.config.as_ref().map(|c| &c.raw),
            modules: self
                .modules
                .iter()
                .map(|m| JsonModule {
                    path: &m.path,
                    kind: m.kind,
                    variant: m.variant,
                    rank: m.rank,
                    in_dims: m.in_dims,
                    out_dims: m.out_dims,
                    num_experts: m.num_experts,
                    dtype: m.dtype,
                    keys: JsonKeys {
                        ids: &m.tensor_ids,
                        tensors: &self.tensors,
                    },
                })
                .collect(),
            problems: &self.problems,
        };
        let out = if pretty {
            serde_json::to_string_pretty(&view)
        } else {
            serde_json::to_string(&view)
        };
        out.unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }
}

#[derive(Serialize)]
struct JsonFile<'a> {
    path: std::borrow::Cow<'a, str>,
    header_bytes: u64,
    tensor_count: usize,
}

#[derive(Serialize)]
struct JsonModule<'a> {
    path: &'a str,
    kind: Kind,
    variant: Variant,
    rank: Option<u64>,
    in_dims: Option<u64>,
    out_dims: Option<u64>,
    num_experts: Option<u64>,
    dtype: &'a str,
    keys: JsonKeys<'a>,
}

/// A module's tensor names, written straight from the scan's tensor list.
struct JsonKeys<'a> {
    ids: &'a [u32],
    tensors: &'a Tensors,
}

impl Serialize for JsonKeys<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_seq(self.ids.iter().map(|&i| self.tensors.get(i as usize).name))
    }
}

#[derive(Serialize)]
struct JsonScan<'a> {
    path: std::borrow::Cow<'a, str>,
    format: Format,
    fine_tune_type: Option<&'static str>,
    tensor_count: usize,
    total_bytes: u64,
    files: Vec<JsonFile<'a>>,
    config: Option<&'a serde_json::Value>,
    modules: Vec<JsonModule<'a>>,
    problems: &'a [Problem],
}
