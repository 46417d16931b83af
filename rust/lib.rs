//! adapterscan core: header-only scanning and validation of LoRA/DoRA adapters in safetensors.
//!
//! - [`header`] reads the 8-byte length and the JSON header of one file and validates it by the
//!   safetensors rules, never touching tensor bytes.
//! - [`index`] reads `*.safetensors.index.json` and keeps every file it names inside the folder.
//! - [`config`] reads `adapter_config.json` in the schemas real producers write.
//! - [`lora`] groups tensors into modules and infers kind, layout, rank and dims.
//! - [`scan`] puts it together, in parallel over shards, and checks config against tensors.
//!
//! The Python extension (`adapterscan._core`) is behind the `python` feature.

pub mod base;
pub mod check;
pub mod config;
pub mod dtype;
pub mod error;
pub mod fused;
#[doc(hidden)]
pub mod fuzzing;
pub mod header;
mod header_fast;
pub mod index;
pub mod lora;
mod par;
pub mod problem;
pub mod scan;
pub mod verify;

#[cfg(feature = "python")]
mod python;

pub use error::{Result, ScanError};
pub use scan::{scan, Scan, ScanOptions};
