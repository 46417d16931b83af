//! Naming and config rules the Python layer asks for instead of re-deriving them.
//!
//! May use: `naming`, `read::dtype`, `problem` (the rules it hands over).

use pyo3::prelude::*;
use pyo3::types::PyDict;

/// The mlx-lm path of a stacked expert module (`X.experts.P` -> `X.switch_mlp.P`, Mixtral's
/// `w1`/`w3`/`w2` renamed); other paths unchanged.
#[pyfunction]
pub fn stacked_path(path: &str) -> String {
    crate::naming::experts::stacked_path(path)
}

/// The Hugging Face per-expert name of expert `e` of a stacked module (`X.switch_mlp.P` ->
/// `X.experts.{e}.P`, Mixtral's `w1`/`w3`/`w2`).
#[pyfunction]
pub fn per_expert_path(path: &str, e: u64) -> String {
    crate::naming::experts::per_expert_path(path, e)
}

/// The names of every safetensors dtype with its bits per element.
#[pyfunction]
pub fn dtypes(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let d = PyDict::new(py);
    for (name, bits) in crate::read::dtype::DTYPES {
        d.set_item(*name, *bits)?;
    }
    Ok(d)
}

/// The prefix PEFT puts before every saved key (module paths are reported without it).
pub const PEFT_PREFIX: &str = crate::naming::leaves::PEFT_PREFIX;

/// The positions of `paths` in natural order (`layers.2` before `layers.10`; `01` before `1`):
/// `[paths[i] for i in natural_order(paths)]` is sorted, stably.
#[pyfunction]
#[allow(clippy::needless_pass_by_value)] // pyo3 hands the list over owned
pub fn natural_order(paths: Vec<String>) -> Vec<usize> {
    let mut order: Vec<(&str, usize)> = paths.iter().map(String::as_str).zip(0..).collect();
    crate::naming::natural::sort_natural(&mut order, |x| x.0);
    order.into_iter().map(|(_, i)| i).collect()
}

/// Values as compact ranges (`[0, 1, 2, 5]` -> `0-2, 5`), sorted and each once.
#[pyfunction]
pub fn compress_ranges(mut values: Vec<u64>) -> String {
    values.sort_unstable();
    values.dedup();
    crate::naming::ranges::compress_ranges(&values)
}

/// The true width of a quantized weight's last axis, packed into 32-bit words at `bits` per value
/// (`None` when `bits` is 0).
#[pyfunction]
pub fn unpacked_width(packed: u64, bits: u64) -> Option<u64> {
    crate::read::dtype::unpacked_width(packed, bits)
}

/// Every problem code: `(name, severities, meaning)`, severities `error`, `warning` or
/// `error / warning`.
#[pyfunction]
pub fn problem_codes() -> Vec<(&'static str, &'static str, &'static str)> {
    crate::problem::Code::ALL
        .iter()
        .map(|c| (c.name(), c.severities().name(), c.meaning()))
        .collect()
}

/// Every on-disk layout name (`Module.layout`).
#[pyfunction]
pub fn layouts() -> Vec<&'static str> {
    crate::naming::layout::Layout::ALL
        .iter()
        .map(|l| l.name())
        .collect()
}

/// The Hugging Face name of an mlx-lm MoE block as transformers 5 writes fused experts
/// (`X.block_sparse_moe` -> `X.mlp`).
#[pyfunction]
pub fn hf_moe_block(block: &str) -> String {
    crate::naming::experts::hf_moe_block(block)
}

/// The mlx-lm blocks a Hugging Face MoE block may be, most likely first (`X.mlp`, then Mixtral's
/// `X.block_sparse_moe`).
#[pyfunction]
pub fn mlx_moe_blocks(block: &str) -> Vec<String> {
    crate::naming::experts::mlx_moe_blocks(block)
}

/// Whether a file name is an adapter's own weights or shard index (`adapters.safetensors`,
/// `adapter_model.safetensors`, `weights.safetensors`, and their `.index.json`).
#[pyfunction]
pub fn is_adapter_file(name: &str) -> bool {
    crate::naming::files::is_adapter_file(name)
}
