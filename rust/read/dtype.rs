//! The safetensors dtype table, as data (the format's enum is open-ended, so this is a table and
//! not a closed match).
//!
//! May use: nothing else of the crate.

use serde::Serialize;

/// One safetensors dtype: its exact, case-sensitive name and its size in bits per element (a
/// position in [`DTYPES`]: one byte in every tensor entry, and the size without a lookup).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Dtype(u8);

/// Every dtype the safetensors format defines, with its bits per element.
pub const DTYPES: &[(&str, u64)] = &[
    ("BOOL", 8),
    ("F4", 4),
    ("F6_E2M3", 6),
    ("F6_E3M2", 6),
    ("U8", 8),
    ("I8", 8),
    ("F8_E5M2", 8),
    ("F8_E4M3", 8),
    ("F8_E8M0", 8),
    ("F8_E4M3FNUZ", 8),
    ("F8_E5M2FNUZ", 8),
    ("I16", 16),
    ("U16", 16),
    ("F16", 16),
    ("BF16", 16),
    ("I32", 32),
    ("U32", 32),
    ("F32", 32),
    ("C64", 64),
    ("F64", 64),
    ("I64", 64),
    ("U64", 64),
];

impl Dtype {
    /// 32-bit float.
    pub const F32: Dtype = Dtype(17);

    /// Look a dtype up by its exact name.
    pub fn from_name(name: &str) -> Option<Self> {
        // The common ones first, without scanning the table.
        match name {
            "F32" => return Some(Self::F32),
            "BF16" => return Some(Dtype(14)),
            "F16" => return Some(Dtype(13)),
            _ => {}
        }
        DTYPES
            .iter()
            .position(|(n, _)| *n == name)
            .and_then(|i| u8::try_from(i).ok())
            .map(Dtype)
    }

    /// The dtype's name as safetensors writes it.
    pub fn name(self) -> &'static str {
        DTYPES[usize::from(self.0)].0
    }

    /// Bits per element.
    pub fn bits(self) -> u64 {
        DTYPES[usize::from(self.0)].1
    }
}

/// By name, as safetensors sorts them.
impl Ord for Dtype {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.name().cmp(other.name())
    }
}

impl PartialOrd for Dtype {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl std::fmt::Debug for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Dtype({:?})", self.name())
    }
}

impl std::fmt::Display for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for Dtype {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// The true width of a quantized weight's last axis: MLX packs `32 / bits` values into each
/// 32-bit word (`None` when `bits` is 0).
pub fn unpacked_width(packed: u64, bits: u64) -> Option<u64> {
    (bits > 0).then(|| packed.saturating_mul(32) / bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_dtype_round_trips_and_has_a_size() {
        for (name, bits) in DTYPES {
            let d = Dtype::from_name(name).expect("known");
            assert_eq!(d.name(), *name);
            assert_eq!(d.bits(), *bits);
        }
        assert_eq!(DTYPES.len(), 22);
        assert_eq!(Dtype::F32.name(), "F32");
        assert_eq!(Dtype::from_name("BF16").unwrap().name(), "BF16");
        assert_eq!(Dtype::from_name("F16").unwrap().name(), "F16");
        assert!(Dtype::from_name("BF16") < Dtype::from_name("F16"));
    }

    #[test]
    fn names_are_case_sensitive() {
        assert!(Dtype::from_name("f32").is_none());
        assert!(Dtype::from_name("F128").is_none());
        assert!(Dtype::from_name("").is_none());
    }
}
