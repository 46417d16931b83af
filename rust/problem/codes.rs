//! Every problem code: its stable name, the severities it is reported with and one line of what
//! it means. The README's table of codes is this table (a test compares them).
//!
//! May use: nothing else of the crate.

use serde::Serialize;

/// The severities a code is reported with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severities {
    /// Always an error.
    Error,
    /// Always a warning.
    Warning,
    /// An error in some cases, a warning in others (the meaning says which).
    Both,
}

impl Severities {
    /// As the README's table writes it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warning => "warning",
            Self::Both => "error / warning",
        }
    }
}

macro_rules! codes {
    ($($(#[$doc:meta])* $variant:ident = $name:literal, $sev:ident, $meaning:literal;)*) => {
        /// A problem's stable code.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Code {
            $($(#[$doc])* #[doc = $meaning] $variant,)*
        }

        impl Code {
            /// Every code, in the table's order.
            pub const ALL: &'static [Code] = &[$(Code::$variant),*];

            /// Stable name (the JSON and Python string).
            pub fn name(self) -> &'static str {
                match self { $(Code::$variant => $name,)* }
            }

            /// The severities it is reported with.
            pub fn severities(self) -> Severities {
                match self { $(Code::$variant => Severities::$sev,)* }
            }

            /// One line of what it means.
            pub fn meaning(self) -> &'static str {
                match self { $(Code::$variant => $meaning,)* }
            }
        }
    };
}

codes! {
    // The factors of a module, read alone.
    UnpairedFactor = "unpaired_factor", Error,
        "an A without its B or the reverse (also per expert, per list entry)";
    RankMismatch = "rank_mismatch", Error,
        "the factors do not share a rank axis (or experts disagree)";
    OrientationFlipped = "orientation_flipped", Error,
        "factors stored in the other framework's orientation under these names";
    ExpertCountMismatch = "expert_count_mismatch", Error,
        "`lora_a` and `lora_b` disagree on the number of experts";
    MissingExperts = "missing_experts", Error, "per-expert keys with gaps";
    BadFactorShape = "bad_factor_shape", Error,
        "shapes that fit no layout, or a DoRA magnitude of the wrong length";
    DegenerateRank = "degenerate_rank", Both,
        "rank 0 (error) / rank above both dims (warning)";
    DoraOnSwitch = "dora_on_switch", Error,
        "a DoRA magnitude on a switch module (mlx-lm has none)";
    MixedFormats = "mixed_formats", Error,
        "PEFT and mlx names in one adapter, or a config of the other schema";
    MixedDtypes = "mixed_dtypes", Warning, "dtypes differ within a module or across modules";
    LegacySwitchLayout = "legacy_switch_layout", Warning, "mlx-lm < 0.28.3 2-D switch `lora_a`";
    LayerWrappedFactors = "layer_wrapped_factors", Warning,
        "`lora_a.weight` leaves (stock mlx-lm refuses them)";
    RankNeedsExpertCount = "rank_needs_expert_count", Warning,
        "PEFT `target_parameters` factors (rank × experts) and no `r` in the config";
    ParamWrapperUnresolved = "param_wrapper_unresolved", Error,
        "`target_parameters` wrappers the config's parameter list cannot explain";
    FusedShapesDisagree = "fused_shapes_disagree", Error,
        "`gate_up_proj` and `down_proj` factors that do not chain (odd `gate_up_proj` width)";
    DuplicateModule = "duplicate_module", Error,
        "per-expert and `target_parameters` factors for the same module";
    // Tensors that are not LoRA factors.
    NonAdapterTensor = "non_adapter_tensor", Error,
        "a base weight or other tensor inside a LoRA/DoRA adapter";
    PeftBaseLayerSaved = "peft_base_layer_saved", Warning,
        "PEFT saved the full embedding beside its factors; an mlx adapter cannot hold it";
    PeftModulesToSave = "peft_modules_to_save", Warning,
        "a full weight from PEFT `modules_to_save`; an mlx adapter cannot hold it";
    PeftTrainableTokens = "peft_trainable_tokens", Warning,
        "PEFT `trainable_token_indices` deltas; an mlx adapter cannot hold them";
    NoAdapterTensors = "no_adapter_tensors", Warning, "no LoRA factor at all and no config";
    FullTensorMissing = "full_tensor_missing", Error,
        "the config declares a full tensor the adapter does not hold";
    // The config against the tensors.
    ConfigMissing = "config_missing", Warning, "no `adapter_config.json`: the scale is unknown";
    ConfigUnrecognised = "config_unrecognised", Warning,
        "the config follows no known schema";
    LegacyConfig = "legacy_config", Warning, "a pre-0.19 mlx-lm or pre-0.6 mlx-vlm config";
    ConfigFieldMissing = "config_field_missing", Error,
        "`num_layers`, `lora_parameters`, `rank`, `dropout` or PEFT `r` missing";
    ConfigScaleMissing = "config_scale_missing", Both,
        "no `scale` (error); PEFT: no `lora_alpha` (warning)";
    ConfigAlphaInsteadOfScale = "config_alpha_instead_of_scale", Error,
        "an mlx config with `alpha` but no `scale`";
    ConfigValueInvalid = "config_value_invalid", Error, "dropout outside [0, 1), rank 0";
    ConfigRankConflict = "config_rank_conflict", Error,
        "top-level `rank`/`scale` contradict `lora_parameters`";
    ConfigRankMismatch = "config_rank_mismatch", Error,
        "tensors' rank differs from the config (per-module ranks, PEFT `rank_pattern` first-match)";
    ConfigKeysEmpty = "config_keys_empty", Error, "`keys: []` with tensors saved";
    ConfigKeyUnsaved = "config_key_unsaved", Error,
        "`keys` names a module with no tensors (ghost wrapper, e.g. `keys: [\"auto\"]`)";
    ModuleNotInKeys = "module_not_in_keys", Error,
        "a saved module the keys do not cover (loaders refuse or drop it)";
    ConfigKeysMissing = "config_keys_missing", Warning,
        "no `keys`: mlx-lm wraps every layer of the last `num_layers` blocks";
    ConfigPathsConflict = "config_paths_conflict", Warning,
        "`keys` and Unsloth's module paths disagree";
    ConfigNumLayersMismatch = "config_num_layers_mismatch", Error,
        "tensors in more layers than `num_layers` reaches";
    FineTuneTypeMismatch = "fine_tune_type_mismatch", Error,
        "`full` with LoRA tensors, or `lora`/`dora` with none";
    FineTuneTypeUnknown = "fine_tune_type_unknown", Warning,
        "e.g. `qlora` (mlx-lm silently treats it as `lora`)";
    DoraMagnitudeMissing = "dora_magnitude_missing", Error, "DoRA declared, a module has no `m`";
    DoraMagnitudeUnexpected = "dora_magnitude_unexpected", Error, "`m` saved but LoRA declared";
    ModuleNotTargeted = "module_not_targeted", Error,
        "a saved module PEFT `target_modules` does not name";
    ModuleOutsideLayers = "module_outside_layers", Error,
        "a saved module in a layer PEFT `layers_to_transform` leaves out";
    TargetUnmatched = "target_unmatched", Warning,
        "PEFT `target_modules` names a module no saved factor matches";
    // PEFT variants.
    PeftLoraBias = "peft_lora_bias", Error, "PEFT `lora_bias`: a bias on lora_B, which mlx-lm's LoRA lacks";
    PeftAlora = "peft_alora", Error,
        "aLoRA (`alora_invocation_tokens`): active only after its invocation tokens";
    PeftQalora = "peft_qalora", Error, "QALoRA (`use_qalora`): lora_A reads the input pooled in groups";
    PeftBdlora = "peft_bdlora", Error, "BD-LoRA (`use_bdlora`): block-diagonal factors stored compressed";
    PeftKasa = "peft_kasa", Error, "KaSA (`kasa_config`): a learned diagonal between B and A, a truncated base";
    PeftArrow = "peft_arrow", Error, "Arrow (`arrow_config`): routing among task adapters";
    PeftMonteclora = "peft_monteclora", Error, "MonteCLoRA (`monteclora_config`): a sampled update";
    PeftVelora = "peft_velora", Error, "VeLoRA (`velora_config`): input grouped through an extra embedding";
    PeftBaseChangingInit = "peft_base_changing_init", Warning,
        "PiSSA, OLoRA, CorDA, LoftQ or LoRA-GA initialisation: right only on the base it modified";
    // Saves.
    TornSave = "torn_save", Error,
        "the config and the weights (or two weights files) come from two saves: a torn read";
    // Shards.
    UnreferencedShard = "unreferenced_shard", Warning,
        "a `.safetensors` in the folder the index does not name";
    IndexTotalSizeMismatch = "index_total_size_mismatch", Warning,
        "`metadata.total_size` differs from the shards' data";
    ModelInAdapterFolder = "model_in_adapter_folder", Warning,
        "a model checkpoint beside the adapter (mlx-lm-lora's fused model): set aside, not read";
    // `check`: the adapter against a base.
    PrefixMismatch = "prefix_mismatch", Error,
        "the adapter's paths fit the model once a prefix is stripped or added";
    BaseQuantizationRequired = "base_quantization_required", Warning,
        "mlx-vlm's `base_quantization`: trained on a base quantized that way (load refuses another)";
    BaseStructureFromHeaders = "base_structure_from_headers", Warning,
        "the base was read from its headers, not built with mlx-lm's classes (no MLX, or mlx-lm cannot build it)";
    BaseQuantizationUnknown = "base_quantization_unknown", Error,
        "a packed base weight whose bits the base config does not give";
    BaseExpertsInconsistent = "base_experts_inconsistent", Warning,
        "a base's per-expert weights of different shapes";
    BaseExpertsImplausible = "base_experts_implausible", Error,
        "a base module claiming more than 2^20 experts (left out, never enumerated)";
    NotChecked = "not_checked", Warning,
        "factors `check` cannot compare with the base (AFM7 fused; `target_parameters` without a rank)";
    // `--verify-data`: tensor values.
    NonFiniteValues = "non_finite_values", Error, "NaN or Inf in a factor";
    LoraBAllZero = "lora_b_all_zero", Warning,
        "a module's `lora_b` is all zero: it changes nothing (never trained, or its values lost)";
}

impl Code {
    /// The code of that name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|c| c.name() == name)
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl PartialEq<&str> for Code {
    fn eq(&self, other: &&str) -> bool {
        self.name() == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_snake_case_and_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for &c in Code::ALL {
            assert!(seen.insert(c.name()), "{c} twice");
            assert!(c
                .name()
                .bytes()
                .all(|b| b == b'_' || b.is_ascii_lowercase() || b.is_ascii_digit()));
            assert_eq!(Code::from_name(c.name()), Some(c));
            assert!(!c.meaning().is_empty() && !c.meaning().contains('|'));
        }
    }
}
