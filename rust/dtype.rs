//! The safetensors dtype table, as data (the format's enum is open-ended, so this is a table and
//! not a closed match).

use serde::Serialize;

/// One safetensors dtype: its exact, case-sensitive name and its size in bits per element.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Dtype(&'static str);

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
    pub const F32: Dtype = Dtype("F32");

    /// Look a dtype up by its exact name.
    pub fn from_name(name: &str) -> Option<Self> {
        // The common ones first, without scanning the table.
        match name {
            "F32" => return Some(Dtype(DTYPES[17].0)),
            "BF16" => return Some(Dtype(DTYPES[14].0)),
            "F16" => return Some(Dtype(DTYPES[13].0)),
            _ => {}
        }
        DTYPES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(n, _)| Dtype(n))
    }

    /// The dtype's name as safetensors writes it.
    pub fn name(self) -> &'static str {
        self.0
    }

    /// Bits per element.
    pub fn bits(self) -> u64 {
        DTYPES
            .iter()
            .find(|(n, _)| *n == self.0)
            .map_or(0, |(_, b)| *b)
    }
}

impl std::fmt::Display for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
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
    }

    #[test]
    fn names_are_case_sensitive() {
        assert!(Dtype::from_name("f32").is_none());
        assert!(Dtype::from_name("F128").is_none());
        assert!(Dtype::from_name("").is_none());
    }
}
