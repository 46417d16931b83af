//! The adapter's naming convention.
//!
//! May use: nothing else of the crate.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// mlx-lm / mlx-vlm / Unsloth naming.
    Mlx,
    /// Hugging Face PEFT naming.
    Peft,
    /// Neither, or both.
    Unknown,
}

impl Format {
    /// Stable name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Mlx => "mlx",
            Self::Peft => "peft",
            Self::Unknown => "unknown",
        }
    }
}
