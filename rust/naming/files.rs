//! The file names producers write: the adapter config, the weight files tried in a folder without
//! an index, trainer checkpoints and temporaries that are never the adapter.
//!
//! May use: nothing else of the crate.

/// The config file name every producer uses.
pub const CONFIG_NAME: &str = "adapter_config.json";

/// Weight file names tried, in order, in a folder without an index.
pub const WEIGHT_NAMES: &[&str] = &[
    "adapters.safetensors",
    "adapter_model.safetensors",
    "weights.safetensors",
];

pub(crate) fn is_hidden_or_temp(name: &str) -> bool {
    name.starts_with('.') || name.contains(".tmp")
}

/// Trainer checkpoints written beside the final adapter (`0000100_adapters.safetensors`).
pub(crate) fn is_checkpoint(name: &str) -> bool {
    name.split_once('_').is_some_and(|(n, rest)| {
        !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) && rest == "adapters.safetensors"
    })
}
