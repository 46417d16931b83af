//! Which tensor names are LoRA factors, and what their leaf says: the family (producer naming),
//! the leaf (A, B, magnitude) and the slot (single, list entry, expert).
//!
//! May use: nothing else of the crate.

/// The PEFT prefix that module paths are reported without.
pub const PEFT_PREFIX: &str = "base_model.model.";

/// The on-disk family of a factor, decided by its leaf name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// `lora_a` / `lora_b` / `m` (mlx-lm).
    Mlx,
    /// `lora_a.weight` / `lora_b.weight` (halves that are `nn.Linear` layers).
    MlxLayer,
    /// `lora_a.N` / `lora_b.N` (list-valued leaves, e.g. mlx-lm's AFM7 fused QKV).
    MlxFused,
    /// `A` / `B` (mlx-vlm before 0.6).
    MlxVlmLegacy,
    /// `lora_A.weight` / `lora_B.weight` / `lora_magnitude_vector` (PEFT).
    Peft,
    /// `lora_embedding_A` / `lora_embedding_B` (PEFT embeddings).
    PeftEmbedding,
}

impl Family {
    /// Whether the family belongs to PEFT's naming.
    pub fn is_peft(self) -> bool {
        matches!(self, Self::Peft | Self::PeftEmbedding)
    }
}

/// Which factor a tensor is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Leaf {
    /// The down projection (`lora_a`, `lora_A`, `A`).
    A,
    /// The up projection (`lora_b`, `lora_B`, `B`).
    B,
    /// A DoRA magnitude (`m`, `lora_magnitude_vector`).
    M,
}

impl Leaf {
    /// Stable name: `a`, `b` or `m`.
    pub fn name(self) -> &'static str {
        match self {
            Self::A => "a",
            Self::B => "b",
            Self::M => "m",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Slot {
    Single,
    Fused(u32),
    Expert(u64),
}

#[cfg(test)]
fn split_suffix<'a>(name: &'a str, leaf: &str) -> Option<&'a str> {
    if name == leaf {
        return Some("");
    }
    name.strip_suffix(leaf)?.strip_suffix('.')
}

pub(crate) fn classify(name: &str) -> Option<(&str, Family, Leaf, Slot)> {
    // Dispatch on the last component (and the one before `weight`) instead of trying every
    // leaf as a suffix: this runs once per tensor.
    let (head, last) = split_last(name);
    let (path, family, leaf) = match last {
        "weight" => {
            let (path, inner) = split_last(head);
            match inner {
                "lora_A" => (path, Family::Peft, Leaf::A),
                "lora_B" => (path, Family::Peft, Leaf::B),
                "lora_magnitude_vector" => (path, Family::Peft, Leaf::M),
                "lora_a" => (path, Family::MlxLayer, Leaf::A),
                "lora_b" => (path, Family::MlxLayer, Leaf::B),
                _ => return None,
            }
        }
        "lora_embedding_A" => (head, Family::PeftEmbedding, Leaf::A),
        "lora_embedding_B" => (head, Family::PeftEmbedding, Leaf::B),
        "lora_magnitude_vector" => (head, Family::Peft, Leaf::M),
        "lora_a" => (head, Family::Mlx, Leaf::A),
        "lora_b" => (head, Family::Mlx, Leaf::B),
        "m" => (head, Family::Mlx, Leaf::M),
        "A" => (head, Family::MlxVlmLegacy, Leaf::A),
        "B" => (head, Family::MlxVlmLegacy, Leaf::B),
        _ => {
            // List-valued leaves: `<path>.lora_a.<i>`.
            if name.len() == last.len() || !last.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let i: u32 = last.parse().ok()?;
            let (path, inner) = split_last(head);
            let leaf = match inner {
                "lora_a" => Leaf::A,
                "lora_b" => Leaf::B,
                _ => return None,
            };
            return Some((path, Family::MlxFused, leaf, Slot::Fused(i)));
        }
    };
    Some((path, family, leaf, Slot::Single))
}

/// `(everything before the last dot, the last component)`; `("", s)` without a dot.
fn split_last(s: &str) -> (&str, &str) {
    // Last components are short: a plain backwards loop beats a vector search here.
    match s.bytes().rposition(|b| b == b'.') {
        Some(i) => (&s[..i], &s[i + 1..]),
        None => ("", s),
    }
}

/// The suffix-by-suffix reading `classify` replaced, kept to check that they agree.
#[cfg(test)]
fn classify_by_suffix(name: &str) -> Option<(&str, Family, Leaf, Slot)> {
    const FIXED: &[(&str, Family, Leaf)] = &[
        ("lora_A.weight", Family::Peft, Leaf::A),
        ("lora_B.weight", Family::Peft, Leaf::B),
        ("lora_embedding_A", Family::PeftEmbedding, Leaf::A),
        ("lora_embedding_B", Family::PeftEmbedding, Leaf::B),
        ("lora_magnitude_vector.weight", Family::Peft, Leaf::M),
        ("lora_magnitude_vector", Family::Peft, Leaf::M),
        ("lora_a.weight", Family::MlxLayer, Leaf::A),
        ("lora_b.weight", Family::MlxLayer, Leaf::B),
        ("lora_a", Family::Mlx, Leaf::A),
        ("lora_b", Family::Mlx, Leaf::B),
        ("m", Family::Mlx, Leaf::M),
        ("A", Family::MlxVlmLegacy, Leaf::A),
        ("B", Family::MlxVlmLegacy, Leaf::B),
    ];
    for (leaf, family, role) in FIXED {
        if let Some(path) = split_suffix(name, leaf) {
            return Some((path, *family, *role, Slot::Single));
        }
    }
    // List-valued leaves: `<path>.lora_a.<i>`.
    let (head, last) = name.rsplit_once('.')?;
    let i: u32 = last
        .parse()
        .ok()
        .filter(|_| last.bytes().all(|b| b.is_ascii_digit()))?;
    for (leaf, role) in [("lora_a", Leaf::A), ("lora_b", Leaf::B)] {
        if let Some(path) = split_suffix(head, leaf) {
            return Some((path, Family::MlxFused, role, Slot::Fused(i)));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The dispatching `classify` reads every name as the suffix-by-suffix one does.
        #[test]
        fn classify_agrees_with_suffix_matching(
            parts in proptest::collection::vec(proptest::sample::select(vec![
                "lora_A", "lora_B", "lora_a", "lora_b", "weight", "m", "A", "B", "0", "12", "x",
                "lora_embedding_A", "lora_embedding_B", "lora_magnitude_vector", "experts", "",
                "q_proj", "4294967296", "07",
            ]), 0..5)
        ) {
            let name = parts.join(".");
            proptest::prop_assert_eq!(classify(&name), classify_by_suffix(&name), "{}", name);
        }
    }
}
