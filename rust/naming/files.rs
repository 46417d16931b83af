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

/// A model checkpoint's file as mlx-lm and transformers name them (`model.safetensors`,
/// `model-00001-of-00002.safetensors`, `model.safetensors.index.json`).
pub fn is_model_file(name: &str) -> bool {
    name == "model.safetensors"
        || name == "model.safetensors.index.json"
        || (name.starts_with("model-") && name.ends_with(".safetensors"))
}

/// An adapter's own weights or shard index, by the names producers give them.
pub fn is_adapter_file(name: &str) -> bool {
    WEIGHT_NAMES
        .iter()
        .any(|w| name == *w || name.strip_suffix(".index.json") == Some(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_and_adapter_files() {
        for name in [
            "model.safetensors",
            "model-00001-of-00002.safetensors",
            "model.safetensors.index.json",
        ] {
            assert!(is_model_file(name) && !is_adapter_file(name), "{name}");
        }
        for name in [
            "adapters.safetensors",
            "adapter_model.safetensors",
            "adapter_model.safetensors.index.json",
        ] {
            assert!(is_adapter_file(name) && !is_model_file(name), "{name}");
        }
        assert!(
            !is_model_file("model_extra.bin") && !is_adapter_file("0000100_adapters.safetensors")
        );
    }
}
