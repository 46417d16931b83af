//! The on-disk layouts of a module's factors: which producer's naming, and so which axis of each
//! factor holds the rank. Their names are the public `Module.layout` strings.
//!
//! May use: nothing else of the crate.

use serde::Serialize;

/// How a module's factors are named and oriented on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// mlx-lm `lora_a` (in, r) / `lora_b` (r, out).
    MlxLinear,
    /// mlx-lm switch (experts stacked): `lora_a` (E, r, in) / `lora_b` (E, out, r).
    MlxSwitch,
    /// mlx-lm < 0.28.3 switch: `lora_a` (E * r, in) / `lora_b` (E, out, r).
    MlxSwitchLegacy,
    /// mlx-lm embedding: `lora_a` (V, r) / `lora_b` (r, D).
    MlxEmbedding,
    /// Halves that are `nn.Linear` layers: `lora_a.weight` (r, in) / `lora_b.weight` (out, r).
    MlxLayer,
    /// List-valued leaves `lora_a.N` / `lora_b.N` (mlx-lm's AFM7 fused QKV).
    MlxFused,
    /// mlx-vlm before 0.6: `A` / `B`.
    MlxVlmLegacy,
    /// PEFT `lora_A.weight` (r, in) / `lora_B.weight` (out, r).
    PeftLinear,
    /// PEFT `lora_embedding_A` (r, V) / `lora_embedding_B` (D, r).
    PeftEmbedding,
    /// PEFT per-expert keys `experts.<e>.X.lora_A.weight`, grouped into one switch module.
    PeftPerExpert,
    /// PEFT `target_parameters` (`ParamWrapper` on fused expert parameters).
    PeftParamWrapper,
}

impl Layout {
    /// Every layout, in the order above.
    pub const ALL: [Self; 11] = [
        Self::MlxLinear,
        Self::MlxSwitch,
        Self::MlxSwitchLegacy,
        Self::MlxEmbedding,
        Self::MlxLayer,
        Self::MlxFused,
        Self::MlxVlmLegacy,
        Self::PeftLinear,
        Self::PeftEmbedding,
        Self::PeftPerExpert,
        Self::PeftParamWrapper,
    ];

    /// Stable name (the JSON and Python string).
    pub fn name(self) -> &'static str {
        match self {
            Self::MlxLinear => "mlx_linear",
            Self::MlxSwitch => "mlx_switch",
            Self::MlxSwitchLegacy => "mlx_switch_legacy",
            Self::MlxEmbedding => "mlx_embedding",
            Self::MlxLayer => "mlx_layer",
            Self::MlxFused => "mlx_fused",
            Self::MlxVlmLegacy => "mlx_vlm_legacy",
            Self::PeftLinear => "peft_linear",
            Self::PeftEmbedding => "peft_embedding",
            Self::PeftPerExpert => "peft_per_expert",
            Self::PeftParamWrapper => "peft_param_wrapper",
        }
    }

    /// Whether PEFT wrote it.
    pub fn is_peft(self) -> bool {
        matches!(
            self,
            Self::PeftLinear | Self::PeftEmbedding | Self::PeftPerExpert | Self::PeftParamWrapper
        )
    }

    /// The layout of that name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|l| l.name() == name)
    }
}

impl std::fmt::Display for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_match_serde() {
        for l in Layout::ALL {
            assert_eq!(Layout::from_name(l.name()), Some(l));
            assert_eq!(serde_json::to_string(&l).unwrap(), format!("\"{l}\""));
        }
        assert_eq!(Layout::from_name("mlx"), None);
    }
}
