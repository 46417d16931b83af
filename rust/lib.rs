//! adapterscan core: header-only scanning and validation of LoRA/DoRA adapters in safetensors.
//!
//! Data flows one way, and each module may use only the ones listed before it:
//!
//! - [`error`], [`problem`], [`par`]: the error type, findings and their codes, parallel work.
//! - [`naming`]: pure naming rules of every producer (factor leaves, layouts, experts, layer
//!   paths, natural order, file names). No I/O.
//! - [`read`]: every file read: the opener, safetensors headers (and their fast path), shard
//!   indexes, folder resolution, read plans. Never a tensor byte.
//! - [`config`]: `adapter_config.json` in every producer's schema, with typed fields and the
//!   per-module rank, scale and dropout it gives (PEFT's first-match patterns included).
//! - [`infer`]: tensors grouped into modules, each module's kind, layout, rank and dims.
//! - [`rules`]: an adapter judged alone: format, fine-tune type, config against tensors, index.
//! - [`scan`]: the pipeline: files -> headers -> modules -> rules -> [`Scan`].
//! - [`base`]: what a base model folder offers (its adaptable modules and true dims).
//! - [`check`]: the diff of an adapter's tensors against the expected ones.
//! - [`report`]: the JSON contracts and grouped summaries.
//! - [`verify`]: the opt-in pass over tensor bytes.
//! - `python` (feature `python`): the bindings only.

pub mod error;
pub mod par;
pub mod problem;

pub mod naming;
pub mod read;

pub mod config;
pub mod infer;
pub mod rules;

pub mod scan;

pub mod base;
pub mod check;
pub mod report;
pub mod verify;

#[doc(hidden)]
pub mod fuzzing;
#[cfg(test)]
mod layering;

#[cfg(feature = "python")]
mod python;

pub use error::{Result, ScanError};
pub use scan::{scan, Scan, ScanOptions};
