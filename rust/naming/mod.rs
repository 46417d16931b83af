//! Naming rules: pure functions of names and paths, the one home of every producer's naming
//! convention. Nothing here reads a file or knows a tensor's shape.
//!
//! - [`leaves`]: which leaf names are LoRA factors (mlx-lm, mlx-vlm, PEFT), their family and
//!   orientation, and PEFT's `base_model.model.` prefix.
//! - [`experts`]: per-expert paths (`experts.<e>.`), their grouped and stacked (`switch_mlp`) forms.
//! - [`paths`]: module paths: layer indices, `keys` coverage, embedding names.
//! - [`natural`]: the natural order of dotted paths (`layers.2` before `layers.10`).
//! - [`ranges`]: compact text for index lists (`0-2, 5`).
//! - [`files`]: the file names producers write (weights, config, trainer checkpoints).
//! - [`layout`]: the on-disk layouts of a module's factors.
//!
//! May use: the standard library and `memchr` only.

pub mod experts;
pub mod files;
pub mod layout;
pub mod leaves;
pub mod natural;
pub mod paths;
pub mod ranges;

#[cfg(test)]
mod tests {
    use super::experts::expert_split;
    use super::natural::natural_cmp;
    use super::ranges::compress_ranges;

    #[test]
    fn natural_order_and_ranges() {
        let mut v = vec!["layers.10.q", "layers.2.q", "layers.2.k", "a"];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(v, vec!["a", "layers.2.k", "layers.2.q", "layers.10.q"]);
        assert_eq!(compress_ranges(&[0, 1, 2, 5, 7, 8]), "0-2, 5, 7-8");
        assert_eq!(
            expert_split("m.layers.0.mlp.experts.12.w1"),
            Some(("m.layers.0.mlp.experts.w1".into(), 12))
        );
        assert_eq!(expert_split("m.myexperts.1.w1"), None);
    }
}
